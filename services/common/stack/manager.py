"""``auditpipe stack up | status | down``: Kafka (KRaft) from Maven Central and ClickHouse from chdb-core.

Layout under the state folder (default ``.stack/``)::

    kafka/server.properties  kafka/data/  kafka/logs/  kafka/stdout.log  kafka/pid  kafka/cluster.id
    clickhouse/config.xml    clickhouse/data/  clickhouse/stdout.log  clickhouse/pid

The Kafka jars are fetched once by Maven into ``<cache>/m2`` and copied to ``<cache>/kafka-<ver>/libs``;
later runs (and other clones on the machine) reuse them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.common.kafka import ensure_topics, kafka_ready
from services.common.settings import Settings
from services.common.stack.process import alive, port_open, read_pid, spawn, stop

# Readiness polling expects refused connections while the broker starts; aiokafka logs each one.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

REPO = Path(__file__).resolve().parents[3]
POM = REPO / "deploy" / "local" / "kafka" / "pom.xml"
LOG4J = REPO / "deploy" / "local" / "kafka" / "log4j2.properties"
KAFKA_MARKER = "kafka.Kafka"
CH_MARKER = "services.common.stack.ch_server"


class StackError(Exception):
    """A one-line reason the stack could not be brought up."""


@dataclass
class ComponentStatus:
    component: str
    address: str
    healthy: bool
    version: str | None
    pid: int | None
    detail: str = ""


@dataclass(frozen=True)
class KafkaExtras:
    """Additions to the local broker for a private, secured stack (tests of TLS, SASL and ACLs); the
    default stack has none.

    ``properties`` replace or add ``server.properties`` keys (e.g. ``listeners``,
    ``listener.security.protocol.map``, ``authorizer.class.name``); ``scram_users`` are
    ``(mechanism, user, password)`` written into the metadata when storage is formatted
    (``kafka-storage format --add-scram``), so SCRAM works before the broker first starts.
    """

    properties: dict[str, str] = field(default_factory=dict)
    scram_users: tuple[tuple[str, str, str], ...] = ()

    def apply(self, props: str) -> str:
        """``props`` with every key of :attr:`properties` replaced (same place) or appended."""
        todo = dict(self.properties)
        out = []
        for line in props.splitlines():
            key = line.split("=", 1)[0].strip()
            if not line.startswith("#") and "=" in line and key in todo:
                line = f"{key}={todo.pop(key)}"
            out.append(line)
        out = [x for x in out if x] + [f"{k}={v}" for k, v in todo.items()]
        return "\n".join(out) + "\n"

    def format_args(self) -> list[str]:
        return [a for m, u, pw in self.scram_users for a in ("--add-scram", f"{m}=[name={u},password={pw}]")]


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Never one starting with '-': kafka-storage's argument parser reads ``-t -abc…`` as a missing value
    ("argument --cluster-id/-t: expected one argument"), which failed 1 start in 64 (Kafka's own
    Uuid.randomUuid avoids such ids for the same reason).
    """
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class Stack:
    def __init__(self, settings: Settings, extras: KafkaExtras | None = None) -> None:
        self.s = settings
        self.extras = extras or KafkaExtras()
        self.state = Path(settings.stack.state_dir).resolve()
        self.cache = Path(settings.stack.cache_dir).expanduser().resolve()
        self.kdir = self.state / "kafka"
        self.cdir = self.state / "clickhouse"
        self.kafka_host = settings.bootstrap_servers[0].rsplit(":", 1)[0].strip("[]")

    # ---------------------------------------------------------------- Kafka
    @property
    def kafka_libs(self) -> Path:
        return self.cache / f"kafka-{self.s.stack.kafka_version}" / "libs"

    def fetch_kafka(self) -> Path:
        libs = self.kafka_libs
        if (libs / ".complete").exists():
            return libs
        if shutil.which("mvn") is None:
            raise StackError("Maven (mvn) is not installed: it is needed to fetch Kafka from Maven Central")
        tmp = libs.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(POM),
            f"-Dmaven.repo.local={self.cache / 'm2'}",
            f"-Dkafka.version={self.s.stack.kafka_version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        print(
            f"fetching Apache Kafka {self.s.stack.kafka_version} from Maven Central (cached in {self.cache})"
        )
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip().splitlines()[-5:]
            raise StackError("maven could not fetch Kafka: " + " | ".join(tail))
        # slf4j 1.x can sneak in through a transitive dependency; the pom pins 2.x, drop the rest.
        for old in tmp.glob("slf4j-api-1.*.jar"):
            old.unlink()
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (libs / ".complete").write_text(self.s.stack.kafka_version)
        return libs

    def _kafka_props(self) -> str:
        port = self.s.kafka_port
        cport = self.s.stack.kafka_controller_port
        h = self.kafka_host
        return "\n".join(
            [
                "# written by auditpipe stack up; edit settings, not this file",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{h}:{cport}",
                f"listeners=PLAINTEXT://{h}:{port},CONTROLLER://{h}:{cport}",
                f"advertised.listeners=PLAINTEXT://{h}:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self.kdir / 'data'}",
                "num.partitions=6",
                "default.replication.factor=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                # 2-core box: few threads, small socket buffers are fine on loopback.
                "num.network.threads=2",
                "num.io.threads=4",
                "background.threads=4",
                "log.retention.hours=168",
                "log.segment.bytes=268435456",
                "message.max.bytes=8388608",
                "",
            ]
        )

    def _format_kafka(self, libs: Path) -> None:
        data = self.kdir / "data"
        if (data / "meta.properties").exists():
            return
        cid_file = self.kdir / "cluster.id"
        if not cid_file.exists() or cid_file.read_text().startswith("-"):
            cid_file.write_text(new_cluster_id())
        r = subprocess.run(
            [
                "java",
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={LOG4J}",
                f"-Dkafka.logs.dir={self.kdir / 'logs'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cid_file.read_text().strip(),
                "-c",
                str(self.kdir / "server.properties"),
                "--ignore-formatted",
                *self.extras.format_args(),
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise StackError(
                "kafka storage format failed: " + (r.stderr or r.stdout).strip().splitlines()[-1]
            )

    def kafka_up(self) -> None:
        pid = read_pid(self.kdir / "pid")
        if alive(pid, KAFKA_MARKER):
            return
        if port_open(self.kafka_host, self.s.kafka_port):
            raise StackError(
                f"port {self.s.kafka_port} is taken by another process; set AUDITPIPE_KAFKA_BOOTSTRAP"
            )
        libs = self.fetch_kafka()
        self.kdir.mkdir(parents=True, exist_ok=True)
        (self.kdir / "logs").mkdir(exist_ok=True)
        (self.kdir / "server.properties").write_text(self.extras.apply(self._kafka_props()))
        self._format_kafka(libs)
        heap = self.s.stack.kafka_heap
        cmd = [
            "java",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={self.kdir / 'logs'}",
            "-cp",
            f"{libs}/*",
            KAFKA_MARKER,
            str(self.kdir / "server.properties"),
        ]
        spawn(cmd, cwd=self.kdir, log_file=self.kdir / "stdout.log", pid_file=self.kdir / "pid")

    def kafka_status(self) -> ComponentStatus:
        pid = read_pid(self.kdir / "pid")
        running = alive(pid, KAFKA_MARKER)
        healthy = running and asyncio.run(kafka_ready(self.s, timeout_s=3.0))
        return ComponentStatus(
            "kafka",
            self.s.kafka_bootstrap,
            healthy,
            self.s.stack.kafka_version if running else None,
            pid if running else None,
            "KRaft broker+controller" if running else "not running",
        )

    # ----------------------------------------------------------- ClickHouse
    def ch_up(self) -> None:
        pid = read_pid(self.cdir / "pid")
        if alive(pid, CH_MARKER):
            return
        host, port = self.s.clickhouse_host, self.s.clickhouse_port
        if port_open(host, port):
            raise StackError(f"port {port} is taken by another process; set AUDITPIPE_CLICKHOUSE_URL")
        (self.cdir / "data").mkdir(parents=True, exist_ok=True)
        (self.cdir / "config.xml").write_text(
            "<clickhouse>\n"
            f"  <listen_host>{host}</listen_host>\n"
            f"  <http_port>{port}</http_port>\n"
            "  <max_concurrent_queries>100</max_concurrent_queries>\n"
            "</clickhouse>\n"
        )
        cmd = [sys.executable, "-m", CH_MARKER, "--data", str(self.cdir / "data")]
        import os

        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        spawn(cmd, cwd=self.cdir, log_file=self.cdir / "stdout.log", pid_file=self.cdir / "pid", env=env)

    def ch_version(self, timeout_s: float = 2.0) -> str | None:
        url = f"{self.s.clickhouse_url}/?query=SELECT%20version()"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - our own loopback URL
                return r.read().decode().strip()
        except OSError:
            return None

    def ch_status(self) -> ComponentStatus:
        pid = read_pid(self.cdir / "pid")
        running = alive(pid, CH_MARKER)
        version = self.ch_version() if running else None
        return ComponentStatus(
            "clickhouse",
            self.s.clickhouse_url,
            version is not None,
            version,
            pid if running else None,
            "chdb-core clickhouse-local serving HTTP" if running else "not running",
        )

    # ------------------------------------------------------------- lifecycle
    def up(self, timeout_s: float = 120.0) -> list[ComponentStatus]:
        self.state.mkdir(parents=True, exist_ok=True)
        self.ch_up()
        self.kafka_up()
        deadline = time.monotonic() + timeout_s
        retried: set[str] = set()
        while True:
            st = self.status()
            if all(c.healthy for c in st):
                break
            for c in st:
                if c.pid is None and c.component not in retried:
                    # A JVM or server that died silently during start (seen rarely while other servers
                    # start on the same 2 cores) gets one more start; its data is intact.
                    retried.add(c.component)
                    (self.kafka_up if c.component == "kafka" else self.ch_up)()
                    continue
                if c.pid is None:
                    d = self.kdir if c.component == "kafka" else self.cdir
                    tail: list[str] = []
                    for log in (d / "stdout.log", d / "logs" / "server.log"):
                        if log.exists():
                            lines = log.read_text(errors="replace").strip().splitlines()
                            tail += [x for x in lines if "ERROR" in x or "Exception" in x][-2:] or lines[-2:]
                    raise StackError(f"{c.component} exited during start: " + " | ".join(tail)[:600])
            if time.monotonic() > deadline:
                bad = ", ".join(c.component for c in st if not c.healthy)
                raise StackError(f"timed out after {timeout_s:.0f}s waiting for {bad} to answer")
            time.sleep(0.5)
        asyncio.run(ensure_topics(self.s))
        return self.status()

    def status(self) -> list[ComponentStatus]:
        return [self.kafka_status(), self.ch_status()]

    def down(self) -> list[str]:
        msgs = []
        for name, d, marker in (("kafka", self.kdir, KAFKA_MARKER), ("clickhouse", self.cdir, CH_MARKER)):
            pid = read_pid(d / "pid")
            if not alive(pid, marker):
                msgs.append(f"{name}: not running")
                continue
            killed = stop(pid, marker, timeout_s=45.0)
            msgs.append(f"{name}: stopped{' (killed after timeout)' if killed else ''}")
            (d / "pid").unlink(missing_ok=True)
        return msgs


def status_dicts(st: list[ComponentStatus]) -> list[dict]:
    return [asdict(c) for c in st]
