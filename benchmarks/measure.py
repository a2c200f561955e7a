"""What every benchmark measures the same way: CPU time of a process, peak RSS, medians, ratios.

CPU-µs per event is the figure a noisy shared box cannot blur: wall time stretches when another process
takes the core, CPU time does not. ``/proc/<pid>/stat`` gives user+system ticks of any process (ours or a
child); :func:`self_cpu_s` gives this process's own (``time.process_time``, all threads).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (plus its reaped children's when ``children``)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = data[data.rindex(b")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    ticks = utime + stime + ((cutime + cstime) if children else 0)
    return ticks / _TICK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of every live descendant (e.g. uvicorn workers, a supervisor's children)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += proc_cpu_s(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
            ppid = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out: list[int] = []
    stack = [pid]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def self_cpu_s() -> float:
    """CPU seconds of this process (all threads)."""
    return time.process_time()


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of ``pid`` in MB; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class CpuMeter:
    """CPU seconds used by named processes between ``start()`` and ``stop()``."""

    pids: dict[str, int]
    include_descendants: bool = False
    _start: dict[str, float] = field(default_factory=dict)
    used_s: dict[str, float] = field(default_factory=dict)

    def _read(self, pid: int) -> float:
        if pid == os.getpid():
            return self_cpu_s()
        return tree_cpu_s(pid) if self.include_descendants else proc_cpu_s(pid)

    def start(self) -> CpuMeter:
        self._start = {name: self._read(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used_s = {name: self._read(pid) - self._start[name] for name, pid in self.pids.items()}
        return self.used_s

    def us_per_event(self, events: int) -> dict[str, float]:
        return {name: (s * 1e6 / events if events else 0.0) for name, s in self.used_s.items()}


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else 0.0


def ratio(value: float, ceiling: float) -> float:
    return value / ceiling if ceiling else 0.0


def medians_of(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key median over runs (keys of the first run)."""
    if not runs:
        return {}
    return {k: median(r[k] for r in runs if k in r) for k in runs[0]}
