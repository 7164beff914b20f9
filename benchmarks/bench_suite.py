"""The CPU benchmark suite, on pytest-benchmark: every level side by side with the peers people use today.

- op level: ``region_attention`` (RGB-CAM cross-attention) at SD1.5's three latent sizes against the published
  math (``reference``), masked SDPA with a per-region loop, FlexAttention (compiled) and xformers when
  installed; ``token_restricted_softmax`` (attention-map pictures); ``shared_qk_attention`` (Q/K injection)
  against two SDPA calls;
- processor level: the 32 attention calls of one SD1.5 UNet forward of an ALE edit (batch 4, 3 objects),
  with the reference processors, ours, and stock ``AttnProcessor2_0`` (no ALE: the floor);
- end to end: one whole edit of the shipped example on a random SD-shaped pipeline, per attention backend.

Each benchmark's ``group`` is one comparison, so ``--benchmark-group-by=group`` prints one table per
comparison. ``make bench`` runs it and ``benchmarks/report.py`` turns the JSON into tables and plots::

    pytest benchmarks/bench_suite.py --benchmark-enable --benchmark-only --benchmark-json=cpu_suite.json
    pytest benchmarks/bench_suite.py --benchmark-enable --benchmark-only -k "op and 9216"    # one shape

Timings never fail a test here; the only assertions are that every op-level peer is as close to a float64
oracle as the tolerance policy of :mod:`ale_kernels.testing.tolerance` allows (a benchmark of a wrong answer
is worthless), and that a whole edit matches the reference backend's. Inputs and shapes come from
:mod:`ale_kernels.testing.problems`, like the tests'.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ale_kernels import shared_qk_attention, token_restricted_softmax
from ale_kernels.testing.problems import SD15_SHAPES, make_inputs, make_shared_qk_problem, prompt_token_owner
from benchmarks import bench_edit, bench_ops, bench_processors, harness

OBJECTS = 3
REGION_IMPLS = ["reference", "sdpa_region_loop", "flex_attention", "xformers", "torch", "cpp"]
# 9216 x 9216 materialised scores do not belong on a CPU benchmark.
SELF_SHAPES = [(length, head_dim) for length, head_dim in SD15_SHAPES if length < 9216]
ROUNDS = dict(rounds=5, warmup_rounds=1, iterations=1)
MASK_VALUE = -100.0


def _pedantic(benchmark, fn, rounds: dict = ROUNDS):
    return benchmark.pedantic(fn, **rounds)


def assert_within_policy(got, reference, oracle, dtype: torch.dtype) -> None:
    """``got`` is no further from the float64 ``oracle`` than the tolerance policy allows, given how far the
    same-precision ``reference`` is from it."""
    limit = harness.allowed(harness.output_error(reference, oracle), dtype, oracle)
    error = harness.output_error(got, oracle)
    assert error <= limit, f"max abs error {error:.2e} against the float64 oracle, {limit:.2e} allowed"


@pytest.fixture(scope="module", params=SD15_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def op_inputs(request):
    length, head_dim = request.param
    return make_inputs(length, head_dim, OBJECTS + 1)


@pytest.fixture(scope="module")
def region_outputs(op_inputs):
    """The same-precision reference's output and the float64 oracle's, once per shape."""
    reference = bench_ops.IMPLEMENTATIONS["reference"](op_inputs, MASK_VALUE)()
    return reference, bench_ops.oracle(op_inputs, MASK_VALUE)


@pytest.mark.parametrize("impl", REGION_IMPLS)
def test_op_region_attention(benchmark, op_inputs, region_outputs, impl):
    reason = bench_ops.skipped_reason(impl, torch.device("cpu"))
    if reason:
        pytest.skip(reason)
    runner = bench_ops.IMPLEMENTATIONS[impl](op_inputs, MASK_VALUE)
    length, head_dim = op_inputs.q.shape[2], op_inputs.q.shape[3]
    benchmark.group = f"op region_attention L={length} D={head_dim}"
    benchmark.extra_info.update(op="region_attention", L=length, D=head_dim, impl=impl)
    got = _pedantic(benchmark, runner)
    assert_within_policy(got, *region_outputs, op_inputs.q.dtype)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_op_token_softmax(benchmark, op_inputs, backend):
    owner = prompt_token_owner(OBJECTS)
    tokens = torch.nonzero(owner >= 0)[:, 0]  # the objects' phrase tokens
    length, head_dim = op_inputs.q.shape[2], op_inputs.q.shape[3]
    benchmark.group = f"op token_restricted_softmax L={length} D={head_dim}"
    benchmark.extra_info.update(op="token_restricted_softmax", L=length, D=head_dim, impl=backend)
    kwargs = dict(q_cover=op_inputs.q_cover, token_owner=op_inputs.token_owner, tokens=tokens, mask_value=MASK_VALUE)
    got = _pedantic(benchmark, lambda: token_restricted_softmax(op_inputs.q, op_inputs.k, backend=backend, **kwargs))
    reference = token_restricted_softmax(op_inputs.q, op_inputs.k, backend="reference", **kwargs)
    q64, k64 = op_inputs.q.double(), op_inputs.k.double()
    oracle = token_restricted_softmax(q64, k64, backend="reference", **kwargs)
    assert_within_policy(got, reference, oracle, op_inputs.q.dtype)


@pytest.mark.parametrize("impl", ["reference", "sdpa_x2", "torch"])
@pytest.mark.parametrize("shape", SELF_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_op_shared_qk(benchmark, shape, impl):
    length, head_dim = shape
    q, k, (v_src, v_tgt) = make_shared_qk_problem(1, 8, length, length, head_dim, seed=0)
    calls = {
        "reference": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="reference"),
        "sdpa_x2": lambda: [F.scaled_dot_product_attention(q, k, v) for v in (v_src, v_tgt)],
        "torch": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="torch"),
    }
    benchmark.group = f"op shared_qk_attention L={length} D={head_dim}"
    benchmark.extra_info.update(op="shared_qk_attention", L=length, D=head_dim, impl=impl)
    got = _pedantic(benchmark, calls[impl])
    oracle = shared_qk_attention(q.double(), k.double(), [v_src.double(), v_tgt.double()], backend="reference")
    assert_within_policy(got, calls["reference"](), oracle, q.dtype)


@pytest.mark.parametrize("variant", bench_processors.VARIANTS)
@pytest.mark.parametrize("image_size", [256, 384])
def test_processors_unet_forward(benchmark, variant, image_size):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from ale_kernels.diffusers import RegionalAttnProcessor

    layers, modules, hidden, text = bench_processors._build(image_size, torch.float32, torch.device("cpu"))
    kwargs = {}
    if variant == "sdpa":
        processor = AttnProcessor2_0()
    else:
        processor = RegionalAttnProcessor("reference" if variant == "reference" else "auto")
        _, ale = bench_processors._ale_kwargs(image_size // 8, torch.device("cpu"))
        kwargs = {"self": {"qk_injection": ale["qk_injection"]}, "cross": {"regions": ale["regions"]}}
    benchmark.group = f"processors one UNet forward {image_size}px"
    benchmark.extra_info.update(level="processors", image_size=image_size, impl=variant)
    with torch.no_grad():
        _pedantic(benchmark, lambda: bench_processors._one_forward(processor, layers, modules, hidden, text, kwargs))


@pytest.fixture(scope="module")
def edit_pipeline():
    pipe = bench_edit.load("sd-shaped", "cpu", torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_end_to_end_edit(benchmark, edit_pipeline, backend):
    image, edits, masks = bench_edit.example()
    args = dict(image=image, edits=edits, masks=masks, longest_side=256, seed=0, output_type="pt")
    benchmark.group = "end to end edit 256px 4 steps"
    benchmark.extra_info.update(level="edit", image_size=256, impl=backend)
    run = lambda: edit_pipeline(num_inference_steps=4, attention_backend=backend, **args).images  # noqa: E731
    got = _pedantic(benchmark, run, dict(rounds=2, warmup_rounds=1, iterations=1))
    expected = edit_pipeline(num_inference_steps=4, attention_backend="reference", **args).images
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)
