"""``ale-app``: the editing web app, served on this machine.

    ale-app [--model ID_OR_DIR] [--device cpu|cuda] [--host 127.0.0.1] [--port 7860]

``--model`` loads as ``make demo`` does: the checkpoint from the local cache, then the hub, and a randomly
initialised SD-shaped model (said in one line) when no weights can be reached; ``tiny``, ``sd-shaped`` and
``sd15`` name random models directly. The page is bound to 127.0.0.1 unless ``--host`` says otherwise, and is
offline and private: no analytics, no share link, nothing fetched from the internet (:mod:`.offline`).

``--help`` answers before torch or Gradio is imported; a mistake (a port in use, a missing ``app`` extra, an
unavailable device) is one ``ale-app: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from ..commands import (
    DTYPE_NAMES,
    RANDOM_KINDS,
    CommandError,
    MissingExtraError,
    Parser,
    load_pipeline,
    one_line,
    parse,
    require_extra,
    resolve_device,
    resolve_dtype,
    run_command,
)
from ..config import DEFAULT_MODEL
from .offline import go_offline

PROG = "ale-app"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: The random model a checkpoint that cannot be reached falls back to, as in ``make demo``.
FALLBACK = "sd-shaped"


def build_parser() -> argparse.ArgumentParser:
    """The ``ale-app`` parser (nothing heavy is imported)."""
    parser = Parser(
        prog=PROG,
        description="A web page for ALE editing: upload a picture, type one edit per object, paint (or find) each "
        "object's mask, and see the edit beside the original with where each phrase attended.",
        epilog=f"The page is served on http://{DEFAULT_HOST}:{DEFAULT_PORT} by default, for this machine only; "
        "no analytics, no share link, nothing loaded from the internet.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id or local diffusers folder (default {DEFAULT_MODEL}); when no weights can be reached, a "
        f"random {FALLBACK} model (the page then shows the path, not a real edit); {', '.join(RANDOM_KINDS)} name "
        "random models",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="default: float16 on cuda, float32 on cpu")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only; "
        "0.0.0.0 opens it to the network)"
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ale-app`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status once the server stops."""
    return run_command(PROG, lambda: _run(sys.argv[1:] if argv is None else argv), extra="edit", interrupted="stopped")


def require_app_extra() -> None:
    """:class:`MissingExtraError` naming the ``app`` extra unless Gradio is importable."""
    require_extra("edit")
    if "gradio" not in sys.modules and importlib.util.find_spec("gradio") is None:
        raise MissingExtraError("app")


def _run(argv: Sequence[str]) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must lie in [0, 65535], got {args.port}")
    require_app_extra()
    go_offline()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    pipe = load_pipeline(args.model, device, dtype, random_kinds=True, fallback=FALLBACK, prog=PROG)
    from .session import EditSession
    from .ui import build_app, launch

    kind = getattr(pipe, "random_kind", None)
    model = args.model if kind is None else f"random {kind} model"
    app = build_app(EditSession(pipe), model=model)
    where = (
        "this machine only" if args.host in ("127.0.0.1", "localhost", "::1") else f"open to the network on {args.host}"
    )
    try:
        # quiet: Gradio's own banner suggests a public share link, which this app never opens.
        _, url, _ = launch(app, host=args.host, port=args.port, block=False, quiet=True)
    except OSError as err:  # the port is taken, or the address is not this machine's
        raise CommandError(f"cannot serve on {args.host}:{args.port}: {one_line(err)}") from None
    print(f"{PROG}: {model} on {device}; serving {url} ({where}); Ctrl-C stops", flush=True)
    app.block_thread()  # until Ctrl-C, which closes the server
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
