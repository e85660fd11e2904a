"""How the data commands print: aligned tables and `key: value` blocks for people, JSON with
`--json` for programs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

MAX_CELL_CHARS = 48


def cell(value: Any, limit: int | None = MAX_CELL_CHARS) -> str:
    """A value as table text: None as '-', floats to 4 significant digits, long text cut."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        text = ",".join(cell(item, None) for item in value)
    elif isinstance(value, dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value).replace("\n", " ")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def print_table(rows: Sequence[Any], columns: Sequence[tuple[str, Callable[[Any], Any]]]) -> None:
    """One line per row, columns padded to their widest cell; `(empty)` for no rows."""
    if not rows:
        print("(empty)")
        return
    cells = [[cell(read(row)) for _, read in columns] for row in rows]
    headers = [header for header, _ in columns]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells, strict=True)]
    for line in [headers, *cells]:
        padded = "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        print(padded.rstrip())


def print_fields(fields: Mapping[str, Any]) -> None:
    """`key: value` lines, keys aligned; nested dicts printed as JSON."""
    width = max((len(key) for key in fields), default=0)
    for key, value in fields.items():
        text = json.dumps(value, default=str) if isinstance(value, dict) else cell(value, None)
        print(f"{key + ':':<{width + 1}} {text}")


def print_listing(
    items: Sequence[Any],
    columns: Sequence[tuple[str, Callable[[Any], Any]]],
    as_json: bool,
    payload: Callable[[Any], Any],
) -> None:
    """A list command's output: the server's objects as JSON, or a table for people."""
    if as_json:
        print_json([payload(item) for item in items])
    else:
        print_table(items, columns)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))
