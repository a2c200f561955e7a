"""``make bench``: run every stage benchmark and the end-to-end one, write a markdown report.

Each benchmark is its own module (``python -m benchmarks.<name>``) that measures its ceiling in the same
run and prints a markdown table; this runner runs them one after another (never in parallel: they share
2 cores), and writes ``benchmarks/results/<UTC timestamp>.md`` plus ``benchmarks/results/latest.md``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = ["ingest", "enricher", "sink", "forwarder", "query", "e2e"]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    only = [b for b in sys.argv[1:] if b in BENCHMARKS] or BENCHMARKS
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    parts = [
        f"# auditpipe benchmarks, {stamp}",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}. "
        "Every figure was measured in this run beside its ceiling; see each section.",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---|",
    ]
    sections = []
    failed = 0
    for name in only:
        t0 = time.monotonic()
        print(f"== benchmarks.{name}", flush=True)
        r = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}"], capture_output=True, text=True, timeout=3600
        )
        dt = time.monotonic() - t0
        print(r.stdout[-4000:], flush=True)
        status = "ok" if r.returncode == 0 else f"failed ({r.returncode})"
        failed += r.returncode != 0
        parts.append(f"| {name} | {status} | {dt:.0f} |")
        body = r.stdout.strip() or "(no output)"
        if r.returncode != 0:
            body += "\n\n```\n" + r.stderr.strip()[-3000:] + "\n```"
        sections.append(f"\n## benchmarks.{name}\n\n{body}\n")
    text = "\n".join(parts) + "\n" + "".join(sections)
    (RESULTS / f"{stamp}.md").write_text(text)
    (RESULTS / "latest.md").write_text(text)
    print(f"wrote {RESULTS / (stamp + '.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
