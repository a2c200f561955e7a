"""``auditpipe forwarder check``: validates the file, probes every destination, one line each, and exits
non-zero on any problem (2 = invalid file, 1 = a destination invalid or unreachable)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import yaml

from services.siem_forwarder.cli import check
from tests.siem_forwarder.harness import Harness, destination_block

AUDITPIPE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "auditpipe")
BASE = 19860  # our range 19800-19899


async def run_check(path: Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        AUDITPIPE,
        "forwarder",
        "check",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err, err.decode()
    return proc.returncode or 0, (out.decode() + err.decode()).strip().splitlines()


async def test_check_probes_every_destination(tmp_path: Path) -> None:
    kinds = ["splunk_hec", "datadog", "elasticsearch", "webhook", "otlp", "syslog_tls"]
    harnesses = []
    for i, kind in enumerate(kinds):
        h = Harness(kind, tmp_path)
        h.port = h.receiver.port = BASE + i
        if kind.startswith("syslog"):
            h.receiver._write_conf()
        harnesses.append(h)
    for h in harnesses:
        await h.start()
    try:
        blocks = [
            destination_block(h.kind, h.kind.replace("_", "-"), h.port, getattr(h.receiver, "cert", None))
            for h in harnesses
        ]
        path = tmp_path / "forwarder.yaml"
        path.write_text(yaml.safe_dump({"destinations": blocks}))
        code, lines = await run_check(path)
        assert code == 0, lines
        assert len(lines) == len(kinds) and all("config ok" in x and "reachable" in x for x in lines), lines

        # one receiver down, one secret missing: both reported, the others still ok, exit 1
        await harnesses[1].down()
        env = {"FWD_TEST_ES_KEY": ""}
        code, lines = await run_check(path, env)
        assert code == 1, lines
        by_name = {x.split()[0]: x for x in lines}
        assert "UNREACHABLE" in by_name["datadog"]
        assert "INVALID" in by_name["elasticsearch"] and "FWD_TEST_ES_KEY" in by_name["elasticsearch"]
        assert "reachable" in by_name["splunk-hec"] and "reachable" in by_name["syslog-tls"]
        await harnesses[1].up()
    finally:
        for h in harnesses:
            await h.stop()


async def test_check_invalid_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[destinations]]\nname = "x"\ntype = "datadog"\napi_key_env = "K"\nbatch = {max_events = 5000}\n'
    )
    code, lines = await run_check(path)
    assert code == 2 and len(lines) == 1 and "destinations[x].batch" in lines[0], lines
    # the same function in-process (no second interpreter start): missing file, unparsable file
    code, lines = await check(tmp_path / "missing.toml")
    assert code == 2 and "not found" in lines[0]
    path.write_text("destinations = [")
    code, lines = await check(path)
    assert code == 2 and "cannot parse" in lines[0]
    path.write_text("destinations = []")
    code, lines = await check(path)
    assert code == 2 and "no destinations" in lines[0]


async def test_run_without_config_is_one_line_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        AUDITPIPE,
        "forwarder",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "AUDITPIPE_FORWARDER__CONFIG_FILE"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and len(err.decode().strip().splitlines()) == 1 and b"--config" in err
