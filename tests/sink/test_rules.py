"""Pure rules of the sink: batching, offsets, tokens, backoff, bad rows (archive rules: tests/archive)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from schemas.events_v1 import DeadLetter
from services.sink.batch import Batch, dedup_token
from services.sink.service import backoff_delay, parse_message
from services.sink.writer import is_bad_row_error
from tests.sink.helpers import enriched

msgs = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.booleans(), st.integers(1, 500)),
    max_size=200,
)


def _letter(t: str, p: int) -> DeadLetter:
    return DeadLetter(stage="sink", reason="x", error="x", source_topic=t, source_partition=p)


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
            b.add(t, p, off, b"x" * size, [off])
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
            b.add(t, p, off, b"x" * size, [t, p, off])
    b.drop_partitions(revoked)
    assert not (set(b.commit_offsets()) & revoked)
    assert all((s[0], s[1]) not in revoked for s in b.sources)
    assert all((x.source_topic, x.source_partition) not in revoked for x in b.letters)
    assert len(b.rows) == len(b.sources) == len(b.values)
    assert b.nbytes == sum(len(v) for v in b.values)


def test_batch_is_due_by_rows_bytes_or_time() -> None:
    now = [0.0]
    b = Batch(3, 1000, 1.0, clock=lambda: now[0])
    assert not b.due() and b.empty
    b.add("t", 0, 0, b"x", [])
    assert not b.due()
    now[0] = 1.0
    assert b.due()
    b2 = Batch(2, 1000, 60, clock=lambda: 0.0)
    b2.add("t", 0, 0, b"x", [])
    b2.add("t", 0, 1, b"x", [])
    assert b2.full and b2.due() and b2.room == 0
    b3 = Batch(100, 10, 60, clock=lambda: 0.0)
    b3.add("t", 0, 0, b"x" * 10, [])
    assert b3.full


def test_dedup_token_is_deterministic_and_names_the_ranges() -> None:
    first = {("t", 1): 10, ("t", 0): 5}
    last = {("t", 1): 19, ("t", 0): 7}
    tok = dedup_token(first, last)
    assert tok == "auditpipe-sink:t/0/5-7;t/1/10-19"
    assert dedup_token(dict(reversed(list(first.items()))), last) == tok
    assert dedup_token({("t", 0): 5}, {("t", 0): 8}) != dedup_token({("t", 0): 5}, {("t", 0): 7})


@given(st.integers(0, 100), st.floats(0.01, 5), st.floats(0.1, 60))
def test_backoff_is_bounded_and_jittered(attempt, initial, cap) -> None:  # noqa: ANN001
    d = backoff_delay(attempt, initial, cap, random.Random(attempt))
    assert 0 <= d <= min(cap, initial * 2 ** min(attempt, 30))


def test_parse_message_routes_every_failure_to_a_named_dead_letter() -> None:
    assert isinstance(parse_message("t", 0, 1, enriched(1)), list)
    for value, reason in (
        (b"{nope", "invalid_json"),
        (b'{"org_id": "o", "event_id": "e"}', "validation_error"),
        (None, "invalid_message"),
        (b"\xff\xfe", "invalid_json"),
    ):
        d = parse_message("t", 2, 7, value)
        assert isinstance(d, DeadLetter) and d.reason == reason, (value, d)
        assert (d.source_topic, d.source_partition, d.source_offset, d.stage) == ("t", 2, 7, "sink")
    d = parse_message("t", 0, 0, b'{"org_id": "org-q", "event_id": "abc"}')
    assert d.org_id == "org-q" and d.event_id == "abc"


def test_client_side_serialisation_errors_count_as_bad_rows() -> None:
    assert is_bad_row_error(ValueError("x")) and is_bad_row_error(OverflowError("x"))
    assert not is_bad_row_error(ConnectionError("refused")) and not is_bad_row_error(TimeoutError())
