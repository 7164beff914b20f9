"""Random problems for the op tests: shapes, covers, owners and layouts the ops must all handle."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Problem:
    """One call's inputs. ``kwargs()`` gives the keyword arguments of ``region_attention``."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_region: torch.Tensor
    q_cover: torch.Tensor | None
    token_owner: torch.Tensor | None
    extra: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        return dict(q_cover=self.q_cover, token_owner=self.token_owner, **self.extra)


def diffusers_layout(batch: int, heads: int, length: int, head_dim: int, dtype, generator) -> torch.Tensor:
    """``(B, H, L, D)`` as diffusers makes it: a ``(B, L, H*D)`` projection viewed per head (not contiguous)."""
    flat = torch.randn(batch, length, heads * head_dim, generator=generator).to(dtype)
    return flat.view(batch, length, heads, head_dim).transpose(1, 2)


def make_problem(
    batch: int = 2,
    heads: int = 2,
    length: int = 37,
    head_dim: int = 40,
    tokens: int = 77,
    regions: int = 3,
    *,
    dtype: torch.dtype = torch.float32,
    k_per_region: bool = False,
    restrict: bool = True,
    overlap: bool = True,
    blind_rows: int = 0,
    shared_routing: bool = False,
    layout: str = "contiguous",
    seed: int = 0,
) -> Problem:
    """Build a random problem.

    Args:
        restrict: give tokens owners (else ``token_owner=None``).
        overlap: covers carry a second random object bit on about a third of the pixels.
        blind_rows: this many pixels per batch entry get an empty cover, so with owned-only tokens they may
            see nothing (``token_owner`` then owns every token so these rows are really blind).
        shared_routing: routing maps given as ``(L,)`` / ``(S,)`` and broadcast over the batch.
        layout: ``contiguous``, ``diffusers`` (``(B, L, H*D)`` views) or ``sliced`` (every other element of
            a larger tensor along the head dim).
    """
    g = torch.Generator().manual_seed(seed)
    objects = max(1, regions - 1)

    def floats(*shape: int) -> torch.Tensor:
        if layout == "sliced":
            wide = torch.randn(*shape[:-1], 2 * shape[-1], generator=g).to(dtype)
            return wide[..., ::2]
        return torch.randn(*shape, generator=g).to(dtype)

    if layout == "diffusers":
        q = diffusers_layout(batch, heads, length, head_dim, dtype, g)
    else:
        q = floats(batch, heads, length, head_dim)
    k_shape = (batch, regions, heads, tokens, head_dim) if k_per_region else (batch, heads, tokens, head_dim)
    k = floats(*k_shape)
    v = floats(batch, regions, heads, tokens, head_dim)

    routing_batch = 1 if shared_routing else batch
    region = torch.randint(0, regions, (routing_batch, length), generator=g)
    cover = torch.where(region < objects, 1 << region.clamp(max=objects - 1), 0).to(torch.int32)
    if overlap and objects > 1:
        extra = torch.randint(0, objects, (routing_batch, length), generator=g)
        chosen = torch.rand(routing_batch, length, generator=g) < 0.35
        cover = torch.where(chosen, cover | (1 << extra).to(torch.int32), cover)
    owner = None
    if restrict:
        owner = torch.randint(-1, objects, (routing_batch, tokens), generator=g)
        if blind_rows:
            owner = torch.randint(0, objects, (routing_batch, tokens), generator=g)
    if blind_rows:
        cover[:, : min(blind_rows, length)] = 0
    if shared_routing:
        region, cover = region[0], cover[0]
        owner = None if owner is None else owner[0]
    return Problem(q, k, v, region, cover if restrict else None, owner)


def make_shared_qk_problem(
    batch: int = 2,
    heads: int = 2,
    length: int = 37,
    n_keys: int = 53,
    head_dim: int = 40,
    *,
    streams: int = 2,
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Random ``(q, k, vs)`` for ``shared_qk_attention``: q ``(B, H, L, D)``, k and each v ``(B, H, Lk, D)``.

    ``layout`` as in :func:`make_problem`: ``contiguous``, ``diffusers`` or ``sliced``, for every tensor.
    """
    g = torch.Generator().manual_seed(seed)

    def floats(rows: int) -> torch.Tensor:
        if layout == "diffusers":
            return diffusers_layout(batch, heads, rows, head_dim, dtype, g)
        if layout == "sliced":
            return torch.randn(batch, heads, rows, 2 * head_dim, generator=g).to(dtype)[..., ::2]
        return torch.randn(batch, heads, rows, head_dim, generator=g).to(dtype)

    return floats(length), floats(n_keys), [floats(n_keys) for _ in range(streams)]


@dataclass
class FuzzCase:
    """One drawn case of :func:`fuzz_cases`: the problem, the mask value and the draws a test may reuse."""

    problem: Problem
    mask_value: float
    restrict: bool
    seed: int


def fuzz_cases(max_length: int):
    """A hypothesis strategy over the whole ``region_attention`` contract: batch, heads, ragged lengths up to
    ``max_length``, head dims, token counts, regions, keys per region, restriction, blind rows, broadcast
    routing, both mask kinds and a finite non-published one, and every layout."""
    from hypothesis import strategies as st

    @st.composite
    def cases(draw) -> FuzzCase:
        restrict = draw(st.booleans())
        seed = draw(st.integers(0, 2**16))
        problem = make_problem(
            draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, max_length)),
            draw(st.sampled_from([8, 16, 40, 80])), draw(st.integers(1, 80)), draw(st.integers(1, 7)),
            k_per_region=draw(st.booleans()), restrict=restrict,
            blind_rows=draw(st.integers(0, 5)) if restrict else 0, shared_routing=draw(st.booleans()),
            layout=draw(st.sampled_from(["contiguous", "diffusers", "sliced"])), seed=seed,
        )  # fmt: skip
        mask_value = draw(st.sampled_from([float("-inf"), -100.0, -1.5]))
        return FuzzCase(problem, mask_value, restrict, seed)

    return cases()


def _reference_and_oracle(op, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``op`` with the reference backend at the inputs' precision, and on the inputs upcast to float64."""
    from ale_kernels.testing.tolerance import upcast

    reference = op(*args, backend="reference", **kwargs)
    oracle = op(*upcast(args), backend="reference", **dict(zip(kwargs, upcast(kwargs.values()), strict=True)))
    return reference, oracle


def assert_region_attention_matches(problem: Problem, backend: str, mask_value: float = float("-inf"), **extra) -> None:
    """``region_attention`` with ``backend`` is as close to the float64 oracle as the policy allows."""
    from ale_kernels import region_attention
    from ale_kernels.testing.tolerance import assert_close_to_oracle

    args = (problem.q, problem.k, problem.v, problem.q_region)
    kwargs = dict(problem.kwargs(), mask_value=mask_value, **extra)
    expected, oracle = _reference_and_oracle(region_attention, args, kwargs)
    got = region_attention(*args, backend=backend, **kwargs)
    assert got.shape == expected.shape and got.dtype == problem.q.dtype
    assert not torch.isnan(got).any()
    assert_close_to_oracle(got, expected, oracle, dtype=problem.q.dtype, name=f"region_attention[{backend}]")


def assert_token_softmax_matches(problem: Problem, backend: str, **kwargs) -> None:
    """``token_restricted_softmax`` with ``backend`` is as close to the float64 oracle as the policy allows."""
    from ale_kernels import token_restricted_softmax
    from ale_kernels.testing.tolerance import assert_close_to_oracle

    k = problem.k[:, 0] if problem.k.dim() == 5 else problem.k
    common = dict(q_cover=problem.q_cover, token_owner=problem.token_owner, **kwargs)
    expected, oracle = _reference_and_oracle(token_restricted_softmax, (problem.q, k), common)
    got = token_restricted_softmax(problem.q, k, backend=backend, **common)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert not torch.isnan(got).any()
    name = f"token_restricted_softmax[{backend}]"
    assert_close_to_oracle(got, expected, oracle, dtype=problem.q.dtype, name=name)


def assert_shared_qk_matches(problem: tuple, backend: str, **kwargs) -> None:
    """``shared_qk_attention`` with ``backend`` is as close to the float64 oracle as the policy allows, stream
    by stream."""
    from ale_kernels import shared_qk_attention
    from ale_kernels.testing.tolerance import assert_close_to_oracle

    q, k, vs = problem
    expected, oracle = _reference_and_oracle(shared_qk_attention, (q, k, vs), kwargs)
    got = shared_qk_attention(q, k, vs, backend=backend, **kwargs)
    assert isinstance(got, list) and len(got) == len(vs)
    for stream, (out, ref, exact) in enumerate(zip(got, expected, oracle, strict=True)):
        assert out.shape == q.shape and out.dtype == q.dtype
        assert out.transpose(1, 2).is_contiguous()  # stored as (B, L, H, D)
        assert not torch.isnan(out).any()
        assert_close_to_oracle(out, ref, exact, dtype=q.dtype, name=f"shared_qk_attention[{backend}] stream {stream}")
