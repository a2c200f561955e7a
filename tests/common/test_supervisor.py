from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from services.supervisor.supervisor import Child, RestartPolicy, Supervisor


def test_backoff_grows_caps_and_resets_after_stable_uptime() -> None:
    p = RestartPolicy(base_s=1, cap_s=5, stable_s=60)
    assert [p.next_delay(1) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert p.next_delay(120) == 1


def test_restarts_crashed_child_and_stops_all_on_sigterm(tmp_path) -> None:
    marker = tmp_path / "starts"
    script = (
        "import sys, time, pathlib, signal\n"
        f"p = pathlib.Path({str(marker)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(0.3 if len(p.read_text()) < 2 else 60)\n"
        "sys.exit(3)\n"
    )
    runner = (
        "import sys\n"
        "from services.supervisor.supervisor import Supervisor, Child, RestartPolicy\n"
        "s = Supervisor([])\n"
        f"argv = [sys.executable, '-c', {script!r}]\n"
        "s.children = [Child('crashy', argv, policy=RestartPolicy(base_s=0.1))]\n"
        "sys.exit(s.run())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", runner], cwd=os.getcwd())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (marker.exists() and len(marker.read_text()) >= 2):
        time.sleep(0.1)
    assert marker.exists() and len(marker.read_text()) >= 2, "child was not restarted after it crashed"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    # The restarted child (sleeping 60 s) must be gone too: nothing left behind.
    out = subprocess.run(["pgrep", "-f", "time.sleep(0.3 if len"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_unknown_child_names_are_refused() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "--services", "ingest,nonsense"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "nonsense" in r.stderr and "Traceback" not in r.stderr


def test_supervisor_builds_one_child_per_service() -> None:
    s = Supervisor(["ingest", "api"])
    assert [c.name for c in s.children] == ["ingest", "api"]
    assert all(isinstance(c, Child) for c in s.children)


# ------------------------------------------------------------------------------------ --instances
def test_instances_are_parsed_and_refused_with_one_line() -> None:
    import pytest

    from services.supervisor.supervisor import InstancesError, parse_instances

    services = ["ingest", "enricher", "sink", "forwarder", "api"]
    assert parse_instances("enricher=2, sink=2,forwarder=2,ingest=2", services) == {
        "enricher": 2,
        "sink": 2,
        "forwarder": 2,
        "ingest": 2,
    }
    assert parse_instances("", services) == {}
    # a process that must stay single refuses more, whatever else runs
    assert parse_instances("seal=1", [*services, "seal"]) == {"seal": 1}
    with pytest.raises(InstancesError, match="seal runs as exactly one instance"):
        parse_instances("seal=2", [*services, "seal"])
    for bad, msg in (
        ("enricher", "not SERVICE=N"),
        ("enricher=two", "not SERVICE=N"),
        ("seal=2", "not one of the services"),
        ("sink=0", "between 1 and 16"),
        ("sink=17", "between 1 and 16"),
    ):
        with pytest.raises(InstancesError, match=msg):
            parse_instances(bad, services)


def test_each_instance_gets_its_own_port_data_folder_and_one_archive_writer(tmp_path) -> None:
    from services.common.settings import Settings
    from services.supervisor.supervisor import Supervisor

    s = Settings(enricher={"data_dir": tmp_path / "enricher"})
    sup = Supervisor(
        ["ingest", "enricher", "sink", "api"],
        instances={"enricher": 2, "sink": 2, "ingest": 3},
        port_stride=20,
        settings=s,
    )
    by_name = {c.name: c.env for c in sup.children}
    assert list(by_name) == [
        "ingest",
        "ingest-2",
        "ingest-3",
        "enricher",
        "enricher-2",
        "sink",
        "sink-2",
        "api",
    ]
    assert by_name["ingest"] == {} and by_name["sink"] == {} and by_name["api"] == {}
    assert by_name["ingest-2"] == {"AUDITPIPE_INGEST__PORT": str(s.ingest.port + 20)}
    assert by_name["ingest-3"] == {"AUDITPIPE_INGEST__PORT": str(s.ingest.port + 40)}
    assert by_name["enricher-2"]["AUDITPIPE_ENRICHER__WEB_PORT"] == str(s.enricher.web_port + 20)
    assert by_name["enricher-2"]["AUDITPIPE_ENRICHER__DATA_DIR"] == str(tmp_path / "enricher" / "instance-2")
    assert (tmp_path / "enricher" / "instance-2").is_dir()  # faust makes only the last folder
    assert by_name["sink-2"] == {
        "AUDITPIPE_SINK__PORT": str(s.sink.port + 20),
        "AUDITPIPE_SINK__ARCHIVE_ENABLED": "false",
    }
    # every child runs the same command; only its settings differ
    assert {tuple(c.argv[-1:]) for c in sup.children if c.name.startswith("sink")} == {("sink",)}


def test_run_refuses_bad_instances_with_exit_code_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "--instances", "sink=lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["auditpipe: --instances: 'sink=lots' is not SERVICE=N"]
