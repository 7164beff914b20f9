"""What a model-loading failure looks like, and how an error becomes one line: shared by the commands and the
model loaders they call (Grounding DINO + SAM), so that every command reports the same failures the same way.

Imports nothing heavy: the commands use it before torch is loaded.
"""

from __future__ import annotations

#: Modules whose errors, escaping a ``from_pretrained`` unwrapped, mean "the files could not be fetched".
LOAD_ERROR_MODULES = ("huggingface_hub", "httpx", "httpx2", "requests", "urllib3")


def one_line(err: BaseException | str, limit: int | None = None) -> str:
    """An error message on one line (hub errors span several), optionally cut to ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def is_load_error(err: BaseException) -> bool:
    """Whether ``err`` means a model's files could not be found or fetched (a user-fixable situation).

    ``OSError`` covers diffusers' "no such folder/file" errors, the hub's HTTP and not-found errors (all
    ``OSError`` subclasses) and socket errors; ``ValueError`` covers the hub's invalid-repo-id error. HTTP
    client errors that escape unwrapped are recognised by their module (:data:`LOAD_ERROR_MODULES`).
    """
    if isinstance(err, (OSError, ValueError)):
        return True
    return type(err).__module__.split(".")[0] in LOAD_ERROR_MODULES
