"""A whole local pipeline on chosen ports: the stack, migrations and every service under ``auditpipe run``.

Used by ``auditpipe demo``, the end-to-end fault suite and the end-to-end benchmark, so all three run the
pipeline the same way a user does (real processes, real Kafka and ClickHouse).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.common.clickhouse import make_client
from services.common.migrations import migrate
from services.common.settings import Settings, load_settings
from services.common.stack.manager import Stack
from services.supervisor.supervisor import instance_name


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    clickhouse: int = 8123
    ingest: int = 8080
    api: int = 8081
    sink: int = 8082
    forwarder: int = 8083
    enricher: int = 6066
    siem: int = 8088
    seal: int = 8084

    @classmethod
    def offset(cls, base: int) -> Ports:
        """A block of ports starting at ``base`` (for private pipelines in tests and benchmarks)."""
        return cls(*(base + i for i in range(10)))

    @classmethod
    def cluster(cls, base: int) -> Ports:
        """A block for a pipeline on a 3-node Kafka cluster: nodes on ``base``, ``base+2``, ``base+4``
        (controllers one above each), ClickHouse ``base+6``, services from ``base+10`` (instances of a
        service ``stride`` apart above that: keep stride >= 10)."""
        return cls(base, base + 1, base + 6, base + 10, base + 11, base + 12, base + 13, base + 14, base + 15)


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class LocalPipeline:
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    services: tuple[str, ...] = ("ingest", "enricher", "sink", "forwarder", "api", "seal")
    forwarder_config: str | None = None
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "10.0.0.0/8", "192.168.0.0/16")
    extra_env: dict[str, str] = field(default_factory=dict)
    kafka_heap: str = "1g"
    kafka_nodes: int = 1
    instances: dict[str, int] = field(
        default_factory=dict
    )  # service -> processes (auditpipe run --instances)
    port_stride: int = 100
    ingest_token: str = field(default_factory=lambda: "ing_" + secrets.token_urlsafe(24))
    viewer_token: str = field(default_factory=lambda: "view_" + secrets.token_urlsafe(24))
    manager_token: str = field(default_factory=lambda: "mgr_" + secrets.token_urlsafe(24))
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ settings
    def env(self) -> dict[str, str]:
        p = self.ports
        env = {
            "AUDITPIPE_KAFKA_BOOTSTRAP": ",".join(
                f"127.0.0.1:{p.kafka + 2 * i}" for i in range(self.kafka_nodes)
            ),
            "AUDITPIPE_STACK__KAFKA_NODES": str(self.kafka_nodes),
            "AUDITPIPE_CLICKHOUSE_URL": f"http://127.0.0.1:{p.clickhouse}",
            "AUDITPIPE_STACK__STATE_DIR": str(self.state_dir / "stack"),
            "AUDITPIPE_STACK__KAFKA_CONTROLLER_PORT": str(p.kafka_controller),
            "AUDITPIPE_STACK__KAFKA_HEAP": self.kafka_heap,
            "AUDITPIPE_INGEST__PORT": str(p.ingest),
            "AUDITPIPE_QUERY_API__PORT": str(p.api),
            "AUDITPIPE_SINK__PORT": str(p.sink),
            "AUDITPIPE_FORWARDER__PORT": str(p.forwarder),
            "AUDITPIPE_ENRICHER__WEB_PORT": str(p.enricher),
            "AUDITPIPE_ENRICHER__DATA_DIR": str(self.state_dir / "enricher"),
            "AUDITPIPE_ENRICHER__TRUSTED_PROXIES": json.dumps(list(self.trusted_proxies)),
            "AUDITPIPE_RETENTION__ARCHIVE_DIR": str(self.state_dir / "archives"),
            "AUDITPIPE_INTEGRITY__PORT": str(p.seal),
            "AUDITPIPE_INTEGRITY__DEV_KEY_FILE": str(self.state_dir / "integrity" / "signing.key"),
            "AUDITPIPE_TOKENS_FILE": str(self.state_dir / "tokens.json"),
            "AUDITPIPE_INGEST__TOKENS": json.dumps(
                [{"producer": "demo-platform", "sha256": sha256_hex(self.ingest_token), "orgs": ["*"]}]
            ),
            "AUDITPIPE_QUERY_API__TOKENS": json.dumps(
                [
                    {"principal": "analyst", "sha256": sha256_hex(self.viewer_token), "roles": ["EventView"]},
                    {
                        "principal": "admin",
                        "sha256": sha256_hex(self.manager_token),
                        "roles": ["EventView", "Manager"],
                    },
                ]
            ),
        }
        if self.forwarder_config is not None:
            cfg = self.state_dir / "forwarder.toml"
            cfg.write_text(self.forwarder_config)
            env["AUDITPIPE_FORWARDER__CONFIG_FILE"] = str(cfg)
        env.update(self.extra_env)
        return env

    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env())
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def stack(self) -> Stack:
        return Stack(self.settings())

    # ------------------------------------------------------------------ lifecycle
    def up(self, timeout_s: float = 240.0) -> None:
        """Bring the stack up and migrate (idempotent)."""
        s = self.settings()
        stack = Stack(s)
        stack.set_nodes(self.kafka_nodes)
        stack.up(timeout_s=timeout_s)
        migrate(make_client(s), s.clickhouse_database)

    def start(self, wait_s: float = 120.0) -> None:
        """Start every service under the supervisor and wait until each answers /healthz."""
        env = dict(os.environ, **self.env())
        services = [s for s in self.services if s != "forwarder" or self.forwarder_config is not None]
        log = open(self.state_dir / "services.log", "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "run",
                "--services",
                ",".join(services),
                "--status-file",
                str(self.status_file),
                "--instances",
                ",".join(f"{k}={v}" for k, v in self.instances.items()),
                "--port-stride",
                str(self.port_stride),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_healthy(self.child_names(services), wait_s)

    def child_names(self, services: list[str] | None = None) -> list[str]:
        """Every child process's name: ``sink``, ``sink-2``, … (one per instance)."""
        services = services or [s for s in self.services if s != "forwarder" or self.forwarder_config]
        return [instance_name(s, i) for s in services for i in range(1, self.instances.get(s, 1) + 1)]

    @property
    def status_file(self) -> Path:
        return self.state_dir / "supervisor.json"

    def health_url(self, service: str, path: str = "/healthz") -> str:
        """Of a service's first instance (``sink``) or of instance i (``sink-2``)."""
        service, _, i = service.partition("-")
        port = (int(i) - 1 if i else 0) * self.port_stride + {
            "ingest": self.ports.ingest,
            "api": self.ports.api,
            "sink": self.ports.sink,
            "forwarder": self.ports.forwarder,
            "enricher": self.ports.enricher,
            "seal": self.ports.seal,
        }[service]
        return f"http://127.0.0.1:{port}{path}"

    def healthy(self, service: str, path: str = "/healthz") -> bool:
        try:
            with urllib.request.urlopen(self.health_url(service, path), timeout=2) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    def wait_healthy(self, services: list[str] | None = None, timeout_s: float = 120.0) -> float:
        """Seconds until every service answered; raises TimeoutError naming the laggards."""
        services = services or self.child_names()
        t0 = time.monotonic()
        while True:
            bad = [s for s in services if not self.healthy(s)]
            if not bad:
                return time.monotonic() - t0
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"supervisor exited with {self.proc.returncode}; see {self.state_dir}/services.log"
                )
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"not healthy after {timeout_s:.0f}s: {', '.join(bad)}")
            time.sleep(0.3)

    def child_pids(self) -> dict[str, int | None]:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v.get("pid") for k, v in data.items()}

    def kill9(self, service: str) -> int:
        pid = self.child_pids().get(service)
        if not pid:
            raise RuntimeError(f"{service} has no running process")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def down(self) -> None:
        self.stop()
        Stack(self.settings()).down()
