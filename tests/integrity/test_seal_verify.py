"""Sealing and verification against the real ClickHouse and Kafka: an untouched store verifies clean;
each tampering made directly on ClickHouse, the digest files or the archives is reported precisely."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.digests_v1 import merkle_root, record_bytes, signing_bytes
from services.common.audit_events import AuditPublisher
from services.common.clickhouse import make_client
from services.common.settings import Settings
from services.integrity import files as digest_files
from services.integrity import store
from services.integrity.keys import key_id
from services.integrity.rules import (
    ALTERED,
    DELETED,
    FORGED,
    INSERTED,
    MEMBERSHIP,
    MISSING_DIGEST,
    MISSING_NEWEST,
    Report,
    align_down,
)
from services.integrity.seal import seal_once
from services.integrity.topic import read_digests
from services.integrity.verify import verify
from tests.integrity.helpers import insert, integrity_settings, record

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

NOW = datetime.now(UTC)


async def seal(s: Settings) -> None:
    pub = AuditPublisher(s, s.integrity.audit_topic)
    try:
        await seal_once(s, pub)
    finally:
        await pub.close()


async def check(s: Settings, **kw) -> Report:  # noqa: ANN003
    records = await read_digests(s)
    return await asyncio.to_thread(verify, s, records, **kw)


def kinds(rep: Report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in rep.findings:
        out.setdefault(f.kind, set()).add(f.event_id or f.window_start or f.org_id)
    return out


def eid(value: bytes) -> str:
    return orjson.loads(value)["event_id"]


@pytest.fixture
async def sealed(ch_settings, topic_names, tmp_path) -> tuple[Settings, dict[str, list[bytes]]]:  # noqa: ANN001
    """Two orgs, events stored over three minutes (60 s windows), a redelivered copy, then sealed."""
    topics = topic_names("audit.digests.v1", "audit.raw.v1")
    s = integrity_settings(ch_settings, topics, tmp_path)
    batches: dict[str, list[bytes]] = {}
    for minute in (9, 7, 6):
        vals = [record(i, org=f"org-{i % 2}") for i in range(minute * 10, minute * 10 + 12)]
        insert(s, vals, NOW - timedelta(minutes=minute))
        batches[f"m{minute}"] = vals
    insert(s, batches["m9"][:2], NOW - timedelta(minutes=8))  # redelivered copies, stored later
    await seal(s)
    return s, batches


async def test_untouched_store_verifies_clean_and_copies_and_late_events_change_no_sealed_window(
    sealed,
) -> None:  # noqa: ANN001
    s, batches = sealed
    rep = await check(s)
    assert rep.ok, rep.to_dict()
    assert rep.events == 36 and rep.orgs == 2 and rep.windows >= 8
    assert rep.digests["topic"] == rep.digests["files"] == rep.digests["clickhouse"] == rep.windows
    client = make_client(s)
    db = s.clickhouse_database
    before = client.query(
        f"SELECT event_id, window_start FROM {db}.sealed_events ORDER BY event_id"
    ).result_rows
    # after sealing: redelivered copies of sealed events, and an event that happened 30 days ago
    insert(s, batches["m7"][:3])
    late = record(1, org="org-1", occurred_at=NOW - timedelta(days=30))
    insert(s, [late])
    rep = await check(s)
    assert rep.ok, rep.to_dict()
    assert rep.pending == 4  # newer than the sealed end: counted, not wrong
    # seal again with 2 s windows (the window length may change between runs)
    s = s.model_copy(update={"integrity": s.integrity.model_copy(update={"window_s": 2})})
    await asyncio.sleep(3.5)
    await seal(s)
    after = client.query(
        f"SELECT event_id, window_start FROM {db}.sealed_events WHERE event_id != {{e:UUID}} "
        "ORDER BY event_id",
        parameters={"e": eid(late)},
    ).result_rows
    assert after == before  # copies stored later never move an event to a later window
    rep = await check(s)
    assert rep.ok and rep.events == 37 and rep.pending == 0, rep.to_dict()


async def test_clickhouse_merkle_roots_equal_the_reference_implementation(sealed) -> None:  # noqa: ANN001
    s, _ = sealed
    client = make_client(s)
    roots = store.window_roots(client, s.clickhouse_database, None, None, None)
    assert roots
    for (org, ws), r in roots.items():
        rows = client.query(
            f"SELECT toString(event_id), toString(content_hash) FROM {s.clickhouse_database}.sealed_events "
            "WHERE org_id = {o:String} AND window_start = {w:DateTime64(3, 'UTC')} "
            "ORDER BY toString(event_id)",
            parameters={"o": org, "w": ws},
        ).result_rows
        assert r.count == len(rows) and r.root == merkle_root([h for _, h in rows])


async def test_a_changed_field_of_one_stored_event_is_reported_with_its_id(sealed) -> None:  # noqa: ANN001
    s, batches = sealed
    db = s.clickhouse_database
    client = make_client(s)
    victim, other = eid(batches["m7"][4]), eid(batches["m6"][5])
    # the record itself: a new actor name inside event_json
    client.command(
        f'ALTER TABLE {db}.events UPDATE event_json = replaceOne(event_json, \'"change":"change \', '
        f'\'"change":"Mallory changed \') WHERE event_id = {{e:UUID}} SETTINGS mutations_sync = 2',
        parameters={"e": victim},
    )
    # only a column the listing shows
    client.command(
        f"ALTER TABLE {db}.events UPDATE status = 500 WHERE event_id = {{e:UUID}} "
        "SETTINGS mutations_sync = 2",
        parameters={"e": other},
    )
    rep = await check(s)
    assert not rep.ok
    assert kinds(rep) == {ALTERED: {victim, other}}, rep.to_dict()
    details = {f.event_id: f.detail for f in rep.findings}
    assert "re-hash" in details[victim] and "status" in details[other]
    assert all(f.window_start for f in rep.findings)


async def test_a_fake_event_with_a_self_consistent_hash_is_reported_as_inserted(sealed) -> None:  # noqa: ANN001
    s, _ = sealed
    fake = record(
        3, org="org-1", actor={"type": "user", "id": "u-1", "name": "Alice"}, change="granted admin"
    )
    doc = orjson.loads(fake)
    body = fake.replace(b',"content_hash":"' + doc["content_hash"].encode() + b'"', b"")
    assert hashlib.sha256(body).hexdigest() == doc["content_hash"]  # it re-hashes correctly on its own
    t_fake = NOW - timedelta(minutes=7, seconds=-5)
    insert(s, [fake], t_fake)  # hidden among already sealed rows
    older = record(4, org="org-1", occurred_at=NOW - timedelta(days=3))
    insert(s, [older], NOW - timedelta(days=1))  # "stored" before the org's first window
    rep = await check(s)
    assert kinds(rep) == {INSERTED: {doc["event_id"], eid(older)}}, rep.to_dict()
    assert {f.org_id for f in rep.findings} == {"org-1"}
    # a verification of a later range (whole windows after the fake's) does not look at them
    rep = await check(
        s, since=align_down(t_fake, s.integrity.window_s) + timedelta(seconds=s.integrity.window_s)
    )
    assert rep.ok, rep.to_dict()


async def test_one_deleted_event_is_reported_with_its_id(sealed) -> None:  # noqa: ANN001
    s, batches = sealed
    gone = eid(batches["m6"][7])
    make_client(s).command(
        f"DELETE FROM {s.clickhouse_database}.events WHERE event_id = {{e:UUID}}", parameters={"e": gone}
    )
    rep = await check(s)
    assert kinds(rep) == {DELETED: {gone}}, rep.to_dict()


async def test_the_newest_windows_events_and_digest_file_deleted_are_caught_from_the_topic(sealed) -> None:  # noqa: ANN001
    s, batches = sealed
    db = s.clickhouse_database
    client = make_client(s)
    org = "org-0"
    newest = client.query(
        f"SELECT max(window_start) FROM {db}.sealed_events WHERE org_id = {{o:String}}", parameters={"o": org}
    ).result_rows[0][0]
    ids = [
        str(r[0])
        for r in client.query(
            f"SELECT event_id FROM {db}.sealed_events WHERE org_id = {{o:String}} "
            "AND window_start = {w:DateTime64(3, 'UTC')}",
            parameters={"o": org, "w": newest},
        ).result_rows
    ]
    assert ids
    # the attacker removes the window's rows, its sealed membership, its digest row and the digest file
    for table in ("events", "sealed_events"):
        client.command(
            f"DELETE FROM {db}.{table} WHERE org_id = {{o:String}} AND event_id IN {{ids:Array(UUID)}}",
            parameters={"o": org, "ids": ids},
        )
    client.command(
        f"DELETE FROM {db}.digests WHERE org_id = {{o:String}} "
        "AND window_start >= {w:DateTime64(3, 'UTC')}",
        parameters={"o": org, "w": newest},
    )
    for p in digest_files.root(s).rglob("digests-*.jsonl"):
        if p.parent.name == org:
            p.unlink()
    rep = await check(s)
    k = kinds(rep)
    assert MISSING_NEWEST in k, rep.to_dict()
    assert {f.source for f in rep.findings if f.kind == MISSING_NEWEST} == {"files", "clickhouse"}
    assert MEMBERSHIP in k  # the signed window still says len(ids) events
    window = next(f for f in rep.findings if f.kind == MEMBERSHIP)
    assert window.org_id == org and f"says {len(ids)}" in window.detail
    assert not rep.ok


def _newest_file_line(s: Settings) -> tuple[Path, bytes]:
    """The digest file holding the newest digest of org-0, and that digest's line."""
    best: tuple[int, Path, bytes] | None = None
    for p, line in digest_files.read_all(digest_files.root(s), "org-0"):
        seq = orjson.loads(line)["sequence"]
        if best is None or seq > best[0]:
            best = (seq, p, line)
    assert best is not None
    return best[1], best[2]


async def test_a_verification_during_a_publication_waits_for_it_instead_of_reporting_it(sealed) -> None:  # noqa: ANN001
    """The sealer stores a digest in ClickHouse, then the topic, then the files. A verification that reads
    the files before the digest reaches them re-reads them and reports nothing once it has arrived."""
    s, _ = sealed
    s = s.model_copy(update={"integrity": s.integrity.model_copy(update={"verify_publication_wait_s": 30.0})})
    path, line = _newest_file_line(s)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(x for x in lines if x != line))  # the files lag one digest behind

    async def publish_late() -> None:
        await asyncio.sleep(1.5)
        with path.open("ab") as f:  # the sealer reaches the files
            f.write(line + b"\n")

    started = asyncio.get_running_loop().time()
    rep, _ = await asyncio.gather(check(s), publish_late())
    waited = asyncio.get_running_loop().time() - started
    assert rep.ok, rep.to_dict()
    assert 1.5 <= waited < 30, waited  # it waited for that digest, not for the whole allowance


async def test_a_topic_read_before_the_newest_digest_reached_it_is_read_again(sealed) -> None:  # noqa: ANN001
    s, _ = sealed
    records = await read_digests(s)
    newest = max(records, key=lambda r: (orjson.loads(r)["org_id"] == "org-0", orjson.loads(r)["sequence"]))
    early = [r for r in records if r != newest]  # what a verification that read the topic too early saw
    rep = await asyncio.to_thread(verify, s, early, reread_topic=lambda: records)
    assert rep.ok, rep.to_dict()
    # without a way to read the topic again, the gap is not explained away: reported after the wait
    rep = await asyncio.to_thread(verify, s, early)
    assert kinds(rep).get(MISSING_NEWEST) and {f.source for f in rep.findings} == {"topic"}, rep.to_dict()
    # a topic that cannot be read again (broker away) explains nothing either

    def broken() -> list[bytes]:
        raise ConnectionError("broker away")

    rep = await asyncio.to_thread(verify, s, early, reread_topic=broken)
    assert {f.kind for f in rep.findings} == {MISSING_NEWEST}, rep.to_dict()
    assert "still missing after" in rep.findings[0].detail


async def test_a_digest_edited_and_resigned_with_another_key_is_a_forged_signature(sealed) -> None:  # noqa: ANN001
    s, _ = sealed
    db = s.clickhouse_database
    client = make_client(s)
    rec_raw, ws = client.query(
        f"SELECT record, window_start FROM {db}.digests WHERE org_id = 'org-1' AND event_count > 0 "
        "ORDER BY window_start LIMIT 1"
    ).result_rows[0]
    rec = orjson.loads(rec_raw)
    mallory = Ed25519PrivateKey.generate()
    forged = {**rec, "event_count": rec["event_count"] - 1, "key_id": key_id(mallory.public_key())}
    forged["signature"] = base64.b64encode(mallory.sign(signing_bytes(forged))).decode()
    # and one that claims the real key id
    claimed = {**rec, "event_count": rec["event_count"] - 1}
    claimed["signature"] = base64.b64encode(mallory.sign(signing_bytes(claimed))).decode()
    client.command(
        f"ALTER TABLE {db}.digests UPDATE record = {{r:String}} WHERE org_id = 'org-1' "
        "AND window_start = {w:DateTime64(3, 'UTC')} SETTINGS mutations_sync = 2",
        parameters={"r": record_bytes(forged).decode(), "w": ws},
    )
    for p in digest_files.root(s).rglob("digests-*.jsonl"):
        text = p.read_bytes()
        if rec_raw.encode() in text:
            p.write_bytes(text.replace(rec_raw.encode(), record_bytes(claimed)))
    rep = await check(s)
    forged_f = [f for f in rep.findings if f.kind == FORGED]
    assert {f.source for f in forged_f} == {"clickhouse", "files"}, rep.to_dict()
    assert any("unknown key" in f.detail for f in forged_f) and any(
        "does not verify" in f.detail for f in forged_f
    )
    assert all(f.org_id == "org-1" and f.window_start == rec["window_start"] for f in forged_f)
    missing = {f.source for f in rep.findings if f.kind == MISSING_DIGEST}
    assert missing == {"clickhouse", "files"}  # the genuine digest, still on the topic, is gone from both


async def test_archive_and_delete_verifies_clean_and_an_edited_day_file_is_caught(
    ch_settings, topic_names, tmp_path
) -> None:  # noqa: ANN001
    from services.archive.job import run_archive

    topics = topic_names("audit.digests.v1", "audit.raw.v1")
    s = integrity_settings(ch_settings, topics, tmp_path)
    s = s.model_copy(update={"retention": s.retention.model_copy(update={"default_days": 30})})
    old_day = (NOW - timedelta(days=40)).replace(hour=10)
    old = [record(i, org="org-arch", occurred_at=old_day + timedelta(minutes=i)) for i in range(20)]
    recent = [record(i, org="org-arch") for i in range(5)]
    insert(s, old + recent, NOW - timedelta(minutes=9))
    await seal(s)
    files = (await asyncio.to_thread(run_archive, s, "system", NOW)).files
    assert [f.rows for f in files] == [20]
    rep = await check(s)
    assert rep.ok and rep.events == 25, rep.to_dict()
    path = Path(s.retention.archive_dir) / files[0].file
    lines = path.read_bytes().split(b"\n")
    victim = eid(lines[3])
    lines[3] = lines[3].replace(b'"status":200', b'"status":201')
    dropped = eid(lines[8])
    del lines[8]
    path.write_bytes(b"\n".join(lines))
    rep = await check(s)
    assert kinds(rep) == {ALTERED: {victim}, DELETED: {dropped}}, rep.to_dict()
    altered = next(f for f in rep.findings if f.kind == ALTERED)
    assert altered.source == f"archive:{files[0].file}"


async def test_archive_never_deletes_rows_stored_after_the_sealed_horizon(
    ch_settings, topic_names, tmp_path
) -> None:  # noqa: ANN001
    from services.archive.job import run_archive

    topics = topic_names("audit.digests.v1", "audit.raw.v1")
    s = integrity_settings(ch_settings, topics, tmp_path)
    s = s.model_copy(update={"retention": s.retention.model_copy(update={"default_days": 30})})
    day = (NOW - timedelta(days=40)).replace(hour=10)
    insert(s, [record(1, org="org-h", occurred_at=day)], NOW - timedelta(minutes=30))
    await seal(s)
    insert(s, [record(2, org="org-h", occurred_at=day)], NOW - timedelta(minutes=10))  # after the horizon
    # sealing reached 20 minutes ago (say the sealer stopped then)
    client = make_client(s)
    client.command(f"TRUNCATE TABLE {s.clickhouse_database}.seal_runs")
    store.record_run(client, s.clickhouse_database, NOW - timedelta(minutes=20), 0, 0)
    rep = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert [f.rows for f in rep.files] == [1]  # only the sealed row left ClickHouse
    n = make_client(s).query(f"SELECT count() FROM {s.clickhouse_database}.events").result_rows[0][0]
    assert n == 1


async def test_a_crash_after_storing_digests_republishes_the_same_digests(
    ch_settings, topic_names, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    from services.integrity import seal as seal_mod

    topics = topic_names("audit.digests.v1", "audit.raw.v1")
    s = integrity_settings(ch_settings, topics, tmp_path)
    insert(s, [record(i, org="org-c") for i in range(10)], NOW - timedelta(minutes=5))
    real = seal_mod.topic.publish

    async def broken(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise ConnectionError("broker gone")

    monkeypatch.setattr(seal_mod.topic, "publish", broken)
    with pytest.raises(ConnectionError):
        await seal(s)
    stored = store.digest_records(make_client(s), s.clickhouse_database)
    assert stored and await read_digests(s) == []
    monkeypatch.setattr(seal_mod.topic, "publish", real)
    await seal(s)
    on_topic = await read_digests(s)
    assert on_topic[: len(stored)] == stored  # the same bytes, not a second digest for those windows
    rep = await check(s)
    assert rep.ok, rep.to_dict()


async def test_cli_verify_exit_codes_json_and_keys(sealed, monkeypatch, capsys) -> None:  # noqa: ANN001
    from services.cli import main
    from services.common.settings import get_settings

    s, batches = sealed
    env = {
        "AUDITPIPE_CLICKHOUSE_DATABASE": s.clickhouse_database,
        "AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE": str(s.integrity.signing_key_file),
        "AUDITPIPE_INTEGRITY__DIGEST_TOPIC": s.integrity.digest_topic,
        "AUDITPIPE_INTEGRITY__WINDOW_S": str(s.integrity.window_s),
        "AUDITPIPE_RETENTION__ARCHIVE_DIR": str(s.retention.archive_dir),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        code = await asyncio.to_thread(main, ["verify"])
        out = capsys.readouterr().out.strip().splitlines()
        assert code == 0 and out[-1].startswith("integrity OK"), out
        gone = eid(batches["m9"][1])
        make_client(s).command(
            f"DELETE FROM {s.clickhouse_database}.events WHERE event_id = {{e:UUID}}", parameters={"e": gone}
        )
        code = await asyncio.to_thread(main, ["verify", "--json", "--org", "org-1"])
        data = orjson.loads(capsys.readouterr().out)
        assert code == 1 and data["ok"] is False and data["counts"] == {"deleted_event": 1}
        assert data["findings"][0]["event_id"] == gone
        code = await asyncio.to_thread(main, ["verify", "--org", "org-0"])
        assert code == 0  # the other org is intact
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["integrity", "keys"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("ed25519:") and "signing" in out and "PRIVATE" not in out
    finally:
        get_settings.cache_clear()
