"""Retention archives against the real ClickHouse and Kafka (seeds 001-003)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.archive.files import list_archives
from services.archive.job import delete_archive, run_archive
from services.archive.rules import ArchiveError
from services.common.clickhouse import make_client
from tests.sink.helpers import count, enriched, insert_events, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
LONG_AGO = NOW - timedelta(days=2)  # inserted_at: older than the run's snapshot


def _settings(ch_settings, tmp_path, topics, gz: bool = False, **ret):  # noqa: ANN001, ANN003, ANN202
    r = ch_settings.retention.model_copy(
        update={
            "archive_dir": tmp_path / "archives",
            "archive_gzip": gz,
            "audit_topic": topics["audit.raw.v1"],
            **ret,
        }
    )
    return ch_settings.model_copy(update={"retention": r})


def _day(days_ago: int, hour: int = 10) -> datetime:
    d = NOW - timedelta(days=days_ago)
    return d.replace(hour=hour)


def _set_retention(s, org: str, days: int) -> None:  # noqa: ANN001
    make_client(s).insert(
        f"{s.clickhouse_database}.org_settings",
        [[org, days, True, "admin@test"]],
        column_names=["org_id", "retention_days", "audit_enabled", "updated_by"],
    )


@pytest.mark.parametrize("gz", [False, True])
async def test_days_beyond_retention_go_to_day_files_then_leave_clickhouse(
    ch_settings, topic_names, tmp_path, gz
) -> None:
    topics = topic_names("audit.raw.v1")
    s = _settings(ch_settings, tmp_path, topics, gz=gz)
    _set_retention(s, "org-short", 10)  # org-long keeps the default 90 days
    old_short = {
        d: [enriched(i, org="org-short", occurred_at=_day(d, 1 + i % 20)) for i in range(40)]
        for d in (12, 15)
    }
    recent_short = [enriched(i, org="org-short", occurred_at=_day(5)) for i in range(30)]
    old_long = [enriched(i, org="org-long", occurred_at=_day(95)) for i in range(25)]
    kept_long = [enriched(i, org="org-long", occurred_at=_day(40)) for i in range(20)]
    everything = [v for vs in old_short.values() for v in vs] + recent_short + old_long + kept_long
    insert_events(s, everything, inserted_at=LONG_AGO)
    insert_events(s, old_short[12][:10], inserted_at=LONG_AGO + timedelta(seconds=1))  # redelivered copies
    assert count(s) == 155

    rep = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert not rep.errors, rep.errors
    assert sorted(f.file for f in rep.files) == sorted(
        [
            f"org-long/events-{_day(95).date()}.jsonl" + (".gz" if gz else ""),
            f"org-short/events-{_day(15).date()}.jsonl" + (".gz" if gz else ""),
            f"org-short/events-{_day(12).date()}.jsonl" + (".gz" if gz else ""),
        ]
    )
    expected = {
        ("org-short", str(_day(12).date())): old_short[12],
        ("org-short", str(_day(15).date())): old_short[15],
        ("org-long", str(_day(95).date())): old_long,
    }
    for f in rep.files:
        path = tmp_path / "archives" / f.file
        raw = path.read_bytes()
        content = gzip.decompress(raw) if gz else raw
        lines = content.splitlines()
        want = expected[(f.org_id, f.day)]
        assert f.rows == len(want) == len(lines)  # duplicates archived once
        assert sorted(lines) == sorted(want)  # byte-exact enriched events
        manifest = orjson.loads(path.with_name(path.name + ".manifest.json").read_bytes())
        assert manifest["rows"] == len(want)
        assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
        assert manifest["file_sha256"] == hashlib.sha256(raw).hexdigest()
        times = [orjson.loads(x)["occurred_at"] for x in lines]
        assert times == sorted(times)
    # gone from ClickHouse, the rest untouched
    assert count(s) == 155 - 105 and count(s, "count()", "events") == 50
    left = {
        str(r[0])
        for r in make_client(s).query(f"SELECT event_id FROM {s.clickhouse_database}.events").result_rows
    }
    assert left == {orjson.loads(v)["event_id"] for v in recent_short + kept_long}
    assert {a.file for a in list_archives(s)} == {f.file for f in rep.files}
    # every archived day is an audit event, actor system
    audit = [orjson.loads(v) for v in await read_all(s, topics["audit.raw.v1"], 3)]
    assert len(audit) == 3
    assert {a["action"] for a in audit} == {"audit_archive:create"}
    assert {a["actor"]["type"] for a in audit} == {"system"}
    assert {a["target"]["id"] for a in audit} == {f.file for f in rep.files}
    # a second run finds nothing more to do
    rep2 = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert rep2.files == [] and not rep2.errors


async def test_failure_between_write_and_verify_leaves_rows(ch_settings, topic_names, tmp_path) -> None:
    topics = topic_names("audit.raw.v1")
    s = _settings(ch_settings, tmp_path, topics, default_days=30)
    old = [enriched(i, org="org-x", occurred_at=_day(40)) for i in range(50)]
    insert_events(s, old, inserted_at=LONG_AGO)

    def tamper(path) -> None:  # noqa: ANN001 - a disk or process fault after the write
        with open(path, "ab") as f:
            f.write(b'{"not":"an archived row"}\n')

    def crash(path) -> None:  # noqa: ANN001
        raise OSError("disk vanished")

    for hook, why in ((tamper, "file has 51 rows"), (crash, "disk vanished")):
        rep = await asyncio.to_thread(run_archive, s, "system", NOW, before_verify=hook)
        assert len(rep.errors) == 1 and rep.files == [] and why in rep.errors[0], rep.errors
        assert count(s) == 50  # nothing deleted
        assert list_archives(s) == []
        assert not any(p.name.endswith(".manifest.json") for p in (tmp_path / "archives").rglob("*"))
        assert not list((tmp_path / "archives").rglob("*.partial"))
    # no audit event for a failed run (nothing was archived)
    assert await read_all(s, topics["audit.raw.v1"], 1, timeout_s=2) == []
    # and once the fault is gone, the day is archived
    rep = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert [f.rows for f in rep.files] == [50] and count(s) == 0


async def test_delete_refuses_young_files_and_audits_deletions(ch_settings, topic_names, tmp_path) -> None:
    topics = topic_names("audit.raw.v1")
    s = _settings(ch_settings, tmp_path, topics, default_days=30)
    insert_events(s, [enriched(i, org="org-d", occurred_at=_day(45)) for i in range(5)], inserted_at=LONG_AGO)
    (af,) = (await asyncio.to_thread(run_archive, s, "system", NOW)).files
    with pytest.raises(ArchiveError) as e:
        delete_archive(s, af.file, requested_by="ada@test", now=NOW + timedelta(days=29))
    assert e.value.code == "too_young" and "30 days" in str(e.value)
    assert (tmp_path / "archives" / af.file).exists()
    for bad in ("../../etc/passwd", "org-d/../x.jsonl", "org-d/events-2020-01-01.jsonl", "events.jsonl"):
        with pytest.raises(ArchiveError) as e2:
            delete_archive(s, bad, requested_by="ada@test", now=NOW + timedelta(days=31))
        assert e2.value.code in ("invalid_name", "not_found")
    with pytest.raises(ArchiveError) as e3:  # another org's scope cannot see it
        delete_archive(
            s, af.file.split("/")[1], requested_by="ada@test", now=NOW + timedelta(days=31), org_id="org-e"
        )
    assert e3.value.code == "not_found"
    # the API addresses files by bare name within the caller's org
    gone = await asyncio.to_thread(
        lambda: delete_archive(
            s, af.file.split("/")[1], requested_by="ada@test", now=NOW + timedelta(days=31), org_id="org-d"
        )
    )
    assert gone.file == af.file and not (tmp_path / "archives" / af.file).exists()
    assert list_archives(s) == []
    audit = [orjson.loads(v) for v in await read_all(s, topics["audit.raw.v1"], 2)]
    dele = [a for a in audit if a["action"] == "audit_archive:delete"]
    assert len(dele) == 1 and dele[0]["actor"] == {"type": "user", "id": "ada@test", "name": "ada@test"}
    assert dele[0]["org_id"] == "org-d" and dele[0]["target"]["id"] == af.file


def test_cli_archive_list_and_refused_delete(ch_settings, topic_names, tmp_path, monkeypatch, capsys) -> None:
    from services.cli import main
    from services.common.settings import get_settings

    topics = topic_names("audit.raw.v1")
    s = _settings(ch_settings, tmp_path, topics, default_days=30)
    insert_events(s, [enriched(i, org="org-c", occurred_at=_day(50)) for i in range(3)], inserted_at=LONG_AGO)
    monkeypatch.setenv("AUDITPIPE_CLICKHOUSE_DATABASE", s.clickhouse_database)
    monkeypatch.setenv("AUDITPIPE_RETENTION__ARCHIVE_DIR", str(tmp_path / "archives"))
    monkeypatch.setenv("AUDITPIPE_RETENTION__DEFAULT_DAYS", "30")
    monkeypatch.setenv("AUDITPIPE_RETENTION__AUDIT_TOPIC", topics["audit.raw.v1"])
    get_settings.cache_clear()
    try:
        assert main(["archive", "run", "--requested-by", "ops@test"]) == 0
        out = capsys.readouterr().out
        assert "org-c/events-" in out and "3 row(s) deleted" in out
        assert main(["archive", "list", "--json"]) == 0
        (listed,) = orjson.loads(capsys.readouterr().out)
        assert listed["rows"] == 3 and listed["requested_by"] == "ops@test"
        assert main(["archive", "delete", listed["file"], "--requested-by", "ops@test"]) == 2
        err = capsys.readouterr().err
        assert "cannot be deleted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    finally:
        get_settings.cache_clear()


async def test_archive_still_deletes_when_the_table_has_a_projection(
    ch_settings, topic_names, tmp_path
) -> None:
    """The query API may add projections (0010+): lightweight DELETE refuses them, the job falls back."""
    topics = topic_names("audit.raw.v1")
    s = _settings(ch_settings, tmp_path, topics, default_days=30)
    client = make_client(s)
    db = s.clickhouse_database
    client.command(f"ALTER TABLE {db}.events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild'")
    client.command(
        f"ALTER TABLE {db}.events ADD PROJECTION p_target (SELECT * ORDER BY target_id, occurred_at)"
    )
    old = [enriched(i, org="org-p", occurred_at=_day(40)) for i in range(20)]
    recent = [enriched(i, org="org-p", occurred_at=_day(3)) for i in range(5)]
    insert_events(s, old + recent, inserted_at=LONG_AGO)
    rep = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert not rep.errors and [f.rows for f in rep.files] == [20]
    assert count(s) == 5 and count(s, "count()", "events") == 5


def _conflict(s, org: str, seen_at: datetime) -> None:  # noqa: ANN001
    """One row of event_conflicts (0014), as the sink writes it, seen at ``seen_at``."""
    make_client(s).insert(
        f"{s.clickhouse_database}.event_conflicts",
        [[uuid.uuid4(), org, seen_at, "b" * 64, org, seen_at, "a" * 64, seen_at, b"{}", "t", 0, 1, seen_at]],
        column_names=[
            "event_id", "org_id", "occurred_at", "content_hash", "stored_org_id", "stored_occurred_at",
            "stored_content_hash", "stored_inserted_at", "record", "topic", "partition", "offset", "seen_at",
        ],
    )  # fmt: skip


def _conflicts(s) -> list[tuple[str, datetime]]:  # noqa: ANN001
    rows = make_client(s).query(
        f"SELECT stored_org_id, seen_at FROM {s.clickhouse_database}.event_conflicts "
        "ORDER BY stored_org_id, seen_at"
    )
    return [(str(o), t.replace(tzinfo=UTC)) for o, t in rows.result_rows]


async def test_conflicting_records_older_than_the_longest_retention_are_deleted_audited(
    ch_settings, topic_names, tmp_path
) -> None:
    """event_conflicts does not grow forever: a run deletes what is older than retention.max_days (365
    days; 3650 self-hosted), per org of the stored event, audited before; younger rows stay."""
    topics = topic_names("audit.raw.v1")
    s = _settings(ch_settings, tmp_path, topics)
    assert s.retention.max_days == 365
    old, young = NOW - timedelta(days=400), NOW - timedelta(days=300)
    for org, t in (("org-a", old), ("org-a", old), ("org-a", young), ("org-b", old), ("org-c", young)):
        _conflict(s, org, t)

    # no audit event, nothing deleted
    def refuse(events) -> None:  # noqa: ANN001
        raise ConnectionError("broker away")

    rep = await asyncio.to_thread(run_archive, s, "system", NOW, publish=refuse)
    assert len(rep.errors) == 2 and rep.expired_conflicts == 0
    assert len(_conflicts(s)) == 5

    rep = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert not rep.errors and rep.expired_conflicts == 3
    assert _conflicts(s) == [("org-a", young), ("org-c", young)]
    audit = [orjson.loads(v) for v in await read_all(s, topics["audit.raw.v1"], 2)]
    assert {(a["org_id"], a["action"], a["metadata"]["rows"]) for a in audit} == {
        ("org-a", "audit_archive:expire_conflicts", "2"),
        ("org-b", "audit_archive:expire_conflicts", "1"),
    }
    # self-hosted keeps them ten years
    s10 = _settings(ch_settings, tmp_path, topics, self_hosted=True)
    _conflict(s10, "org-b", old)
    rep = await asyncio.to_thread(run_archive, s10, "system", NOW)
    assert rep.expired_conflicts == 0 and len(_conflicts(s10)) == 3


async def test_a_failed_conflicts_lookup_is_reported_and_the_run_still_ends(
    ch_settings, topic_names, tmp_path, monkeypatch
) -> None:
    from services.archive import store

    def down(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise ConnectionError("ClickHouse away")

    s = _settings(ch_settings, tmp_path, topic_names("audit.raw.v1"))
    monkeypatch.setattr(store, "expired_conflicts", down)
    rep = await asyncio.to_thread(run_archive, s, "system", NOW)
    assert rep.errors == ["event_conflicts: ClickHouse away"] and rep.expired_conflicts == 0
