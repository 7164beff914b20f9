"""One results writer: a markdown table with its header and notes, printed and written, and the same rows as
JSON (``{"header", "environment", "rows"}``)."""

from __future__ import annotations

import json
from pathlib import Path

from .environment import header_line


def num(x: float | None, spec: str, suffix: str = "") -> str:
    """``x`` formatted with ``spec`` (and ``suffix``), or empty when there is no number."""
    return "" if x is None else format(x, spec) + suffix


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; ``|`` inside cells is replaced so that it cannot split a cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(
    env: dict[str, object],
    table: str,
    rows: list[dict],
    notes: list[str] = (),
    title: str = "",
    json_path: str | Path | None = None,
    md_path: str | Path | None = None,
) -> str:
    """Print the header line, ``table`` and ``notes``; write them to ``md_path`` and ``rows`` with the
    environment to ``json_path`` when given. Returns the header line."""
    header = header_line(env, title)
    text = "\n".join([header, "", table, *(["", *(f"- {n}" for n in notes)] if notes else [])])
    print()
    print(text, flush=True)
    if md_path:
        Path(md_path).write_text(text + "\n")
    if json_path:
        payload = {"header": header, "environment": env, "rows": rows}
        Path(json_path).write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return header
