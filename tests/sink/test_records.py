"""Pure rules of the sink: what it reads from a record, first content wins per batch, batching, offsets and
the insert de-duplication token (no Kafka, no ClickHouse; exhaustive where the rule is small)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events_v1 import DeadLetter
from services.sink.batch import Batch, dedup_token
from services.sink.records import Key, RecordError, Stored, canonical_uuid, classify, read_key
from services.sink.service import dead_letter
from services.sink.writer import is_bad_row_error
from tests.sink.helpers import enriched, record


def _key(i: int = 0) -> Key:
    return Key(str(uuid.UUID(int=i)), "org", "h", "")


msgs = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.booleans(), st.integers(1, 500)),
    max_size=200,
)


def _letter(t: str, p: int) -> DeadLetter:
    return DeadLetter(stage="sink", reason="x", error="x", source_topic=t, source_partition=p)


# ------------------------------------------------------------------------------------------ reading
def test_read_key_takes_the_four_members_from_both_record_forms() -> None:
    for value in (enriched(1, org="org-q"), record(1, org="org-q")):
        doc = orjson.loads(value)
        assert read_key(value) == Key(doc["event_id"], "org-q", doc["content_hash"], doc["occurred_at"])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "invalid_json"),
        (b"{nope", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "validation_error"),
        (b'{"org_id": "o", "event_id": "e", "content_hash": "h"}', "validation_error"),
        (b'{"org_id": "o", "content_hash": "h"}', "validation_error"),
        (b'{"event_id": "%s", "content_hash": "h"}' % str(uuid.uuid4()).encode(), "validation_error"),
        (
            b'{"event_id": "%s", "org_id": 5, "content_hash": "h"}' % str(uuid.uuid4()).encode(),
            "validation_error",
        ),
        (b'{"event_id": "%s", "org_id": "o"}' % str(uuid.uuid4()).encode(), "validation_error"),
    ],
)
def test_unreadable_records_become_dead_letters_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(RecordError) as e:
        read_key(value)
    assert e.value.reason == reason
    d = dead_letter("t", 2, 7, value, e.value.reason, str(e.value))
    assert (d.source_topic, d.source_partition, d.source_offset, d.stage, d.reason) == (
        "t",
        2,
        7,
        "sink",
        reason,
    )


def test_a_dead_letter_names_what_it_can_read() -> None:
    d = dead_letter("t", 0, 0, b'{"org_id": "org-q", "event_id": "abc"}', "validation_error", "x")
    assert (
        d.org_id == "org-q" and d.event_id == "abc" and d.original == '{"org_id": "org-q", "event_id": "abc"}'
    )


@given(st.uuids())
def test_every_spelling_of_a_uuid_reads_as_clickhouses_text(u: uuid.UUID) -> None:
    want = str(u)
    for spelling in (str(u), str(u).upper(), u.hex, "{" + str(u) + "}", u.urn):
        assert canonical_uuid(spelling) == want
    assert canonical_uuid("not-a-uuid") is None and canonical_uuid(5) is None


# ------------------------------------------------------------------------------- first content wins
stored_ids = st.sampled_from([str(uuid.UUID(int=i)) for i in range(6)])
hashes = st.sampled_from(["h1", "h2", "h3"])


@given(st.lists(st.tuples(stored_ids, hashes), max_size=40), st.dictionaries(stored_ids, hashes, max_size=6))
def test_classify_keeps_the_first_content_of_every_id(batch: list, known: dict) -> None:  # noqa: ANN001
    keys = [Key(i, "o", h, "") for i, h in batch]
    stored = {i: Stored(h, "o", "", None) for i, h in known.items()}
    plan = classify(keys, stored)
    # every record is in exactly one class
    conflicts = [i for i, _ in plan.conflicts]
    assert sorted(plan.new + plan.redelivered + conflicts) == list(range(len(keys)))
    # the winner of an id is the stored content, else the first copy in the batch
    winner: dict[str, str] = {i: s.content_hash for i, s in stored.items()}
    for n, (eid, h) in enumerate(batch):
        if eid not in winner:
            winner[eid] = h
            assert n in plan.new
        elif winner[eid] == h:
            assert n in plan.redelivered
        else:
            assert n in conflicts
            assert dict(plan.conflicts)[n].content_hash == winner[eid]
    # at most one new record per id, never one the store knows
    new_ids = [batch[n][0] for n in plan.new]
    assert len(new_ids) == len(set(new_ids)) and not set(new_ids) & set(known)


def test_a_conflict_inside_the_batch_names_the_first_copy() -> None:
    a = Key(str(uuid.uuid4()), "org-a", "h1", "2026-01-01T00:00:00Z")
    b = a._replace(org_id="org-b", content_hash="h2")
    plan = classify([a, a, b], {})
    assert plan.new == [0] and plan.redelivered == [1]
    assert plan.conflicts == [(2, Stored("h1", "org-a", "2026-01-01T00:00:00Z", None))]


# ------------------------------------------------------------------------------- batching
@given(msgs)
def test_commit_offsets_cover_every_message_rows_and_letters(ms) -> None:  # noqa: ANN001
    b = Batch(10**9, 10**12, 1.0, clock=lambda: 0.0)
    next_off: dict[tuple[str, int], int] = {}
    for t, p, dead, size in ms:
        off = next_off.get((t, p), 0)
        next_off[(t, p)] = off + 1
        if dead:
            b.add_dead(t, p, off, _letter(t, p))
        else:
            b.add(t, p, off, b"x" * size, _key(off))
    assert b.commit_offsets() == next_off
    assert len(b) + len(b.letters) == len(ms)
    assert b.nbytes == sum(s for *_, dead, s in ms if not dead)


@given(msgs, st.sets(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3))))
def test_revoked_partitions_leave_the_batch_entirely(ms, revoked) -> None:  # noqa: ANN001
    b = Batch(10**9, 10**12, 1.0, clock=lambda: 0.0)
    counters: dict[tuple[str, int], int] = {}
    for t, p, dead, size in ms:
        off = counters.get((t, p), 0)
        counters[(t, p)] = off + 1
        if dead:
            b.add_dead(t, p, off, _letter(t, p))
        else:
            b.add(t, p, off, b"x" * size, _key(off))
    b.drop_partitions(revoked)
    assert not (set(b.commit_offsets()) & revoked)
    assert all((s[0], s[1]) not in revoked for s in b.sources)
    assert all((x.source_topic, x.source_partition) not in revoked for x in b.letters)
    assert len(b.values) == len(b.keys) == len(b.sources)
    assert b.nbytes == sum(len(v) for v in b.values)


def test_batch_is_due_by_rows_bytes_or_time() -> None:
    now = [0.0]
    b = Batch(3, 1000, 1.0, clock=lambda: now[0])
    assert not b.due() and b.empty
    b.add("t", 0, 0, b"x", _key())
    assert not b.due()
    now[0] = 1.0
    assert b.due()
    b2 = Batch(2, 1000, 60, clock=lambda: 0.0)
    b2.add("t", 0, 0, b"x", _key())
    b2.add("t", 0, 1, b"x", _key())
    assert b2.full and b2.due() and b2.room == 0
    b3 = Batch(100, 10, 60, clock=lambda: 0.0)
    b3.add("t", 0, 0, b"x" * 10, _key())
    assert b3.full


def test_dedup_token_is_deterministic_and_names_the_ranges() -> None:
    first = {("t", 1): 10, ("t", 0): 5}
    last = {("t", 1): 19, ("t", 0): 7}
    tok = dedup_token(first, last)
    assert tok == "auditpipe-sink:t/0/5-7;t/1/10-19"
    assert dedup_token(dict(reversed(list(first.items()))), last) == tok
    assert dedup_token({("t", 0): 5}, {("t", 0): 8}) != dedup_token({("t", 0): 5}, {("t", 0): 7})


@given(st.lists(stored_ids, max_size=6, unique=True), st.lists(stored_ids, max_size=6, unique=True))
def test_the_insert_token_changes_with_the_ids_inserted(a: list[str], b: list[str]) -> None:
    batch = Batch(10, 10**6, 1.0, clock=lambda: 0.0)
    batch.add("t", 0, 3, b"x", _key())
    batch.add("t", 0, 9, b"x", _key())
    assert batch.token(a).startswith("auditpipe-sink:t/0/3-9#")
    assert (batch.token(a) == batch.token(b)) == (a == b)


def test_client_side_serialisation_errors_count_as_bad_rows() -> None:
    assert is_bad_row_error(ValueError("x")) and is_bad_row_error(OverflowError("x"))
    assert not is_bad_row_error(ConnectionError("refused")) and not is_bad_row_error(TimeoutError())


def test_conflict_times_come_from_rfc3339_text() -> None:
    from services.sink.records import parse_time

    assert parse_time("2026-11-20T09:15:02.123Z") == datetime(2026, 11, 20, 9, 15, 2, 123000, tzinfo=UTC)
    assert parse_time("yesterday") is None and parse_time("") is None
