"""The compiled and captured edit step on a CUDA GPU (run by ``benchmarks/gpu_check.sh``).

- the triton ops (``ale_kernels.fused_ops``): opcheck on CUDA tensors, and Inductor sees their kernels;
- a UNet with the regional processors compiled with ``fullgraph=True`` in Inductor's default mode,
  ``reduce-overhead`` (CUDA graphs) and ``max-autotune``: two graphs (Q/K injection on and off), outputs
  against the float64 oracle;
- the torch backend's one-call path on CUDA against the oracle;
- an edit's UNet calls under ``torch.cuda.set_sync_debug_mode("error")``: no host sync inside a step.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ale_kernels import RoutingPlan, fused_ops, region_attention, torch_impl
from ale_kernels.diffusers import install_regional_processors
from ale_pipeline.compiled import _TimestepAsTensor, compile_unet, uncompile_unet
from tests.cuda.test_cuda_kernels import CUDA, no_tf32, on_cuda  # noqa: F401 (no_tf32: an autouse fixture)
from tests.problems import assert_region_attention_matches, make_problem

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("the CUDA checks need a GPU (benchmarks/gpu_check.sh runs them)", allow_module_level=True)


def _spec_on_cuda(spec):
    tensors = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return dataclasses.replace(spec, **{name: t.to(CUDA) for name, t in tensors.items() if isinstance(t, torch.Tensor)})


# --- the triton ops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_fused_region_attention_passes_opcheck_on_cuda(dtype):
    from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast

    problem = on_cuda(make_problem(batch=2, heads=8, length=300, head_dim=40, tokens=77, regions=3, dtype=dtype))
    plan = RoutingPlan.build(problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=3)
    op = fused_ops.register()["region_attention"]
    args = (problem.q, problem.k, problem.v, plan.q_region, plan.q_cover, plan.token_owner, plan.row_order, 0.158)
    torch.library.opcheck(op, (*args, -100.0))
    got = op(*args, -100.0)
    expected = region_attention(
        problem.q, problem.k, problem.v, plan, scale=0.158, mask_value=-100.0, backend="reference"
    )
    oracle = region_attention(
        *upcast((problem.q, problem.k, problem.v)), plan, scale=0.158, mask_value=-100.0, backend="reference"
    )
    assert_close_to_oracle(got, expected, oracle, dtype=dtype, name="fused region_attention")


def test_inductor_sees_the_triton_kernels():
    """A compiled call on the Triton backend with a plan is lowered with the kernel in Inductor's code (a
    user-defined Triton kernel), not an opaque op."""
    from torch._inductor.utils import run_and_get_code

    from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast

    problem = on_cuda(
        make_problem(batch=1, heads=8, length=256, head_dim=40, tokens=77, regions=3, dtype=torch.float16)
    )
    plan = RoutingPlan.build(problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=3)

    def step(q, k, v):
        backend = "triton" if q.dtype != torch.float64 else "reference"  # float64: the oracle
        return region_attention(q * 1.0, k, v, plan, mask_value=-100.0, backend=backend) + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    got, code = run_and_get_code(compiled, problem.q, problem.k, problem.v)
    assert any("_region_attention_fwd" in c for c in code), "the Triton kernel is not in Inductor's code"
    expected = step(problem.q, problem.k, problem.v)  # eager: the kernel launched directly
    oracle = step(*upcast((problem.q, problem.k, problem.v)))
    assert_close_to_oracle(got, expected, oracle, dtype=torch.float16, name="compiled region_attention")


# --- compiled UNets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [None, "reduce-overhead", "max-autotune"])
def test_compiled_unet_with_processors_matches_the_oracle(mode):
    from tests.test_processors import ale_attention_kwargs, ale_inputs, assert_matches_oracle, run
    from tests.tiny_models import tiny_sd15_unet

    unet = tiny_sd15_unet().to(CUDA)
    spec, sample, text = ale_inputs(2, (16, 16), unet.config.cross_attention_dim)
    spec = _spec_on_cuda(spec)
    spec.prepare((16, 16), CUDA)
    sample, text = sample.to(CUDA), text.to(CUDA)
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    outputs = {}
    with install_regional_processors(unet, backend="triton"), torch.no_grad():
        compile_unet(unet, mode=mode)
        try:
            # Each state's last call runs at t = 500, where the oracle runs (tests.test_processors.run).
            for inject, t in [(True, 900), (True, 700), (False, 800), (False, 500), (True, 500)]:
                kwargs = ale_attention_kwargs(spec, inject_qk=inject)
                outputs[inject] = unet(sample, t, text, cross_attention_kwargs=kwargs).sample.clone()
        finally:
            uncompile_unet(unet)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 2
    for inject, got in outputs.items():
        kwargs = ale_attention_kwargs(spec, inject_qk=inject)
        expected = run(unet, "reference", sample, text, kwargs)
        assert_matches_oracle(got, expected, unet, sample, text, kwargs)


# --- the torch backend's CUDA path ------------------------------------------------------------------------


@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize("case", [dict(), dict(k_per_region=True, blind_rows=3), dict(regions=5, dtype=torch.float16)])
def test_torch_backend_runs_one_call_on_cuda(monkeypatch, case, mask_value):
    calls = []
    real = torch_impl.region_attention_one_call
    monkeypatch.setattr(torch_impl, "region_attention_one_call", lambda *a: calls.append(1) or real(*a))
    kwargs = dict(batch=2, heads=8, length=300, head_dim=40, tokens=77, regions=3)
    kwargs.update(case)
    assert_region_attention_matches(on_cuda(make_problem(**kwargs)), "torch", mask_value)
    assert calls == [1]


# --- no host sync inside a step ------------------------------------------------------------------------------


class _SyncChecked(_TimestepAsTensor):
    """The UNet's own call with its timestep as a ready tensor, run under ``set_sync_debug_mode("error")``:
    any host sync inside the UNet call raises. (Making the timestep tensor, once per value, is outside.)"""

    def __call__(self, sample, timestep, *args, **kwargs):
        timestep = self.timestep(timestep, sample.device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return self.compiled(sample, timestep, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_edit_unet_calls_do_not_sync(backend):
    """The torch backend's first edit, and the Triton backend's first edit after one warm-up edit (its kernels
    autotune on first launch, which synchronises by design), with every UNet call under sync-debug "error"."""
    from tests.test_pipeline import image, masks
    from tests.tiny_models import tiny_ale_pipeline

    pipe = tiny_ale_pipeline().to(CUDA, torch.float16)

    def edit():
        return pipe(
            image(), [("cup", "red cup"), ("saucer", "blue saucer")], masks(2), num_inference_steps=4,
            longest_side=128, output_type="pt", attention_backend=backend,
        ).images  # fmt: skip

    if backend == "triton":
        edit()
    pipe.unet._compiled_call_impl = _SyncChecked(pipe.unet._call_impl)
    try:
        checked = edit()  # raises on any host sync inside a UNet call
    finally:
        uncompile_unet(pipe)
    assert torch.isfinite(checked).all()
