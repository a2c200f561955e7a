"""Plain-text tables for the terminal (pure): columns sized to their content, then shrunk to the width.

When the rows are wider than the terminal, the columns marked ``flexible`` give up width, the least
important first (``shrink``: lower goes first), each down to its minimum before the next one is cut
(cut text ends with ``…``); the other columns keep their full width. Cells are single
lines (control characters become spaces), so a value can never forge another row.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
GAP = "  "


@dataclass(frozen=True)
class Column:
    title: str
    flexible: bool = False
    minimum: int = 6
    right: bool = False
    shrink: int = 0


def clean(value: object) -> str:
    return _CONTROL.sub(" ", "" if value is None else str(value))


def cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…" if width > 0 else ""


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """The width of each column so that the table fits ``width`` (None: no limit)."""
    widths = [max([len(c.title), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if width is None:
        return widths
    over = sum(widths) + len(GAP) * (len(columns) - 1) - width
    for i in sorted((i for i, c in enumerate(columns) if c.flexible), key=lambda i: columns[i].shrink):
        if over <= 0:
            break
        floor = max(columns[i].minimum, len(columns[i].title))
        take = min(over, max(0, widths[i] - floor))
        widths[i] -= take
        over -= take
    return widths


def format_line(columns: Sequence[Column], widths: Sequence[int], values: Sequence[object]) -> str:
    parts = []
    for c, w, v in zip(columns, widths, values, strict=True):
        text = cut(clean(v), w)
        parts.append(text.rjust(w) if c.right else text.ljust(w))
    return GAP.join(parts).rstrip()


def header(columns: Sequence[Column], widths: Sequence[int]) -> str:
    return "\n".join(
        (
            format_line(columns, widths, [c.title for c in columns]),
            format_line(columns, widths, ["─" * w for w in widths]),
        )
    )


def render(columns: Sequence[Column], rows: Sequence[Sequence[object]], width: int | None) -> str:
    cells = [[clean(v) for v in r] for r in rows]
    widths = fit(columns, cells, width)
    return "\n".join([header(columns, widths), *(format_line(columns, widths, r) for r in cells)])


def terminal_width() -> int | None:
    """The terminal's width when stdout is one; None (no limit) when output goes to a file or pipe,
    unless COLUMNS says otherwise."""
    import os

    if sys.stdout.isatty():
        return shutil.get_terminal_size((120, 24)).columns
    cols = os.environ.get("COLUMNS", "")
    return int(cols) if cols.isdigit() and int(cols) > 20 else None
