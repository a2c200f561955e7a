"""Progress bars for jobs a person waits for (exports, data generation, benchmark runs, archive runs).

One helper over tqdm, so every long job shows the same bar the same way:

- on stderr, never on stdout: stdout stays the command's data (``--json``, CSV, JSON lines);
- only when stderr is a terminal, unless the caller forces it (``--progress``) or turns it off
  (``--no-progress``): logs and CI output get no carriage-return noise;
- a total when one is known (rows, bytes, steps), a rate and an estimate of the time left.

Why tqdm: it is the most used progress library for Python, has no dependencies, is thread-safe, handles
unknown totals, terminal width and non-terminal output, and costs well under a microsecond per update
when the bar is disabled.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


def wanted(force: bool | None = None) -> bool:
    """Whether to show a bar: ``force`` True/False wins; otherwise only when stderr is a terminal."""
    if force is not None:
        return force
    return sys.stderr.isatty()


def bar(
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    *,
    force: bool | None = None,
    unit_scale: bool = False,
    **kw: Any,
) -> tqdm:
    """A progress bar on stderr (a no-op object with the same methods when not wanted)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit_scale,
        file=sys.stderr,
        disable=not wanted(force),
        dynamic_ncols=True,
        leave=True,
        mininterval=0.2,
        **kw,
    )


@contextmanager
def reporter(desc: str, unit: str, *, force: bool | None = None) -> Iterator[Callable[[int, int], None]]:
    """A bar driven as ``update(done, total)`` (the shape pure jobs report progress in), closed on exit."""
    b = bar(desc=desc, unit=unit, force=force)

    def update(done: int, total: int) -> None:
        b.total = total
        b.n = done
        b.refresh()

    try:
        yield update
    finally:
        b.close()
