"""``auditpipe run``: run ingest, enricher, sink, forwarder, query API and sealer as child processes.

``--instances enricher=2,sink=2`` runs several processes of a service (:func:`instance_env`): each is its
own child, in the same consumer group (so they split the partitions), with its own health port
(``port + (i-1) × port_stride``) and, for the enricher, its own faust data folder. Only the first sink
instance runs the archive schedule (one writer of the archives).

A child that exits unexpectedly is restarted with exponential backoff (capped), and the restart is
logged. SIGTERM / SIGINT (Ctrl-C) forwards SIGTERM to every child, waits for them to finish their batch
(``grace_s``), then SIGKILLs stragglers. Pure bookkeeping (which child to restart when) is in
:class:`RestartPolicy`; the process handling is a thin shell around it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditpipe.backoff import Backoff
from services.common.logging import get_logger, log

logger = get_logger("auditpipe.supervisor")

DEFAULT_SERVICES = ("ingest", "enricher", "sink", "forwarder", "api", "seal")
# Processes that must run as exactly one instance whatever --instances says: the sealing of tamper-evidence
# digests (two sealers would race to seal the same window).
SINGLE_INSTANCE: frozenset[str] = frozenset({"seal"})
# The port setting of each service's instance, offset by (i-1) × stride for instance i.
PORT_VARS = {
    "ingest": ("AUDITPIPE_INGEST__PORT", "ingest", "port"),
    "api": ("AUDITPIPE_QUERY_API__PORT", "query_api", "port"),
    "sink": ("AUDITPIPE_SINK__PORT", "sink", "port"),
    "forwarder": ("AUDITPIPE_FORWARDER__PORT", "forwarder", "port"),
    "enricher": ("AUDITPIPE_ENRICHER__WEB_PORT", "enricher", "web_port"),
}


class InstancesError(ValueError):
    """A bad ``--instances`` value (one line, for exit code 2)."""


def parse_instances(text: str, services: list[str] | tuple[str, ...]) -> dict[str, int]:
    """``"enricher=2,sink=2"`` -> {"enricher": 2, "sink": 2}; services not named run once."""
    out: dict[str, int] = {}
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        name, sep, count = part.partition("=")
        name = name.strip()
        if not sep or not count.strip().isdigit():
            raise InstancesError(f"--instances: {part!r} is not SERVICE=N")
        n = int(count)
        if name not in services:
            raise InstancesError(
                f"--instances: {name!r} is not one of the services run ({', '.join(services)})"
            )
        if not 1 <= n <= 16:
            raise InstancesError(f"--instances: {name}={n}: between 1 and 16 instances")
        if n > 1 and name in SINGLE_INSTANCE:
            raise InstancesError(f"--instances: {name} runs as exactly one instance")
        out[name] = n
    return out


def instance_name(service: str, i: int) -> str:
    """Child name of instance ``i`` (1-based): the service name for the first, ``<service>-<i>`` after."""
    return service if i == 1 else f"{service}-{i}"


def instance_env(service: str, i: int, settings: Any, stride: int) -> dict[str, str]:
    """Settings that make instance ``i`` (1-based) of ``service`` differ from the first: its port and,
    for the enricher, its data folder; later sink instances leave the archive schedule to the first."""
    if i == 1:
        return {}
    env: dict[str, str] = {}
    if service in PORT_VARS:
        var, section, attr = PORT_VARS[service]
        port = getattr(getattr(settings, section), attr) + (i - 1) * stride
        if port > 65535:
            raise InstancesError(f"--instances: {service} instance {i} would listen on port {port}")
        env[var] = str(port)
    if service == "enricher":
        env["AUDITPIPE_ENRICHER__DATA_DIR"] = str(Path(settings.enricher.data_dir) / f"instance-{i}")
    if service == "sink":
        env["AUDITPIPE_SINK__ARCHIVE_ENABLED"] = "false"
    return env


@dataclass
class RestartPolicy:
    """Exponential backoff per child (the shared :class:`auditpipe.backoff.Backoff`); a child that stayed up
    ``stable_s`` starts again from ``base_s``. No jitter: each child is one process restarting alone, and
    an operator reading the log sees the delays double."""

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        self.backoff = Backoff(initial_s=self.base_s, cap_s=self.cap_s, jitter="none")

    def next_delay(self, uptime_s: float) -> float:
        if uptime_s >= self.stable_s:
            self.backoff.reset()
        return self.backoff.next_delay()


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    env: dict[str, str] = field(default_factory=dict)  # this instance's own settings

    def start(self, env: dict[str, str] | None = None) -> None:
        full = {**env, **self.env} if env is not None else ({**os.environ, **self.env} if self.env else None)
        self.proc = subprocess.Popen(self.argv, env=full, start_new_session=False)
        self.started_at = time.monotonic()
        self.restart_at = None
        log(logger, logging.INFO, "started", child=self.name, pid=self.proc.pid)


class Supervisor:
    def __init__(
        self,
        services: list[str],
        extra_env: dict[str, str] | None = None,
        grace_s: float = 30.0,
        status_file: str | None = None,
        instances: dict[str, int] | None = None,
        port_stride: int = 100,
        settings: Any = None,
    ):
        instances = instances or {}
        if any(n > 1 for n in instances.values()) and settings is None:
            raise ValueError("several instances need the settings (their ports)")
        self.children = [
            Child(
                instance_name(s, i),
                [sys.executable, "-m", "services.cli", s],
                env=instance_env(s, i, settings, port_stride),
            )
            for s in services
            for i in range(1, instances.get(s, 1) + 1)
        ]
        for c in self.children:  # faust makes its data folder, not its parents
            if "AUDITPIPE_ENRICHER__DATA_DIR" in c.env:
                Path(c.env["AUDITPIPE_ENRICHER__DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, **(extra_env or {}))
        self.grace_s = grace_s
        self.status_file = status_file
        self._stop = False

    def write_status(self) -> None:
        """Write {child: {pid, restarts}} to ``status_file`` (atomically), for operators and tests."""
        if not self.status_file:
            return
        import json

        data = {
            c.name: {"pid": c.proc.pid if c.proc is not None else None, "restarts": c.restarts}
            for c in self.children
        }
        tmp = f"{self.status_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.status_file)

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for c in self.children:
            c.start(self.env)
        self.write_status()
        while not self._stop:
            now = time.monotonic()
            changed = False
            for c in self.children:
                if c.proc is not None and c.proc.poll() is not None:
                    code = c.proc.returncode
                    delay = c.policy.next_delay(now - c.started_at)
                    c.restart_at = now + delay
                    c.restarts += 1
                    log(
                        logger,
                        logging.WARNING,
                        "child exited; restarting",
                        child=c.name,
                        code=code,
                        restart_in_s=round(delay, 2),
                        restarts=c.restarts,
                    )
                    c.proc = None
                    changed = True
                elif c.proc is None and c.restart_at is not None and now >= c.restart_at:
                    c.start(self.env)
                    changed = True
            if changed:
                self.write_status()
            time.sleep(0.2)
        return self.shutdown()

    def shutdown(self) -> int:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in live:
            c.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.grace_s
        for c in live:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                c.proc.wait(remaining)  # type: ignore[union-attr]
                log(logger, logging.INFO, "stopped", child=c.name, code=c.proc.returncode)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                c.proc.kill()  # type: ignore[union-attr]
                c.proc.wait()  # type: ignore[union-attr]
                log(logger, logging.WARNING, "killed after grace period", child=c.name)
        return 0
