"""The compiled Triton kernels on a CUDA GPU, against the reference, and the processors and pipeline on CUDA.

Run by ``benchmarks/gpu_check.sh`` on a GPU (``pytest tests/cuda``); ``make test`` runs on machines without one
and leaves this folder out. The CPU suite proves the same kernels under Triton's interpreter and compiles
every config for sm_80/sm_90; here the cubins really run:

- every autotune config of every kernel, at each SD head dim and dtype, launched with that config alone
  (autotuning would check only the winner);
- the op-level grid through the public ops (autotuned): ragged lengths, S = 77 and longer, rows that may see
  nothing, both mask kinds, keys per region, strided layouts, broadcast routing;
- model-level parity of the fast processors against the reference math, and whole edits on CUDA.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.autotune_cases import autotune_cases, check_autotune_config, to_device
from tests.problems import (
    Problem,
    assert_region_attention_matches,
    assert_shared_qk_matches,
    assert_token_softmax_matches,
    make_problem,
    make_shared_qk_problem,
)

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("the CUDA checks need a GPU (benchmarks/gpu_check.sh runs them)", allow_module_level=True)


CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    """Full fp32 convolutions and matmuls. cuDNN convolutions default to TF32 (10-bit mantissa): two runs whose
    attention differs by 1e-6 then round some conv inputs to neighbouring TF32 values, a 1e-3 relative
    difference that no parity tolerance should have to absorb."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


HEAD_DIMS = [40, 80, 160]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def on_cuda(problem: Problem) -> Problem:
    """The same problem with every tensor moved to the GPU, strides kept."""
    fields = {
        f.name: to_device(getattr(problem, f.name), CUDA) for f in dataclasses.fields(problem) if f.name != "extra"
    }
    return Problem(**fields, extra=problem.extra)


def shared_on_cuda(problem: tuple) -> tuple:
    q, k, vs = problem
    moved = on_cuda(Problem(q, k, vs[0], torch.zeros(1), None, None))
    return moved.q, moved.k, [on_cuda(Problem(q, k, v, torch.zeros(1), None, None)).v for v in vs]


# --- every config, launched alone (the test is tests/autotune_cases.py's) --------------------------------


@pytest.mark.parametrize("case", autotune_cases("cuda"))
def test_every_autotune_config(case):
    check_autotune_config("cuda", case)


# --- the public ops, autotuned ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [*HEAD_DIMS, 64])
@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
def test_region_attention_head_dims_dtypes_masks(dtype, head_dim, mask_value):
    problem = on_cuda(
        make_problem(batch=2, heads=4, length=1000, head_dim=head_dim, regions=4, dtype=dtype, layout="diffusers")
    )
    assert_region_attention_matches(problem, "triton", mask_value)


@pytest.mark.parametrize("length", [1, 17, 576, 2304, 9216])
@pytest.mark.parametrize("tokens", [1, 77, 154])
def test_region_attention_lengths_and_tokens(length, tokens):
    problem = on_cuda(
        make_problem(batch=1, heads=2, length=length, head_dim=40, tokens=tokens, regions=3, dtype=torch.float16)
    )
    assert_region_attention_matches(problem, "triton", -100.0)


@pytest.mark.parametrize("k_per_region", [False, True])
@pytest.mark.parametrize("blind_rows", [0, 7])
@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_region_attention_keys_per_region_and_blind_rows(k_per_region, blind_rows, mask_value, dtype):
    problem = on_cuda(
        make_problem(length=333, head_dim=80, regions=5, k_per_region=k_per_region, blind_rows=blind_rows, dtype=dtype)
    )
    assert_region_attention_matches(problem, "triton", mask_value)


@pytest.mark.parametrize("regions", [1, 2, 8, 32])
@pytest.mark.parametrize("restrict", [True, False])
def test_region_attention_region_counts(regions, restrict):
    problem = on_cuda(
        make_problem(batch=2, heads=2, length=257, head_dim=40, regions=regions, restrict=restrict and regions <= 32)
    )
    assert_region_attention_matches(problem, "triton", float("-inf"))


@pytest.mark.parametrize("layout", ["contiguous", "diffusers", "sliced"])
@pytest.mark.parametrize("shared_routing", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_region_attention_layouts_and_broadcast_routing(layout, shared_routing, dtype):
    problem = on_cuda(make_problem(length=299, head_dim=40, dtype=dtype, layout=layout, shared_routing=shared_routing))
    assert_region_attention_matches(problem, "triton", -100.0)


@pytest.mark.parametrize("reduce_heads", [True, False])
@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize("tokens", [None, [0], [5, 2, 5, 76]])
@pytest.mark.parametrize("dtype", DTYPES)
def test_token_softmax(reduce_heads, mask_value, tokens, dtype):
    problem = on_cuda(
        make_problem(batch=2, heads=4, length=777, head_dim=40, blind_rows=3, dtype=dtype, layout="diffusers")
    )
    tokens = None if tokens is None else torch.tensor(tokens, device=CUDA)
    assert_token_softmax_matches(problem, "triton", reduce_heads=reduce_heads, mask_value=mask_value, tokens=tokens)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_token_softmax_many_tokens(head_dim):
    problem = on_cuda(make_problem(batch=1, heads=2, length=300, head_dim=head_dim, tokens=154, dtype=torch.float16))
    tokens = torch.arange(153, -1, -1, device=CUDA)
    assert_token_softmax_matches(problem, "triton", tokens=tokens, reduce_heads=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("streams", [1, 2, 3])
def test_shared_qk_head_dims_dtypes_streams(dtype, head_dim, streams):
    problem = shared_on_cuda(
        make_shared_qk_problem(
            batch=2,
            heads=2,
            length=1024,
            n_keys=1024,
            head_dim=head_dim,
            streams=streams,
            dtype=dtype,
            layout="diffusers",
        )
    )
    assert_shared_qk_matches(problem, "triton")


@pytest.mark.parametrize("length, n_keys", [(1, 1), (1, 77), (77, 1), (4096, 4096), (9216, 9216), (4097, 333)])
def test_shared_qk_lengths(length, n_keys):
    problem = shared_on_cuda(
        make_shared_qk_problem(batch=1, heads=2, length=length, n_keys=n_keys, head_dim=40, dtype=torch.float16)
    )
    assert_shared_qk_matches(problem, "triton")


def test_shared_qk_large_scores_stay_finite():
    q, k, vs = shared_on_cuda(make_shared_qk_problem(batch=1, heads=1, length=200, n_keys=500, head_dim=40))
    assert_shared_qk_matches((q * 30, k * 30, vs), "triton")


# --- processors and the pipeline on CUDA ------------------------------------------------------------------


@pytest.mark.parametrize("objects", [1, 3])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_processors_match_reference_on_cuda(objects, backend):
    from tests.test_processors import ale_attention_kwargs, ale_inputs, assert_matches_oracle, run
    from tests.tiny_models import tiny_sd15_unet

    unet = tiny_sd15_unet().to(CUDA)
    spec, sample, text = ale_inputs(objects, (16, 16), unet.config.cross_attention_dim)
    spec = dataclasses.replace(
        spec,
        **{
            f.name: getattr(spec, f.name).to(CUDA)
            for f in dataclasses.fields(spec)
            if isinstance(getattr(spec, f.name), torch.Tensor)
        },
    )
    kwargs = ale_attention_kwargs(spec, inject_qk=True)
    sample, text = sample.to(CUDA), text.to(CUDA)
    expected = run(unet, "reference", sample, text, kwargs)
    got = run(unet, backend, sample, text, kwargs)
    assert_matches_oracle(got, expected, unet, sample, text, kwargs)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pipeline_backends_agree_on_cuda(dtype, family):
    from ale_kernels.testing.tolerance import assert_within_perturbation, rounding_perturbation
    from tests.test_pipeline import image, masks
    from tests.tiny_models import tiny_ale_pipeline, tiny_ale_xl_pipeline

    # SDXL: two text encoders, text-time conditioning, head dim 64 and an fp16 VAE that upcasts to decode.
    pipe = (tiny_ale_xl_pipeline if family == "sdxl" else tiny_ale_pipeline)().to(CUDA, dtype)

    def edit(backend: str):
        return pipe(
            image(),
            [("cup", "red cup"), ("saucer", "blue saucer")],
            masks(2),
            num_inference_steps=3,
            longest_side=128,
            output_type="pt",
            attention_backend=backend,
            return_attention_maps=True,
        )

    outputs = {}
    for backend in ("reference", "torch", "triton"):
        outputs[backend] = edit(backend)
        assert torch.isfinite(outputs[backend].images).all()

    # Images after 3 steps and a VAE decode: small attention differences grow (fp16 most); a wrong routing
    # moves pixels by tenths. The pipeline draws its noise in its own dtype, so no float64 run is its oracle:
    # the yardstick is how far one-ulp changes of every weight move the reference's images and maps.
    def both(result):
        return torch.cat([result.images.flatten(), result.attention_maps.flatten()])

    noise = rounding_perturbation(lambda: both(edit("reference")), [pipe.unet, pipe.vae])
    for backend in ("torch", "triton"):
        got, expected = outputs[backend], outputs["reference"]
        assert_within_perturbation(got.images, expected.images, noise, name=f"{backend} images")
        assert_within_perturbation(got.attention_maps, expected.attention_maps, noise, name=f"{backend} maps")
