"""Shared fixtures. Tests marked ``kafka``/``clickhouse`` talk to the real local stack (``make test``
brings it up); they fail, never skip, when it is down.

Isolation: tests share one broker and one server, so each test gets its own topics (unique names) and
its own ClickHouse database (``test_<hex>``) through the fixtures below.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from schemas.topics import TopicSpec, load_topics
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics, kafka_ready
from services.common.migrations import migrate
from services.common.settings import Settings, load_settings

_VERSIONS_PRINTED: set[str] = set()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Show which real servers the integration tests talk to (versions as the servers report them)."""
    from services.common.stack.manager import Stack

    try:
        s = load_settings()
        st = Stack(s)
        k, c = st.kafka_status(), st.ch_status()
        return [
            f"kafka: {s.kafka_bootstrap} healthy={k.healthy} version={k.version} (Apache Kafka jars, KRaft)",
            f"clickhouse: {s.clickhouse_url} healthy={c.healthy} version={c.version}",
        ]
    except Exception as e:  # noqa: BLE001
        return [f"stack status unavailable: {e}"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def kafka_settings(settings: Settings) -> Settings:
    ok = run_sync(kafka_ready(settings, timeout_s=10))
    if not ok:
        pytest.fail(f"Kafka is not reachable at {settings.kafka_bootstrap}: run `auditpipe stack up`")
    return settings


@pytest.fixture(scope="session")
def clickhouse_settings(settings: Settings) -> Settings:
    try:
        make_client(settings).command("SELECT 1")
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"ClickHouse is not reachable at {settings.clickhouse_url}: {e}")
    return settings


def run_sync(coro):  # noqa: ANN001, ANN201
    """Run a coroutine to completion from sync code, even inside a running loop (fixtures of async tests)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_names(kafka_settings: Settings) -> Callable[..., dict[str, str]]:
    """Create fresh copies of the contract topics (same partitions) and return {logical: real name}."""

    def make(*logical: str, partitions: int | None = None) -> dict[str, str]:
        specs = load_topics()
        suffix = uuid.uuid4().hex[:8]
        out: dict[str, str] = {}
        new = []
        for name in logical:
            base = specs.get(name)
            real = f"test.{name}.{suffix}"
            out[name] = real
            new.append(
                TopicSpec(
                    name=real,
                    partitions=partitions or (base.partitions if base else 3),
                    replication_factor=1,
                    retention_ms=base.retention_ms if base else 86_400_000,
                    compression="producer",
                    producers=[],
                    consumers=[],
                    schema=base.schema if base else "",
                )
            )
        run_sync(ensure_topics(kafka_settings, new))
        return out

    return make


@pytest.fixture
def ch_database(clickhouse_settings: Settings) -> Iterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    db = unique("test")
    client = make_client(clickhouse_settings)
    migrate(client, db)
    yield db
    client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


@pytest.fixture
def ch_settings(clickhouse_settings: Settings, ch_database: str) -> Settings:
    return clickhouse_settings.model_copy(update={"clickhouse_database": ch_database})


@pytest.fixture
async def aio_noop() -> AsyncIterator[None]:
    yield None
