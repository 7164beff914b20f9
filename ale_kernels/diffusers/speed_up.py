"""``speed_up(pipe)``: the fused attention ops dropped into diffusers pipelines that users already run.

Supported: ``LEditsPPPipelineStableDiffusion`` and ``LEditsPPPipelineStableDiffusionXL`` (and subclasses), for
``invert()`` and ``__call__`` (see :mod:`ale_kernels.diffusers.ledits`). Any other object is left as it is,
with one warning.
"""

from __future__ import annotations

import warnings

from .._checks import check_backend
from .install import ProcessorHandle
from .ledits import LeditsProcessorSwap, check_pipeline_module, stock_classes

#: The pipeline classes :func:`speed_up` knows, by name (``diffusers`` exports them under these names).
SUPPORTED_PIPELINES = ("LEditsPPPipelineStableDiffusion", "LEditsPPPipelineStableDiffusionXL")


class SpeedUpHandle(ProcessorHandle):
    """What :func:`speed_up` returns: ``remove()`` (or leaving the ``with`` block) takes the speed-up off.

    Every attention layer that holds one of the speed-up's processors gets back the very processor object the
    pipeline had put there (for a LEDITS++ pipeline: ``AttnProcessor`` or ``LEDITSCrossAttnProcessor`` on its
    store), so the pipeline is then exactly the stock one. ``active`` is ``False`` once removed, and for the
    no-op handle of a pipeline :func:`speed_up` does not know.
    """

    def __init__(self, model, swap: LeditsProcessorSwap | None):
        super().__init__(model, {} if swap is not None else None)
        self._swap = swap

    def remove(self) -> None:
        """Restore the stock processors (idempotent)."""
        if self._swap is not None:
            self._swap.restore()
            self._swap = None
        self._previous = None


def speed_up(pipe, backend: str = "auto") -> SpeedUpHandle:
    """Run a diffusers pipeline's attention on SDPA and the fused ops, with the same results.

    Args:
        pipe: a diffusers pipeline. Supported: ``LEditsPPPipelineStableDiffusion``,
            ``LEditsPPPipelineStableDiffusionXL``. Anything else is left untouched, with a one-line warning.
        backend: ``"auto"``, ``"torch"``, ``"triton"``, ``"cpp"`` or ``"reference"`` (materialised, as stock).

    Returns:
        a :class:`SpeedUpHandle`, also a context manager::

            with speed_up(pipe):
                pipe.invert(image, num_inversion_steps=50)
                edited = pipe(editing_prompt=["cherry blossom"]).images[0]

    Raises:
        ValueError: an unknown ``backend``.
        RuntimeError: a supported pipeline whose diffusers internals changed so that the speed-up could not give
            the same results; nothing is installed then.
    """
    check_backend(backend)
    if not _is_supported(pipe):
        warnings.warn(
            f"speed_up: {type(pipe).__name__} is not a pipeline it knows ({', '.join(SUPPORTED_PIPELINES)}); "
            "left as it is",
            stacklevel=2,
        )
        return SpeedUpHandle(None, None)
    cross_class, store_class = stock_classes(type(pipe))
    check_pipeline_module(cross_class, store_class)
    swap = LeditsProcessorSwap(pipe.unet, cross_class, backend)
    swap.swap()
    return SpeedUpHandle(pipe.unet, swap)


def _is_supported(pipe) -> bool:
    try:
        import diffusers
    except ImportError:
        return False
    classes = tuple(getattr(diffusers, name, None) for name in SUPPORTED_PIPELINES)
    return any(klass is not None and isinstance(pipe, klass) for klass in classes)
