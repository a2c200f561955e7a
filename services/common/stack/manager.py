"""``auditpipe stack up | status | down``: Kafka (KRaft) from Maven Central and ClickHouse from chdb-core.

Layout under the state folder (default ``.stack/``)::

    kafka/server.properties  kafka/data/  kafka/logs/  kafka/stdout.log  kafka/pid  kafka/cluster.id
    kafka/nodes              (how many nodes the cluster was made with)
    kafka-2/ kafka-3/ …      (the other nodes of ``--kafka-nodes N``, laid out like kafka/)
    clickhouse/config.xml    clickhouse/data/  clickhouse/stdout.log  clickhouse/pid

With ``--kafka-nodes 3`` (setting ``stack.kafka_nodes``) three JVMs form one KRaft cluster, each node
broker and controller (static quorum of all nodes). Node i listens on the i-th address of
``kafka_bootstrap`` when it lists N addresses, else on the first port + 2(i-1); its controller on
``stack.kafka_controller_port`` + 2(i-1). From three nodes on, internal topics and new topics get
replication factor 3 and ``min.insync.replicas`` 2.

The Kafka jars are fetched once by Maven into ``<cache>/m2`` and copied to ``<cache>/kafka-<ver>/libs``;
later runs (and other clones on the machine) reuse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from services.common.kafka import ensure_topics, kafka_ready
from services.common.settings import Settings
from services.common.stack.process import alive, find_pid, port_open, read_pid, spawn, stop

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
    # the Kafka cluster row: partitions with fewer in-sync replicas than replicas
    under_replicated: int | None = None


@dataclass(frozen=True)
class KafkaNode:
    """One local Kafka node (broker + controller)."""

    node_id: int
    host: str
    port: int
    controller_port: int
    dir: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


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
        self.n_nodes = self._recorded_nodes() or settings.stack.kafka_nodes

    # ---------------------------------------------------------------- nodes
    def _recorded_nodes(self) -> int | None:
        try:
            return int((self.kdir / "nodes").read_text().strip())
        except (OSError, ValueError):
            return None

    def set_nodes(self, n: int) -> None:
        """Use ``n`` Kafka nodes (``stack up --kafka-nodes``); refuses to change a cluster that exists."""
        recorded = self._recorded_nodes()
        if recorded is None and (self.kdir / "data" / "meta.properties").exists():
            recorded = 1  # made before node counts were recorded: a single node
        if recorded is not None and recorded != n:
            raise StackError(
                f"the stack in {self.state} has {recorded} Kafka node(s); run `auditpipe stack down` and "
                f"remove {self.state}/kafka* to make one with {n}"
            )
        self.n_nodes = n

    def node(self, i: int) -> KafkaNode:
        """Node ``i`` (1-based) of the local cluster."""
        addrs = self.s.bootstrap_servers
        if len(addrs) >= self.n_nodes:
            host, port = addrs[i - 1].rsplit(":", 1)
            host, port_n = host.strip("[]"), int(port)
        else:
            host, port_n = self.kafka_host, self.s.kafka_port + 2 * (i - 1)
        cport = self.s.stack.kafka_controller_port + 2 * (i - 1)
        d = self.kdir if i == 1 else self.state / f"kafka-{i}"
        return KafkaNode(i, host, port_n, cport, d)

    @property
    def nodes(self) -> list[KafkaNode]:
        return [self.node(i) for i in range(1, self.n_nodes + 1)]

    @property
    def bootstrap(self) -> str:
        """The bootstrap list of every node (what clients of a cluster should be given)."""
        return ",".join(n.address for n in self.nodes)

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

    def _kafka_props(self, node: KafkaNode) -> str:
        n = self.n_nodes
        rf = min(3, n)
        min_isr = 2 if n >= 3 else 1
        voters = ",".join(f"{x.node_id}@{x.host}:{x.controller_port}" for x in self.nodes)
        return "\n".join(
            [
                "# written by auditpipe stack up; edit settings, not this file",
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
                f"advertised.listeners=PLAINTEXT://{node.host}:{node.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={node.dir / 'data'}",
                "num.partitions=6",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={rf}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                "unclean.leader.election.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                # 2-core box: few threads (fewer still when three JVMs share the cores); small socket
                # buffers are fine on loopback.
                f"num.network.threads={2 if n == 1 else 1}",
                f"num.io.threads={4 if n == 1 else 2}",
                f"background.threads={4 if n == 1 else 2}",
                "num.replica.fetchers=1",
                "log.retention.hours=168",
                "log.segment.bytes=268435456",
                "message.max.bytes=8388608",
                "replica.fetch.max.bytes=8388608",
                "",
            ]
        )

    def _cluster_id(self) -> str:
        cid_file = self.kdir / "cluster.id"
        if not cid_file.exists() or cid_file.read_text().startswith("-"):
            self.kdir.mkdir(parents=True, exist_ok=True)
            cid_file.write_text(new_cluster_id())
        return cid_file.read_text().strip()

    def _format_kafka(self, libs: Path, node: KafkaNode) -> None:
        data = node.dir / "data"
        if (data / "meta.properties").exists():
            return
        r = subprocess.run(
            [
                "java",
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={LOG4J}",
                f"-Dkafka.logs.dir={node.dir / 'logs'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self._cluster_id(),
                "-c",
                str(node.dir / "server.properties"),
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
        """Start every Kafka node that is not running."""
        (self.kdir).mkdir(parents=True, exist_ok=True)
        (self.kdir / "nodes").write_text(str(self.n_nodes))
        for node in self.nodes:
            self.node_up(node.node_id)

    def _node_pid(self, node: KafkaNode) -> int | None:
        """The pid of node ``node``'s JVM: its pid file's, else found by its command line (its own
        server.properties), and the pid file corrected. A start retried while the first JVM was still
        coming up once left the pid of a second JVM that failed to bind, and a stop then missed the
        live one."""
        pid = read_pid(node.dir / "pid")
        if alive(pid, KAFKA_MARKER):
            return pid
        pid = find_pid(KAFKA_MARKER, str(node.dir / "server.properties"))
        if pid is not None:
            (node.dir / "pid").write_text(str(pid))
        return pid

    def node_up(self, i: int) -> None:
        """Start Kafka node ``i`` unless it runs (its data, if any, is kept)."""
        node = self.node(i)
        if self._node_pid(node) is not None:
            return
        for port in (node.port, node.controller_port):
            if port_open(node.host, port):
                raise StackError(
                    f"port {port} is taken by another process; set AUDITPIPE_KAFKA_BOOTSTRAP / "
                    "AUDITPIPE_STACK__KAFKA_CONTROLLER_PORT"
                )
        libs = self.fetch_kafka()
        node.dir.mkdir(parents=True, exist_ok=True)
        (node.dir / "logs").mkdir(exist_ok=True)
        (node.dir / "server.properties").write_text(self.extras.apply(self._kafka_props(node)))
        self._format_kafka(libs, node)
        heap = self.s.stack.kafka_heap
        # Several JVMs on a small box: one GC thread each and few compiler threads.
        small = ["-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1", "-XX:CICompilerCount=2"]
        cmd = [
            "java",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *(small if self.n_nodes > 1 else []),
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={node.dir / 'logs'}",
            "-cp",
            f"{libs}/*",
            KAFKA_MARKER,
            str(node.dir / "server.properties"),
        ]
        spawn(cmd, cwd=node.dir, log_file=node.dir / "stdout.log", pid_file=node.dir / "pid")

    def node_pid(self, i: int) -> int | None:
        return self._node_pid(self.node(i))

    def kill_node(self, i: int, hard: bool = True) -> int | None:
        """Stop node ``i``: ``kill -9`` (``hard``) or SIGTERM with a deadline. Returns the pid it had."""
        pid = self.node_pid(i)
        if pid is None:
            return None
        if hard:
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not alive(pid, KAFKA_MARKER):
                    break
                time.sleep(0.05)
        else:
            stop(pid, KAFKA_MARKER, timeout_s=60.0)
        return pid

    def _node_settings(self, node: KafkaNode) -> Settings:
        return self.s.model_copy(update={"kafka_bootstrap": node.address})

    def node_status(self, node: KafkaNode) -> ComponentStatus:
        pid = self._node_pid(node)
        running = pid is not None
        healthy = running and asyncio.run(kafka_ready(self._node_settings(node), timeout_s=3.0))
        name = "kafka" if self.n_nodes == 1 else f"kafka-{node.node_id}"
        return ComponentStatus(
            name,
            node.address,
            healthy,
            self.s.stack.kafka_version if running else None,
            pid if running else None,
            (f"KRaft broker+controller node {node.node_id}" if running else "not running"),
        )

    def kafka_status(self) -> ComponentStatus:
        """Node 1 (the single-node stack) or, for a cluster, node 1's status; see :meth:`status`."""
        return self.node_status(self.node(1))

    async def _replication(self) -> tuple[int, int]:
        """(under-replicated, offline) partitions of every topic, as the cluster reports them."""
        bootstrap = self.bootstrap.split(",")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            topics = await asyncio.wait_for(admin.list_topics(), 5)
            desc = await asyncio.wait_for(admin.describe_topics(topics), 10)
        finally:
            await admin.close()
        urp = offline = 0
        for t in desc:
            for p in t.get("partitions", []):
                if p.get("leader", -1) < 0:
                    offline += 1
                if len(p.get("isr", [])) < len(p.get("replicas", [])):
                    urp += 1
        return urp, offline

    def cluster_status(self, nodes: list[ComponentStatus]) -> ComponentStatus:
        """The cluster as one row: healthy when every node is; under-replicated partitions counted."""
        urp: int | None = None
        detail = f"{sum(n.healthy for n in nodes)}/{len(nodes)} nodes up"
        try:
            urp, offline = asyncio.run(self._replication())
            detail += f", {urp} under-replicated, {offline} offline partitions"
        except Exception as e:  # noqa: BLE001 - status must answer whatever the cluster does
            detail += f", replication unknown ({type(e).__name__})"
        return ComponentStatus(
            "kafka",
            self.bootstrap,
            all(n.healthy for n in nodes),
            self.s.stack.kafka_version if any(n.pid for n in nodes) else None,
            None,
            detail,
            urp,
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
            st = self._components()
            if all(c.healthy for _, c in st):
                break
            for start, c in st:
                if c.pid is None and c.component not in retried:
                    # A JVM or server that died silently during start (seen rarely while other servers
                    # start on the same 2 cores) gets one more start; its data is intact.
                    retried.add(c.component)
                    start()
                    continue
                if c.pid is None:
                    d = self.cdir if c.component == "clickhouse" else self.node(_node_of(c.component)).dir
                    tail: list[str] = []
                    for log in (d / "stdout.log", d / "logs" / "server.log"):
                        if log.exists():
                            lines = log.read_text(errors="replace").strip().splitlines()
                            tail += [x for x in lines if "ERROR" in x or "Exception" in x][-2:] or lines[-2:]
                    raise StackError(f"{c.component} exited during start: " + " | ".join(tail)[:600])
            if time.monotonic() > deadline:
                bad = ", ".join(c.component for _, c in st if not c.healthy)
                raise StackError(f"timed out after {timeout_s:.0f}s waiting for {bad} to answer")
            time.sleep(0.5)
        asyncio.run(ensure_topics(self.s.model_copy(update={"kafka_bootstrap": self.bootstrap})))
        return self.status()

    def _components(self) -> list[tuple[Callable[[], None], ComponentStatus]]:
        out: list[tuple[Callable[[], None], ComponentStatus]] = [
            (lambda i=n.node_id: self.node_up(i), self.node_status(n)) for n in self.nodes
        ]
        return [*out, (self.ch_up, self.ch_status())]

    def status(self) -> list[ComponentStatus]:
        """Single node: [kafka, clickhouse]. A cluster: [kafka (the cluster), kafka-1…kafka-N, clickhouse]."""
        nodes = [self.node_status(n) for n in self.nodes]
        if self.n_nodes == 1:
            return [nodes[0], self.ch_status()]
        return [self.cluster_status(nodes), *nodes, self.ch_status()]

    def down(self) -> list[str]:
        """Stop every node and ClickHouse. The Kafka nodes get SIGTERM together: one after another, the
        last ones would wait for a controller quorum that is already gone."""
        msgs = []
        targets = [
            (f"kafka-{n.node_id}" if self.n_nodes > 1 else "kafka", n.dir, KAFKA_MARKER, self._node_pid(n))
            for n in self.nodes
        ]
        targets.append(("clickhouse", self.cdir, CH_MARKER, read_pid(self.cdir / "pid")))
        live = []
        for name, d, marker, pid in targets:
            if not alive(pid, marker):
                msgs.append(f"{name}: not running")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
            live.append((name, d, marker, pid))
        for name, d, marker, pid in live:
            killed = stop(pid, marker, timeout_s=45.0)
            msgs.append(f"{name}: stopped{' (killed after timeout)' if killed else ''}")
            (d / "pid").unlink(missing_ok=True)
        return msgs


def _node_of(component: str) -> int:
    return int(component.rsplit("-", 1)[1]) if "-" in component else 1


def status_dicts(st: list[ComponentStatus]) -> list[dict]:
    return [asdict(c) for c in st]
