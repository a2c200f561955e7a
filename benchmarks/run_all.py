"""``make bench``: run every stage benchmark and the end-to-end one, write a markdown report.

Each benchmark is its own module (``python -m benchmarks.<name>``) that measures its ceiling in the same
run and prints a markdown table; this runner runs them one after another (never in parallel: they share
2 cores), and writes ``benchmarks/results/<UTC timestamp>.md`` plus ``benchmarks/results/latest.md``.
A progress bar on stderr (a terminal only; ``--progress`` / ``--no-progress`` decide otherwise) shows
which benchmark runs, how many are done and for how long the whole run has gone.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from services.common.progress import bar

BENCHMARKS = ["ingest", "enricher", "sink", "forwarder", "query", "tools", "integrity", "e2e", "scale"]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    args = sys.argv[1:]
    unknown = [a for a in args if a not in BENCHMARKS and a not in ("--progress", "--no-progress")]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    force = True if "--progress" in args else False if "--no-progress" in args else None
    only = [b for b in args if b in BENCHMARKS] or BENCHMARKS
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
    pb = bar(len(only), desc="make bench", unit="benchmark", force=force)
    for name in only:
        t0 = time.monotonic()
        pb.set_postfix_str(f"running {name}")
        pb.write(f"== benchmarks.{name}")
        r = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}"], capture_output=True, text=True, timeout=3600
        )
        dt = time.monotonic() - t0
        pb.write(r.stdout[-4000:])
        pb.update(1)
        status = "ok" if r.returncode == 0 else f"failed ({r.returncode})"
        failed += r.returncode != 0
        parts.append(f"| {name} | {status} | {dt:.0f} |")
        body = r.stdout.strip() or "(no output)"
        if r.returncode != 0:
            body += "\n\n```\n" + r.stderr.strip()[-3000:] + "\n```"
        sections.append(f"\n## benchmarks.{name}\n\n{body}\n")
    pb.close()
    text = "\n".join(parts) + "\n" + "".join(sections)
    (RESULTS / f"{stamp}.md").write_text(text)
    (RESULTS / "latest.md").write_text(text)
    print(f"wrote {RESULTS / (stamp + '.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
