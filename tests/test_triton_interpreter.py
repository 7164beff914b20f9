"""The Triton kernels, run on CPU tensors by Triton's interpreter, against the reference.

Run with ``TRITON_INTERPRET=1`` in the environment before Python starts (``make test`` runs this module in
its own pytest process so). Shapes stay small: the interpreter executes every program in Python. Most tests
use one small-tile config; ``test_every_autotune_config`` launches each config of each kernel's autotune
space (fp32 and fp16 at D = 40/80/160), the test the compile and CUDA runners share (tests/autotune_cases.py).

bfloat16 is covered by the sm_80/sm_90 compile tests and on a GPU, not here: Triton's interpreter computes
``tl.dot`` on bfloat16 operands wrongly on CPU (a known interpreter gap; loads, stores and casts are right).
"""

from __future__ import annotations

import pytest
import torch

from ale_kernels._env import interpreting
from tests.autotune_cases import autotune_cases, check_autotune_config
from tests.problems import (
    assert_region_attention_matches,
    assert_shared_qk_matches,
    assert_token_softmax_matches,
    make_problem,
    make_shared_qk_problem,
)

pytestmark = pytest.mark.interpreter
if not interpreting():
    pytest.skip("Triton interpreter tests need TRITON_INTERPRET=1 (make test sets it)", allow_module_level=True)

# Small tiles so that S = 77 takes several key tiles (the online softmax rescales across them) and 40
# pixels take several query tiles with mixed regions.
SMALL_TILES = {"BLOCK_M": 16, "BLOCK_N": 16}


def _with_config(monkeypatch, config: dict) -> None:
    from ale_kernels.kernels import configs

    monkeypatch.setattr(configs, "INTERPRETER_CONFIG", config)
    from ale_kernels.kernels import region_attention, token_softmax

    monkeypatch.setattr(region_attention, "INTERPRETER_CONFIG", config)
    monkeypatch.setattr(token_softmax, "INTERPRETER_CONFIG", config)


@pytest.mark.parametrize("head_dim", [16, 40, 80, 160])
@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
def test_head_dims(head_dim, mask_value):
    problem = make_problem(batch=1, heads=2, length=40, head_dim=head_dim, tokens=77, regions=3)
    assert_region_attention_matches(problem, "triton", mask_value)


@pytest.mark.parametrize("tokens", [1, 16, 77, 154])
def test_token_counts_and_multi_tile_online_softmax(tokens, monkeypatch):
    _with_config(monkeypatch, SMALL_TILES)
    problem = make_problem(batch=1, heads=1, length=40, head_dim=16, tokens=tokens, regions=3)
    assert_region_attention_matches(problem, "triton", -100.0)


@pytest.mark.parametrize("k_per_region", [False, True])
@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize("blind_rows", [0, 5])
def test_regions_overlaps_and_blind_rows(k_per_region, mask_value, blind_rows, monkeypatch):
    _with_config(monkeypatch, SMALL_TILES)
    problem = make_problem(length=37, head_dim=40, regions=4, k_per_region=k_per_region, blind_rows=blind_rows)
    assert_region_attention_matches(problem, "triton", mask_value)


@pytest.mark.parametrize("regions", [1, 2, 8])
@pytest.mark.parametrize("restrict", [True, False])
def test_region_counts_and_no_restriction(regions, restrict):
    problem = make_problem(batch=2, heads=1, length=33, head_dim=16, regions=regions, restrict=restrict)
    assert_region_attention_matches(problem, "triton", float("-inf"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["diffusers", "sliced"])
@pytest.mark.parametrize("shared_routing", [False, True])
def test_dtypes_layouts_and_broadcast_routing(dtype, layout, shared_routing):
    problem = make_problem(length=29, head_dim=40, dtype=dtype, layout=layout, shared_routing=shared_routing)
    assert not problem.q.is_contiguous()
    assert_region_attention_matches(problem, "triton", -100.0)


@pytest.mark.parametrize("length", [1, 17])
def test_ragged_lengths(length):
    problem = make_problem(batch=1, heads=1, length=length, head_dim=16, regions=2)
    assert_region_attention_matches(problem, "triton", float("-inf"))


@pytest.mark.parametrize("reduce_heads", [True, False])
@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize("tokens", [None, [0], [5, 2, 5, 76]])
def test_token_softmax(reduce_heads, mask_value, tokens, monkeypatch):
    _with_config(monkeypatch, SMALL_TILES)
    problem = make_problem(batch=1, heads=2, length=21, head_dim=40, blind_rows=3)
    assert_token_softmax_matches(problem, "triton", reduce_heads=reduce_heads, mask_value=mask_value, tokens=tokens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_token_softmax_many_tokens_span_several_token_tiles(dtype):
    problem = make_problem(batch=1, heads=2, length=18, head_dim=16, tokens=154, dtype=dtype, layout="diffusers")
    assert_token_softmax_matches(problem, "triton", tokens=list(range(153, -1, -1)), reduce_heads=True)


@pytest.mark.parametrize("head_dim", [16, 40, 80, 160])
def test_shared_qk_head_dims(head_dim):
    problem = make_shared_qk_problem(batch=1, heads=2, length=21, n_keys=37, head_dim=head_dim, streams=2)
    assert_shared_qk_matches(problem, "triton")


@pytest.mark.parametrize("streams", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shared_qk_streams_and_dtypes_across_key_tiles(streams, dtype):
    # 16 x 16 tiles: 70 keys take five key tiles, so the online softmax rescales four times.
    problem = make_shared_qk_problem(length=33, n_keys=70, head_dim=40, streams=streams, dtype=dtype, seed=streams)
    assert_shared_qk_matches(problem, "triton")


@pytest.mark.parametrize("layout", ["diffusers", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shared_qk_layouts(layout, dtype):
    problem = make_shared_qk_problem(length=29, n_keys=45, head_dim=40, streams=3, dtype=dtype, layout=layout)
    assert not problem[0].is_contiguous()
    assert_shared_qk_matches(problem, "triton", scale=0.3)


@pytest.mark.parametrize("length, n_keys", [(1, 1), (1, 17), (17, 1), (64, 64), (65, 16)])
def test_shared_qk_ragged_lengths(length, n_keys):
    problem = make_shared_qk_problem(batch=2, heads=1, length=length, n_keys=n_keys, head_dim=16, streams=2)
    assert_shared_qk_matches(problem, "triton")


def test_shared_qk_large_scores_stay_finite():
    """Scores far past exp's range: the online softmax subtracts the running maximum before exp2."""
    q, k, vs = make_shared_qk_problem(batch=1, heads=1, length=20, n_keys=50, head_dim=16, streams=2)
    assert_shared_qk_matches((q * 30, k * 30, vs), "triton")


# --- every autotune config, each launched alone (the test is tests/autotune_cases.py's) -----------------


@pytest.mark.parametrize("case", autotune_cases("interpreter"))
def test_every_autotune_config(case):
    check_autotune_config("interpreter", case)
