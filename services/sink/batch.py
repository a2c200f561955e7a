"""The batch step: rows accumulate until a size, byte or time limit; the batch knows exactly which
offsets it makes committable and the insert de-duplication token that names it.

Pure data structure (no I/O), so the rules are unit-tested without Kafka or ClickHouse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.events_v1 import DeadLetter

TP = tuple[str, int]  # (topic, partition)


@dataclass
class Batch:
    """Rows for one ClickHouse insert plus the offsets it covers.

    Every consumed message advances the batch's offsets, including messages that became dead letters
    (``add_dead``): a bad message never blocks its partition, and it is never committed before its dead
    letter is acknowledged (letters are sent by the flush, before the commit).
    """

    max_rows: int
    max_bytes: int
    max_seconds: float
    clock: Callable[[], float] = time.monotonic
    rows: list[list[Any]] = field(default_factory=list)
    sources: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, partition, offset) per row
    values: list[bytes] = field(default_factory=list)  # original bytes per row (for dead letters)
    letters: list[DeadLetter] = field(default_factory=list)  # parse failures, sent before commit
    first: dict[TP, int] = field(default_factory=dict)
    last: dict[TP, int] = field(default_factory=dict)
    nbytes: int = 0
    started: float | None = None

    def _offset(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        if tp not in self.first:
            self.first[tp] = offset
        self.last[tp] = max(offset, self.last.get(tp, offset))
        if self.started is None:
            self.started = self.clock()

    def add(self, topic: str, partition: int, offset: int, value: bytes, row: list[Any]) -> None:
        self._offset(topic, partition, offset)
        self.rows.append(row)
        self.sources.append((topic, partition, offset))
        self.values.append(value)
        self.nbytes += len(value)

    def add_dead(self, topic: str, partition: int, offset: int, letter: DeadLetter) -> None:
        self._offset(topic, partition, offset)
        self.letters.append(letter)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.first

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.max_rows or self.nbytes >= self.max_bytes

    @property
    def room(self) -> int:
        return max(0, self.max_rows - len(self.rows))

    def due(self) -> bool:
        """Full, or the oldest message waited ``max_seconds``."""
        if self.empty:
            return False
        return self.full or (self.clock() - (self.started or 0.0)) >= self.max_seconds

    def commit_offsets(self) -> dict[TP, int]:
        """Kafka offsets to commit once this batch is durable: next offset to read per partition."""
        return {tp: off + 1 for tp, off in self.last.items()}

    def token(self) -> str:
        """insert_deduplication_token: the same batch retried carries the same token (idempotent)."""
        return dedup_token(self.first, self.last)

    def drop_partitions(self, revoked: Iterable[TP]) -> int:
        """Forget buffered messages of revoked partitions (uncommitted: their next owner re-reads them)."""
        gone = set(revoked) & set(self.first)
        if not gone:
            return 0
        keep = [i for i, s in enumerate(self.sources) if (s[0], s[1]) not in gone]
        dropped = len(self.sources) - len(keep)
        self.rows = [self.rows[i] for i in keep]
        self.sources = [self.sources[i] for i in keep]
        self.values = [self.values[i] for i in keep]
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
