"""The batch step: records accumulate until a size, byte or time limit; the batch knows exactly which
offsets it makes committable and the insert de-duplication token that names it.

A batch holds the records as they came from Kafka (bytes, never decoded objects) beside the few members
the sink read from each (:class:`~services.sink.records.Key`), in parallel lists. Pure data structure
(no I/O), so the rules are unit-tested without Kafka or ClickHouse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from schemas.events_v1 import DeadLetter
from services.sink.records import Key, Plan, ids_digest

TP = tuple[str, int]  # (topic, partition)


@dataclass
class Batch:
    """Records for one ClickHouse insert plus the offsets they cover.

    Every consumed message advances the batch's offsets, including messages that became dead letters
    (``add_dead``): a bad message never blocks its partition, and it is never committed before its dead
    letter is acknowledged (letters are sent by the flush, before the commit).

    ``plan`` and ``stored_at`` are set once, by the first write attempt (first content wins is decided
    once per batch), so a retried attempt inserts exactly the same records with the same token.
    """

    max_rows: int
    max_bytes: int
    max_seconds: float
    clock: Callable[[], float] = time.monotonic
    values: list[bytes] = field(default_factory=list)  # the records, bytes as read from Kafka
    keys: list[Key] = field(default_factory=list)  # what the sink read from each record
    sources: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, partition, offset)
    letters: list[DeadLetter] = field(default_factory=list)  # unreadable records, sent before commit
    first: dict[TP, int] = field(default_factory=dict)
    last: dict[TP, int] = field(default_factory=dict)
    nbytes: int = 0
    started: float | None = None
    plan: Plan | None = None
    stored_at: datetime | None = None

    def _offset(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        if tp not in self.first:
            self.first[tp] = offset
        self.last[tp] = max(offset, self.last.get(tp, offset))
        if self.started is None:
            self.started = self.clock()

    def add(self, topic: str, partition: int, offset: int, value: bytes, key: Key) -> None:
        self._offset(topic, partition, offset)
        self.values.append(value)
        self.keys.append(key)
        self.sources.append((topic, partition, offset))
        self.nbytes += len(value)

    def add_dead(self, topic: str, partition: int, offset: int, letter: DeadLetter) -> None:
        self._offset(topic, partition, offset)
        self.letters.append(letter)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def empty(self) -> bool:
        return not self.first

    @property
    def full(self) -> bool:
        return len(self.values) >= self.max_rows or self.nbytes >= self.max_bytes

    @property
    def room(self) -> int:
        return max(0, self.max_rows - len(self.values))

    def due(self) -> bool:
        """Full, or the oldest message waited ``max_seconds``."""
        if self.empty:
            return False
        return self.full or (self.clock() - (self.started or 0.0)) >= self.max_seconds

    def commit_offsets(self) -> dict[TP, int]:
        """Kafka offsets to commit once this batch is durable: next offset to read per partition."""
        return {tp: off + 1 for tp, off in self.last.items()}

    def token(self, inserted_ids: Iterable[str] = ()) -> str:
        """insert_deduplication_token: the batch's coordinates AND the ids it actually inserts.

        ClickHouse drops a block whose token it has seen, whatever its content. Which records of a batch
        are new depends on ``event_ids`` at the time of the lookup, so the same coordinates can carry
        another set of records (a batch re-read after a partial write): the token must change with it.
        """
        return f"{dedup_token(self.first, self.last)}#{ids_digest(list(inserted_ids))}"

    def drop_partitions(self, revoked: Iterable[TP]) -> int:
        """Forget buffered messages of revoked partitions (uncommitted: their next owner re-reads them)."""
        gone = set(revoked) & set(self.first)
        if not gone:
            return 0
        keep = [i for i, s in enumerate(self.sources) if (s[0], s[1]) not in gone]
        dropped = len(self.sources) - len(keep)
        self.values = [self.values[i] for i in keep]
        self.keys = [self.keys[i] for i in keep]
        self.sources = [self.sources[i] for i in keep]
        self.letters = [x for x in self.letters if (x.source_topic, x.source_partition) not in gone]
        self.nbytes = sum(len(v) for v in self.values)
        for tp in gone:
            self.first.pop(tp, None)
            self.last.pop(tp, None)
        if self.empty:
            self.started = None
        return dropped


def dedup_token(first: dict[TP, int], last: dict[TP, int]) -> str:
    """``<topic>/<partition>/<first>-<last>;...`` sorted by topic and partition: deterministic for a batch."""
    parts = [f"{t}/{p}/{first[(t, p)]}-{last[(t, p)]}" for t, p in sorted(first)]
    return "auditpipe-sink:" + ";".join(parts)
