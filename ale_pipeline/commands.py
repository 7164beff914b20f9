"""What ``ale-edit``, ``ale-bench``, ``ale-profile`` and the demo share: errors, parser, model loading.

- :class:`CommandError` and :func:`run_command`: a user mistake is one ``PROG: error: ...`` line on stderr and
  exit status 2, never a traceback; a missing optional dependency names the extra to install.
- :class:`Parser` and :func:`add_model_arguments`: the options every editing command shares, with the
  defaults of :mod:`ale_pipeline.config`.
- :func:`load_pipeline`: the one way a command gets its :class:`~ale_pipeline.ALEEditPipeline` (a checkpoint,
  a random model of :data:`RANDOM_KINDS`, or the demo's fallback to one); an SDXL checkpoint (its
  ``model_index.json`` lists ``text_encoder_2``) gets an :class:`~ale_pipeline.ALEEditXLPipeline`.

Nothing heavy is imported at module level: a command parses its arguments (and answers ``--help``) before
torch or diffusers is loaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_MODEL, DEFAULTS
from .errors import LOAD_ERROR_MODULES, is_load_error, one_line  # noqa: F401  (part of the command API)
from .hub import hub_endpoint, hub_reachable

if TYPE_CHECKING:
    import torch

    from .pipeline import ALEEditPipeline

#: ``ale_kernels.BACKENDS``, restated because importing ``ale_kernels`` loads torch (a test keeps them equal).
BACKENDS = ("auto", "reference", "torch", "triton", "cpp")
#: Randomly initialised pipelines of :func:`ale_pipeline.random_model.random_ale_pipeline` (no weights).
RANDOM_KINDS = ("sd-shaped", "tiny", "sd15", "sdxl", "sdxl-shaped", "tiny-xl")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
#: The optional dependencies each extra of ``pyproject.toml`` provides, by import name.
EXTRAS = {
    "edit": ("diffusers", "transformers", "PIL", "tqdm"),
    "bench": ("diffusers", "transformers", "PIL", "tqdm", "torchmetrics", "matplotlib"),
}

#: ``load(model, device, dtype) -> pipeline``: how a command gets its pipeline (tests pass tiny ones).
PipelineLoader = Callable[[str, str, "torch.dtype"], "ALEEditPipeline"]


class CommandError(Exception):
    """A user mistake or an unusable environment: reported as one ``PROG: error: ...`` line, exit status 2."""


class MissingExtraError(CommandError):
    """An optional dependency of the command is not installed; the message names the extra that provides it."""

    def __init__(self, extra: str):
        self.extra = extra
        super().__init__(f'this command needs the {extra!r} extra: pip install "ale-kernels[{extra}]"')


class Parser(argparse.ArgumentParser):
    """``argparse`` that raises :class:`CommandError` instead of printing the usage and exiting."""

    def error(self, message: str):
        raise CommandError(f"{message} (see {self.prog} --help)")


def require_extra(extra: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` (a key of :data:`EXTRAS`) is importable.

    Looks the modules up without importing them, so a command can say what is missing in a fraction of a second.
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {sorted(EXTRAS)}, got {extra!r}")
    for name in EXTRAS[extra]:
        try:
            found = name in sys.modules or importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(extra)


def _extra_of(err: ModuleNotFoundError, extra: str) -> bool:
    top = (err.name or "").split(".")[0]
    return top in EXTRAS.get(extra, ())


def run_command(prog: str, body: Callable[[], int], extra: str | None = None, interrupted: str = "interrupted") -> int:
    """``body()``'s exit status, with :class:`CommandError` (and a missing module of ``extra``) as one
    ``prog: error: ...`` line and status 2, and Ctrl-C as ``prog: <interrupted>`` and status 130."""
    try:
        return body()
    except CommandError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if extra is None or not _extra_of(err, extra):
            raise
        print(f"{prog}: error: {one_line(MissingExtraError(extra))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit status where argparse exits by itself (``--help``)."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:  # --help: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else 0


def add_model_arguments(parser: argparse.ArgumentParser, seed_help: str | None = None) -> None:
    """The options every editing command shares: --model, --steps, --seed, --backend, --device, --dtype.

    Their defaults are :data:`ale_pipeline.config.DEFAULTS`'s.
    """
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local diffusers folder (default {DEFAULT_MODEL})"
    )
    steps = DEFAULTS.num_inference_steps
    parser.add_argument("--steps", type=int, default=steps, help=f"LCM sampling steps (default {steps})")
    parser.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help=seed_help or f"random seed (default {DEFAULTS.seed})"
    )
    backend = DEFAULTS.attention_backend
    parser.add_argument("--backend", choices=BACKENDS, default=backend, help=f"attention backend (default {backend})")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="default: float16 on cuda, float32 on cpu")


def add_force_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--force``: without it a command refuses to write over ``what`` (an output the user named)."""
    parser.add_argument("--force", action="store_true", help=f"overwrite {what} (refused by default)")


def refuse_overwrite(paths: Iterable[str | Path], force: bool, flag: str) -> None:
    """Raise :class:`CommandError` naming the first of ``paths`` that exists, unless ``force``.

    ``flag`` is the option that named the outputs (``--trace``, ``--save-maps``), for the message.
    """
    if force:
        return
    for path in paths:
        if Path(path).exists():
            raise CommandError(f"{flag}: {str(path)!r} already exists; pass --force to overwrite it")


def resolve_device(requested: str | None) -> str:
    """``--device``: ``cuda`` when available unless asked otherwise; asking for an absent GPU is an error."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda was asked for but torch sees no CUDA device (use --device cpu)")
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str | None, device: str) -> torch.dtype:
    """``--dtype`` as a torch dtype: by default float16 on a GPU, float32 on the CPU."""
    import torch

    if name is not None and name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {name!r}")
    return getattr(torch, name or ("float16" if device.startswith("cuda") else "float32"))


def load_error_message(model: str, err: BaseException) -> str:
    """The one line that says ``model`` could not be loaded, why, and what to pass instead."""
    return f"cannot load model {model!r}: {one_line(err, limit=240)}; pass --model with a local diffusers folder"


def random_pipeline(kind: str, device: str, dtype: torch.dtype) -> ALEEditPipeline:
    """A randomly initialised pipeline of ``kind`` (one of :data:`RANDOM_KINDS`) on ``device`` in ``dtype``."""
    if kind not in RANDOM_KINDS:
        raise ValueError(f"kind must be one of {RANDOM_KINDS}, got {kind!r}")
    import torch

    from .random_model import random_ale_pipeline

    pipe = random_ale_pipeline(kind)  # built in float32
    # A cast to float32 would be a no-op, but diffusers warns about any dtype passed to `to()`.
    return pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)


def load_pipeline(
    model: str,
    device: str,
    dtype: torch.dtype,
    *,
    random_kinds: bool = False,
    fallback: str | None = None,
    prog: str = "ale",
) -> ALEEditPipeline:
    """The pipeline ``model`` names (hub id or local diffusers folder) on ``device`` in ``dtype``.

    ``random_kinds``: a ``model`` in :data:`RANDOM_KINDS` is a randomly initialised pipeline of that kind.
    ``fallback``: a random kind to use when the checkpoint cannot be reached; the local cache is tried before
    the hub, and the fallback is announced in one ``prog: ...`` line on stdout. Without a fallback a model
    that cannot be loaded is a :class:`CommandError` saying so (see :func:`is_load_error`); other errors
    propagate. A hub that does not answer a quick probe (:func:`~ale_pipeline.hub.hub_reachable`) is not
    asked: only the local cache is read.

    diffusers' and transformers' warnings are silenced while loading: offline they print several lines
    ("Couldn't connect to the Hub", the ``torch_dtype`` deprecation, "install accelerate") ahead of the error.
    """
    if fallback is not None and fallback not in RANDOM_KINDS:
        raise ValueError(f"fallback must be one of {RANDOM_KINDS} or None, got {fallback!r}")
    if random_kinds and model in RANDOM_KINDS:
        return random_pipeline(model, device, dtype)
    attempts = ({"local_files_only": True}, {}) if fallback is not None else ({},)
    error: BaseException | None = None
    hub_down = False
    for options in attempts:
        if not options and not _is_local_path(model) and not hub_reachable():
            hub_down = True
            if fallback is not None:
                break  # the local cache had nothing; the hub would only retry with back-off, then fail
            options = {"local_files_only": True}  # the cache may still hold it
        try:
            pipe = _from_pretrained(model, dtype, **options).to(device)
        except Exception as err:
            if not is_load_error(err):
                raise
            error = err
        else:
            print(f"{prog}: {model} is {_FAMILY_LINES[type(pipe).__name__]}")
            return pipe
    if hub_down and type(error).__name__ == "LocalEntryNotFoundError":
        # Its own text blames "outgoing traffic has been disabled", which the user did not do.
        error = OSError(f"{hub_endpoint()} does not answer and the local cache has no copy")
    if fallback is None:
        raise CommandError(load_error_message(model, error)) from None
    print(f"{prog}: no weights for {model!r} could be reached ({type(error).__name__}: {one_line(error, 100)}); "
          f"running the same pipeline on a randomly initialised {fallback} model (the pictures show the path, "
          "not a real edit)")  # fmt: skip
    return random_pipeline(fallback, device, dtype)


def call_loader(loader: PipelineLoader, model: str, device: str, dtype: torch.dtype) -> Any:
    """``loader(model, device, dtype)``, with a load error (see :func:`is_load_error`) as a :class:`CommandError`."""
    try:
        return loader(model, device, dtype)
    except CommandError:
        raise
    except Exception as err:
        if not is_load_error(err):
            raise
        raise CommandError(load_error_message(model, err)) from None


#: What :func:`load_pipeline` says it picked, by pipeline class.
_FAMILY_LINES = {
    "ALEEditPipeline": "an SD1.5-family checkpoint: editing with ALEEditPipeline",
    "ALEEditXLPipeline": "an SDXL-family checkpoint (text_encoder_2 in its model_index.json): editing with "
    "ALEEditXLPipeline, 1024 px by default",
}


def is_sdxl_checkpoint(model: str, **options) -> bool:
    """Whether ``model`` (a local diffusers folder or hub id) is SDXL-family: its ``model_index.json`` lists a
    ``text_encoder_2`` component. ``options`` (``local_files_only``) go to the hub download; a missing or
    unreadable file raises as loading would (an ``OSError``)."""
    folder = Path(model)
    if folder.is_dir():
        path = folder / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(model, "model_index.json", **options))
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    return bool(index.get("text_encoder_2")) and index.get("text_encoder_2") != [None, None]


#: How a model name that is meant as a path starts (a hub id never does).
_PATH_PREFIXES = ("/", "./", "../", "~")


def _is_local_path(model: str) -> bool:
    """Whether ``model`` names a folder on this machine (an existing one, or a path-like name) and no hub id."""
    return model.startswith(_PATH_PREFIXES) or Path(model).is_dir()


def _from_pretrained(model: str, dtype: torch.dtype, **options) -> ALEEditPipeline:
    if model.startswith(_PATH_PREFIXES):
        model = str(Path(model).expanduser())
        if not Path(model).is_dir():
            # Otherwise the hub reports a path as an invalid repo id, which hides the actual mistake.
            raise FileNotFoundError(f"no such folder: {model!r}")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .pipeline import ALEEditPipeline
    from .pipeline_xl import ALEEditXLPipeline

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # ``torch_dtype`` is deprecated in newer diffusers, but ``dtype`` is unknown to the oldest we support.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            cls = ALEEditXLPipeline if is_sdxl_checkpoint(model, **options) else ALEEditPipeline
            return cls.from_pretrained(model, torch_dtype=dtype, **options)
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
