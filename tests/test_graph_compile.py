"""``torch.compile(fullgraph=True)`` goes through the ops: they are registered custom ops with fake kernels."""

from __future__ import annotations

import pytest
import torch

from ale_kernels import RoutingPlan, region_attention, token_restricted_softmax
from tests.problems import make_problem


class RegionCrossAttention(torch.nn.Module):
    """A diffusers-like block: projections, the op on per-head views, the output projection."""

    def __init__(self, dim: int = 32, heads: int = 2, mask_value: float = -100.0):
        super().__init__()
        self.heads, self.mask_value = heads, mask_value
        self.to_q = torch.nn.Linear(dim, dim, bias=False)
        self.to_out = torch.nn.Linear(dim, dim)

    def forward(self, hidden, keys, values, q_region, q_cover, token_owner):
        batch, length, dim = hidden.shape
        q = self.to_q(hidden).view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
        out = region_attention(
            q, keys, values, q_region, q_cover=q_cover, token_owner=token_owner, mask_value=self.mask_value,
            backend="torch",
        )  # fmt: skip
        maps = token_restricted_softmax(q, keys, q_cover=q_cover, token_owner=token_owner, tokens=[1, 2])
        return self.to_out(out.transpose(1, 2).reshape(batch, length, dim)), maps


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_fullgraph_compile_matches_eager(compile_backend):
    import copy

    from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast

    torch.manual_seed(0)
    problem = make_problem(batch=2, heads=2, length=36, head_dim=16, tokens=9, regions=3)
    module = RegionCrossAttention().eval()
    hidden = torch.randn(2, 36, 32)
    args = (hidden, problem.k, problem.v, problem.q_region, problem.q_cover, problem.token_owner)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=compile_backend)
    with torch.no_grad():
        expected_out, expected_maps = module(*args)
        out, maps = compiled(*args)
    with torch.no_grad():
        oracle_out, oracle_maps = copy.deepcopy(module).double()(*upcast(args))
    assert_close_to_oracle(out, expected_out, oracle_out, name=f"{compile_backend} output")
    assert_close_to_oracle(maps, expected_maps, oracle_maps, name=f"{compile_backend} maps")


class PlannedCrossAttention(RegionCrossAttention):
    """The same block with the routing given as a plan, as the diffusers processors pass it."""

    def forward(self, hidden, keys, values, plan):
        batch, length, dim = hidden.shape
        q = self.to_q(hidden).view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
        out = region_attention(q, keys, values, plan, mask_value=self.mask_value, backend="torch")
        maps = token_restricted_softmax(q, keys, plan=plan, tokens=[1, 2])
        return self.to_out(out.transpose(1, 2).reshape(batch, length, dim)), maps


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_fullgraph_compile_with_a_plan_matches_raw_maps(compile_backend):
    """The plan's tensors (its host-side group table included) go to the custom ops: no graph break, and the
    compiled outputs equal the eager raw-map ones."""
    import copy

    from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast

    torch.manual_seed(0)
    problem = make_problem(batch=2, heads=2, length=36, head_dim=16, tokens=9, regions=3, shared_routing=True)
    plan = RoutingPlan.build(
        problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=problem.v.shape[1]
    )
    hidden = torch.randn(2, 36, 32)
    raw_module = RegionCrossAttention().eval()
    module = PlannedCrossAttention().eval()
    module.load_state_dict(raw_module.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=compile_backend)
    raw_args = (hidden, problem.k, problem.v, problem.q_region, problem.q_cover, problem.token_owner)
    with torch.no_grad():
        expected_out, expected_maps = raw_module(*raw_args)
        out, maps = compiled(hidden, problem.k, problem.v, plan)
        oracle_out, oracle_maps = copy.deepcopy(raw_module).double()(*upcast(raw_args))
    assert_close_to_oracle(out, expected_out, oracle_out, name=f"{compile_backend} output with a plan")
    assert_close_to_oracle(maps, expected_maps, oracle_maps, name=f"{compile_backend} maps with a plan")


@pytest.mark.usefixtures("one_torch_thread")
def test_compiled_edit_has_no_graph_break_and_reuses_its_graphs_across_steps_and_edits():
    """``compile_unet`` on a pipeline: the UNet with the regional processors installed traces with
    ``fullgraph=True`` (a graph break would raise), once with Q/K injection and once without, and the
    next edit of the same size, with other masks (other plan sizes), other prompts and another seed,
    compiles nothing new. The compiled edits' images equal the eager ones."""
    import numpy as np

    from ale_pipeline.compiled import compile_unet, uncompile_unet
    from tests.test_pipeline import EDITS, image, masks
    from tests.tiny_models import tiny_ale_pipeline

    pipe = tiny_ale_pipeline()
    other_masks = [np.roll(m, (3, -7), axis=(0, 1)) for m in masks(2)[::-1]]
    edits = [(EDITS[:2], masks(2), 0), (EDITS[2:4], other_masks, 1)]

    def run():
        return [
            pipe(image(), e, m, longest_side=None, num_inference_steps=4, output_type="pt", seed=seed,
                 attention_backend="torch").images
            for e, m, seed in edits
        ]  # fmt: skip

    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager = run()
    torch._dynamo.reset()
    compile_unet(pipe, backend=counting_backend)
    try:
        compiled = run()
    finally:
        uncompile_unet(pipe)
        torch._dynamo.reset()
    assert len(graphs) == 2, f"expected one graph with Q/K injection and one without, got {len(graphs)}"
    ops_in = [{str(n.target) for n in gm.graph.nodes if n.op == "call_function"} for gm in graphs]
    assert all("ale_kernels.region_attention.default" in targets for targets in ops_in)
    assert sum("ale_kernels.shared_qk_attention.default" in targets for targets in ops_in) == 1
    for got, expected in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
