"""Pure rules of sealing and verification: windows, the chain of an org's digests, and the names of
what verification finds. No I/O here; tested exhaustively (tests/integrity/test_rules.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.digests_v1 import GENESIS, digest_hash, fmt_time, parse_time

# What verification reports. Every finding names the org and the event id or the window.
ALTERED = "altered_event"  # stored bytes or columns differ from what was sealed
INSERTED = "inserted_event"  # stored before the org's sealed end, in no sealed window
DELETED = "deleted_event"  # sealed, in neither ClickHouse nor an archive file
MEMBERSHIP = "membership_changed"  # sealed_events of a window no longer give the signed count/root
BROKEN_CHAIN = "broken_chain"  # prev_digest_hash / sequence / window do not follow the previous digest
FORKED_CHAIN = "forked_chain"  # two different signed digests for one org and window (or sequence)
MISSING_DIGEST = "missing_digest"  # a digest one place has and another lacks
MISSING_NEWEST = "missing_newest_digests"  # the newest digests of an org are gone from a place, or stale
FORGED = "forged_signature"  # unknown key or a signature that does not verify
MALFORMED = "malformed_digest"  # not a digest record at all
UNSEALED_OVERDUE = "unsealed_overdue"  # stored long enough ago that sealing should have covered it
KINDS = (
    ALTERED,
    INSERTED,
    DELETED,
    MEMBERSHIP,
    BROKEN_CHAIN,
    FORKED_CHAIN,
    MISSING_DIGEST,
    MISSING_NEWEST,
    FORGED,
    MALFORMED,
    UNSEALED_OVERDUE,
)

SOURCES = ("topic", "files", "clickhouse")


@dataclass(frozen=True)
class Finding:
    kind: str
    org_id: str
    detail: str
    event_id: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Report:
    ok: bool = True
    findings: list[Finding] = field(default_factory=list)
    orgs: int = 0
    windows: int = 0
    events: int = 0
    pending: int = 0
    digests: dict[str, int] = field(default_factory=dict)
    sealed_through: dict[str, str] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None
    checked_at: str = ""
    truncated: bool = False

    def add(self, f: Finding) -> None:
        self.findings.append(f)
        self.ok = False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def summary(self) -> str:
        """One line: the verdict, what was checked, and what is not sealed yet."""
        scope = f"{self.orgs} org(s), {self.windows} window(s), {self.events:,} event(s)"
        pending = f"; {self.pending:,} newer event(s) pending seal" if self.pending else ""
        if self.ok:
            return f"integrity OK: {scope} verified{pending}"
        bad = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(self.counts().items()))
        return f"integrity FAILED: {bad} ({scope} checked){pending}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
            "orgs": self.orgs,
            "windows": self.windows,
            "events": self.events,
            "pending": self.pending,
            "digests": self.digests,
            "sealed_through": self.sealed_through,
            "since": self.since,
            "until": self.until,
            "checked_at": self.checked_at,
            "truncated": self.truncated,
        }


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def align_down(t: datetime, window_s: int) -> datetime:
    """``t`` rounded down to a multiple of ``window_s`` seconds since the Unix epoch (UTC)."""
    ms = int(utc(t).timestamp() * 1000)
    step = window_s * 1000
    return datetime.fromtimestamp((ms - ms % step) / 1000, tz=UTC)


def windows(start: datetime, end: datetime, window_s: int) -> list[tuple[datetime, datetime]]:
    """Contiguous windows covering [start, end): cut at every multiple of ``window_s``."""
    out = []
    s = utc(start)
    end = utc(end)
    while s < end:
        e = min(align_down(s, window_s) + timedelta(seconds=window_s), end)
        out.append((s, e))
        s = e
    return out


def overdue_cutoff(now: datetime, window_s: int, grace_s: float, interval_s: float) -> datetime:
    """Rows stored before this should be sealed by now (a window, its grace, two sealer rounds, a minute)."""
    return utc(now) - timedelta(seconds=window_s + grace_s + 2 * interval_s + 60)


@dataclass(frozen=True)
class SignedDigest:
    """A digest record that parsed and whose signature verified with a trusted key."""

    record: dict[str, Any]
    hash: str

    @property
    def org_id(self) -> str:
        return str(self.record["org_id"])

    @property
    def sequence(self) -> int:
        return int(self.record["sequence"])

    @property
    def window_start(self) -> datetime:
        return parse_time(self.record["window_start"])

    @property
    def window_end(self) -> datetime:
        return parse_time(self.record["window_end"])

    @classmethod
    def of(cls, record: dict[str, Any]) -> SignedDigest:
        return cls(record, digest_hash(record))


def chain_findings(org_id: str, digests: Iterable[SignedDigest]) -> list[Finding]:
    """Forks and breaks in one org's chain of signed digests (duplicates of one digest count once).

    The chain is complete and linear when sequences run 1..n, each digest's ``prev_digest_hash`` is the
    previous digest's hash (:data:`GENESIS` for the first) and each window starts where the previous ended.
    """
    out: list[Finding] = []
    unique = {d.hash: d for d in digests}
    by_window: dict[str, list[SignedDigest]] = {}
    by_seq: dict[int, list[SignedDigest]] = {}
    for d in unique.values():
        by_window.setdefault(d.record["window_start"], []).append(d)
        by_seq.setdefault(d.sequence, []).append(d)
    for ws, ds in sorted(by_window.items()):
        if len(ds) > 1:
            out.append(
                Finding(
                    FORKED_CHAIN,
                    org_id,
                    f"{len(ds)} different signed digests for one window: "
                    + ", ".join(sorted(d.hash[:16] for d in ds)),
                    window_start=ws,
                    window_end=ds[0].record["window_end"],
                )
            )
    for seq, ds in sorted(by_seq.items()):
        if len(ds) > 1 and len({d.record["window_start"] for d in ds}) > 1:
            out.append(
                Finding(
                    FORKED_CHAIN,
                    org_id,
                    f"sequence {seq} used by {len(ds)} digests of different windows",
                    window_start=min(d.record["window_start"] for d in ds),
                )
            )
    # walk the chain in sequence order, one digest per sequence (the first by window on a fork)
    chain = [sorted(ds, key=lambda d: d.record["window_start"])[0] for _, ds in sorted(by_seq.items())]
    prev: SignedDigest | None = None
    for d in chain:
        r = d.record
        if prev is None:
            if d.sequence == 1 and r["prev_digest_hash"] != GENESIS:
                out.append(
                    Finding(
                        BROKEN_CHAIN,
                        org_id,
                        "the first digest does not start from the genesis value",
                        window_start=r["window_start"],
                        window_end=r["window_end"],
                    )
                )
            elif d.sequence != 1:
                out.append(
                    Finding(
                        BROKEN_CHAIN,
                        org_id,
                        f"digests 1..{d.sequence - 1} are missing before this one",
                        window_start=r["window_start"],
                        window_end=r["window_end"],
                    )
                )
        else:
            p = prev.record
            problems = []
            if d.sequence != prev.sequence + 1:
                problems.append(f"digests {prev.sequence + 1}..{d.sequence - 1} are missing")
            if r["prev_digest_hash"] != prev.hash:
                problems.append("prev_digest_hash is not the previous digest's hash")
            if r["window_start"] != p["window_end"]:
                problems.append(f"window starts at {r['window_start']}, previous ended {p['window_end']}")
            if problems:
                out.append(
                    Finding(
                        BROKEN_CHAIN,
                        org_id,
                        "; ".join(problems),
                        window_start=r["window_start"],
                        window_end=r["window_end"],
                    )
                )
        prev = d
    return out


def in_range(d: SignedDigest, since: datetime | None, until: datetime | None) -> bool:
    """Whether a digest's window overlaps [since, until)."""
    return (until is None or d.window_start < until) and (since is None or d.window_end > since)


def fmt(t: datetime | None) -> str | None:
    return fmt_time(t) if t is not None else None
