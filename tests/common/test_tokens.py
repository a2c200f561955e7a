"""The tokens file and the store the services read it through: hashed only, 0600, atomic and locked
writes, reload on change (and only on change), expiry, fail closed on a broken file, settings tokens
always kept."""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.common import tokens as T
from services.common.settings import IngestToken, QueryToken, load_settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ingest_record(secret: str, **over) -> T.StoredIngestToken:  # noqa: ANN003
    kw = dict(
        id=T.new_id(),
        producer="billing",
        orgs=["org-acme"],
        sha256=T.hash_secret(secret),
        created_at=NOW,
        created_by="alice",
    )
    kw.update(over)
    return T.StoredIngestToken(**kw)


def query_record(secret: str, **over) -> T.StoredQueryToken:  # noqa: ANN003
    kw = dict(
        id=T.new_id(),
        principal="bob",
        roles=["EventView"],
        org="org-acme",
        sha256=T.hash_secret(secret),
        created_at=NOW,
        created_by="alice",
    )
    kw.update(over)
    return T.StoredQueryToken(**kw)


def store_for(path: Path, **settings_over) -> T.TokenStore:  # noqa: ANN003
    s = load_settings().model_copy(update={"tokens_file": path, **settings_over})
    return T.TokenStore(s)


def test_secrets_are_random_prefixed_and_only_hashed_on_disk(tmp_path: Path) -> None:
    a, b = T.new_secret("ingest"), T.new_secret("query")
    assert a.startswith("api_ing_") and b.startswith("apq_") and len(a) > 40 and a != T.new_secret("ingest")
    path = tmp_path / "t" / "tokens.json"
    with T.locked(path) as content:
        content.tokens += [ingest_record(a), query_record(b)]
    text = path.read_text()
    assert a not in text and b not in text and T.hash_secret(a) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    back = T.read_file(path)
    assert [t.kind for t in back.tokens] == ["ingest", "query"]


def test_a_failed_change_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    with T.locked(path) as content:
        content.tokens.append(ingest_record("one"))
    before = path.read_bytes()
    with pytest.raises(RuntimeError), T.locked(path) as content:
        content.tokens.clear()
        raise RuntimeError("audit event not acknowledged")
    assert path.read_bytes() == before


def _append(path: str, n: int) -> None:
    for i in range(n):
        with T.locked(Path(path)) as content:
            content.tokens.append(ingest_record(f"{os.getpid()}-{i}"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append, args=(str(path), 10)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(T.read_file(path).tokens) == 40


def test_store_reloads_on_change_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    static = IngestToken(producer="from-settings", sha256=T.hash_secret("s"), orgs=["*"])
    store = store_for(path, ingest=load_settings().ingest.model_copy(update={"tokens": [static]}))
    assert [t.producer for t in store.ingest()] == ["from-settings"]  # no file yet: settings only
    rec = ingest_record("k")
    with T.locked(path) as content:
        content.tokens.append(rec)
    assert [t.producer for t in store.ingest()] == ["from-settings", "billing"]
    n = store.reloads
    for _ in range(100):
        store.ingest()
        store.query()
    assert store.reloads == n  # one stat per call, no parse while unchanged
    with T.locked(path) as content:
        content.tokens.append(query_record("q"))
    assert [t.principal for t in store.query()] == ["bob"]
    with T.locked(path) as content:
        content.tokens.clear()
    assert [t.producer for t in store.ingest()] == ["from-settings"] and store.query() == []


def test_expired_tokens_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    with T.locked(path) as content:
        content.tokens += [
            ingest_record("a", expires_at=NOW + timedelta(hours=1)),
            query_record("b", expires_at=NOW - timedelta(seconds=1)),
            query_record("c", principal="carol"),
        ]
    store = store_for(path)
    assert len(store.ingest(now=NOW)) == 1 and store.ingest(now=NOW + timedelta(hours=2)) == []
    assert [t.principal for t in store.query(now=NOW)] == ["carol"]


def test_a_broken_file_fails_closed_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    static = QueryToken(principal="ops", sha256=T.hash_secret("s"))
    store = store_for(path, query_api=load_settings().query_api.model_copy(update={"tokens": [static]}))
    with T.locked(path) as content:
        content.tokens.append(query_record("q"))
    assert len(store.query()) == 2
    caplog.set_level(logging.ERROR, logger="auditpipe.tokens")
    path.write_text('{"version": 1, "tokens": [{"kind": "query", "id": "nope"}]}')
    assert [t.principal for t in store.query()] == ["ops"]  # file tokens off, settings tokens kept
    assert "tokens file ignored" in caplog.text and "nope" not in caplog.text.split("ignored")[0]
    with pytest.raises(T.TokenFileError, match="not a valid tokens file"):
        T.read_file(path)
    path.unlink()
    with T.locked(path) as content:
        content.tokens.append(query_record("again"))
    assert len(store.query()) == 2


def test_loose_permissions_are_noticed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    with T.locked(path) as content:
        content.tokens.append(query_record("q"))
    assert not T.loose_permissions(path)
    path.chmod(0o644)
    assert T.loose_permissions(path)
