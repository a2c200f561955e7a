"""Progress bars: stderr only, only on a terminal unless forced, never on stdout; the query benchmark's
data generation and ``make bench`` use them."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from services.common.clickhouse import make_client
from services.common.progress import bar, wanted


def test_bar_goes_to_stderr_only_when_wanted(capsys: pytest.CaptureFixture[str]) -> None:
    assert wanted(True) and not wanted(False)
    assert wanted(None) is sys.stderr.isatty()
    with bar(10, desc="work", force=True) as pb:
        pb.update(10)
    out, err = capsys.readouterr()
    assert out == "" and "work" in err and "10/10" in err
    with bar(10, desc="quiet", force=False) as pb:
        pb.update(10)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    with bar(10, desc="auto") as pb:  # pytest's stderr is not a terminal
        pb.update(10)
    assert capsys.readouterr() == ("", "")


@pytest.mark.clickhouse
def test_query_benchmark_generation_shows_progress(clickhouse_settings, capsys) -> None:  # noqa: ANN001
    from benchmarks.query.generate import generate

    db = f"test_bench_gen_{uuid.uuid4().hex[:8]}"
    try:
        assert generate(clickhouse_settings, db, total=3000, chunk=1000, progress=True)
        out, err = capsys.readouterr()
        assert out == "" and f"generating {db}" in err and "3000/3000" in err
        n = int(make_client(clickhouse_settings).command(f"SELECT count() FROM {db}.events"))
        assert n >= 3000
    finally:
        make_client(clickhouse_settings).command(f"DROP DATABASE IF EXISTS {db} SYNC")


def test_run_all_refuses_an_unknown_benchmark() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--no-progress", "nonsense"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "unknown benchmark 'nonsense'" in r.stderr
