"""A compiled UNet step, reused across the steps and the edits of one size: ``torch.compile`` in place.

The recipe (docs/design.md, "Compiling and capturing the edit step")::

    pipe = ALEEditPipeline.from_pretrained(...).to("cuda", torch.float16)
    compile_unet(pipe, mode="max-autotune")      # or "reduce-overhead": CUDA graphs; None: Inductor alone
    pipe(image, edits, masks)                    # first edit of a size: compiles (and autotunes) once
    pipe(image2, edits2, masks2)                 # same size and object count: no recompilation

What makes the step compilable without a graph break and reusable:

- the processors read no tensor value on the host: every routing plan is built before the loop
  (``RegionSpec.prepare``), the ops take the plans' tensors, and the Triton backend is a ``triton_op``
  whose kernels Inductor sees (``ale_kernels.fused_ops``);
- the Q/K-injection switch is a Python value (the pairs, or ``None``), so the UNet has two graphs, one with
  injection and one without, each compiled once and chosen per step by Dynamo's guards;
- the timestep is passed to the compiled graphs as a 0-d tensor (made once per value and device and kept):
  as a Python int it would be specialised into the graph, one recompilation per step.

The UNet stays the pipeline's module (its config, device and processors as before); only its call runs
the compiled graphs. :func:`uncompile_unet` undoes it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["compile_unet", "uncompile_unet"]


class _TimestepAsTensor:
    """The UNet's compiled call, given its timestep as a 0-d tensor on the sample's device.

    The tensor has the dtype diffusers would make of the number (int64 for an int, float64 for a float), so
    the compiled step computes what the eager one does.
    """

    def __init__(self, compiled: Callable):
        self.compiled = compiled
        self._timesteps: dict[tuple, torch.Tensor] = {}

    def timestep(self, value: object, device: torch.device) -> object:
        if isinstance(value, torch.Tensor) or isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        key = (type(value), value, str(device))
        cached = self._timesteps.get(key)
        if cached is None:
            dtype = torch.int64 if isinstance(value, int) else torch.float64
            cached = self._timesteps[key] = torch.tensor(value, dtype=dtype, device=device)
        return cached

    def __call__(self, sample: torch.Tensor, timestep: object, *args, **kwargs):
        return self.compiled(sample, self.timestep(timestep, sample.device), *args, **kwargs)


def compile_unet(
    pipe_or_unet,
    *,
    mode: str | None = None,
    backend: str | Callable = "inductor",
    fullgraph: bool = True,
    dynamic: bool | None = False,
    options: dict | None = None,
):
    """Compile a pipeline's UNet (or a UNet) in place with ``torch.compile``; returns the UNet.

    Args:
        pipe_or_unet: an ``ALEEditPipeline`` (or any pipeline with ``.unet``) or a ``UNet2DConditionModel``.
        mode: ``torch.compile``'s mode: ``None``, ``"reduce-overhead"`` (CUDA graphs: the whole step replayed
            with one launch), ``"max-autotune"`` (autotuned GEMMs and kernels, with CUDA graphs) or
            ``"max-autotune-no-cudagraphs"``.
        backend: ``torch.compile``'s backend (``"inductor"``; tests pass a counting one).
        fullgraph: fail on a graph break instead of silently splitting the step (the default: the step has
            none, and a break would mean host syncs and lost capture).
        dynamic: ``False`` compiles one graph per image size (the fastest, and what CUDA graphs need);
            ``None`` lets Dynamo make sizes symbolic after a second size.
        options: Inductor options (``torch.compile(options=...)``).

    Every later ``unet(sample, t, ...)`` runs the compiled graphs: Dynamo compiles on the first call of each
    new shape and injection state and reuses the graphs for later steps and edits with the same shapes.
    """
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"pipe_or_unet must be a pipeline with a .unet or a torch.nn.Module, got {type(unet).__name__}")
    kwargs = {"backend": backend, "fullgraph": fullgraph, "dynamic": dynamic}
    if mode is not None:
        kwargs["mode"] = mode
    if options is not None:
        kwargs["options"] = options
    # nn.Module.compile()'s own slot: the module's __call__ runs _compiled_call_impl when it is set, so the
    # pipeline, the processors' install and the loop keep using the module itself.
    unet._compiled_call_impl = _TimestepAsTensor(torch.compile(unet._call_impl, **kwargs))
    return unet


def uncompile_unet(pipe_or_unet) -> None:
    """Make the UNet run eagerly again (the compiled graphs are dropped with it)."""
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    unet._compiled_call_impl = None
