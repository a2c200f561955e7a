"""Verification: ``auditpipe verify`` and ``GET /api/integrity``.

1. Digests from three places — the digest topic (append-only, the anchor), the digest files, ClickHouse's
   ``digests`` table: each must parse as the contract and carry a valid Ed25519 signature by a trusted key
   (else *forged signature* / *malformed digest*); each signed digest must be in every place (else
   *missing digest*, or *missing newest digests* when a place's chain stops early or every place's chain
   is stale); per org they must form one chain (else *broken* or *forked chain*).
2. Membership: for each signed window in range, ClickHouse recomputes count and Merkle root from
   ``sealed_events`` (else *membership changed*).
3. Events: one ClickHouse pass per org joins ``sealed_events`` with every stored copy in ``events``:
   a sealed event whose stored bytes re-hash to another value or whose columns disagree with its bytes is
   *altered*; one with no stored copy is looked up in the archive files of its day (*altered* when the
   line re-hashes to another value, *deleted* when no file holds it); a stored event that is in no sealed
   window although stored before the org's sealed end is *inserted*; one stored long enough ago that it
   should have been sealed is *unsealed overdue*. Newer rows are *pending* (counted, not an error).

Python handles digests (a few per org and window) and the rows found wrong; per-event work is ClickHouse's.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.digests_v1 import Digest, signing_bytes
from schemas.integrity import hash_member
from services.archive import files as archive_files
from services.common.clickhouse import make_client
from services.common.settings import Settings
from services.integrity import files, store
from services.integrity.keys import trusted_keys, verify_signature
from services.integrity.rules import (
    ALTERED,
    DELETED,
    FORGED,
    INSERTED,
    MALFORMED,
    MEMBERSHIP,
    MISSING_DIGEST,
    MISSING_NEWEST,
    SOURCES,
    UNSEALED_OVERDUE,
    Finding,
    Report,
    SignedDigest,
    chain_findings,
    fmt,
    in_range,
    overdue_cutoff,
    utc,
)

Progress = Callable[[int, int], None]
MAX_FINDINGS = 10_000

_ID = re.compile(rb'"event_id":"([0-9a-f-]{36})"')
_HASH = re.compile(rb'"content_hash":"([0-9a-f]{64})"')


def _check_digest(raw: bytes, keys: dict[str, Any]) -> tuple[SignedDigest | None, Finding | None]:
    try:
        rec = orjson.loads(raw)
        Digest.model_validate(rec)
    except (orjson.JSONDecodeError, ValidationError) as e:
        org = rec.get("org_id", "?") if isinstance(locals().get("rec"), dict) else "?"
        return None, Finding(
            MALFORMED, str(org), f"not a valid digest record: {str(e).splitlines()[0][:200]}"
        )
    pub = keys.get(rec["key_id"])
    where = {"window_start": rec["window_start"], "window_end": rec["window_end"]}
    if pub is None:
        return None, Finding(FORGED, rec["org_id"], f"signed by unknown key {rec['key_id']}", **where)
    if not verify_signature(pub, rec["signature"], signing_bytes(rec)):
        return None, Finding(
            FORGED, rec["org_id"], f"signature does not verify with {rec['key_id']}", **where
        )
    return SignedDigest.of(rec), None


def _read_place(
    settings: Settings, client: Any, src: str, org: str | None, reread_topic: Callable[[], list[bytes]] | None
) -> list[bytes] | None:
    if src == "files":
        return [line for _, line in files.read_all(files.root(settings), org)]
    if src == "clickhouse":
        return store.digest_records(client, settings.clickhouse_database, org)
    if reread_topic is None:
        return None
    try:
        return reread_topic()
    except Exception:  # noqa: BLE001 - the broker away: the topic's gap stays unexplained, so it is reported
        return None


def _signed_digests(
    raw_by_source: dict[str, list[bytes]], org: str | None, keys: dict[str, Any], rep: Report | None
) -> dict[str, dict[str, dict[str, SignedDigest]]]:
    """source -> org -> hash -> signed digest; with ``rep``, the count per place and the digests that do
    not verify (once per content) are reported."""
    have: dict[str, dict[str, dict[str, SignedDigest]]] = {s: {} for s in raw_by_source}
    bad_seen: set[tuple[str, str]] = set()
    for src, raws in raw_by_source.items():
        if rep is not None:
            rep.digests[src] = 0
        for raw in raws:
            d, bad = _check_digest(raw, keys)
            if bad is not None:
                if rep is None or (org is not None and bad.org_id != org):
                    continue
                key = (bad.kind, hashlib.sha256(raw).hexdigest())
                seen_before = key in bad_seen
                bad_seen.add(key)
                if not seen_before:
                    rep.add(Finding(**{**bad.to_dict(), "source": src}))
                continue
            assert d is not None
            if org is not None and d.org_id != org:
                continue
            have[src].setdefault(d.org_id, {})[d.hash] = d
            if rep is not None:
                rep.digests[src] += 1
    return have


def _head_gaps(
    have: dict[str, dict[str, dict[str, SignedDigest]]], union: dict[str, dict[str, SignedDigest]]
) -> dict[tuple[str, str], set[str]]:
    """(place, org) -> hashes of the digests newer than the place's own newest that other places hold."""
    gaps: dict[tuple[str, str], set[str]] = {}
    for o, ds in union.items():
        for src in SOURCES:
            mine = have[src].get(o, {})
            top = max((d.sequence for d in mine.values()), default=0)
            newer = {h for h, d in ds.items() if h not in mine and d.sequence > top}
            if newer:
                gaps[(src, o)] = newer
    return gaps


def _await_publication(
    settings: Settings,
    client: Any,
    org: str | None,
    keys: dict[str, Any],
    have: dict[str, dict[str, dict[str, SignedDigest]]],
    union: dict[str, dict[str, SignedDigest]],
    reread_topic: Callable[[], list[bytes]] | None,
) -> dict[tuple[str, str], float]:
    """Which head gaps are real: (place, org) -> seconds waited, for each place still lacking a newest
    digest that another place holds after ``integrity.verify_publication_wait_s``.

    The sealer publishes each digest to ClickHouse, then the topic, then the files, and keeps sealing
    (its own audit events fill new windows); a verification that read the places in between sees one of
    them a digest short. Only the digests missing in the first read are awaited (new ones sealed meanwhile
    are ignored), so a deletion is still reported, a publication in progress is not."""
    gaps = _head_gaps(have, union)
    wait = settings.integrity.verify_publication_wait_s
    start = time.monotonic()
    pause = 0.25
    while gaps and time.monotonic() - start < wait:
        time.sleep(min(pause, max(0.0, wait - (time.monotonic() - start))))
        pause = min(pause * 2, 2.0)
        again = {src: _read_place(settings, client, src, org, reread_topic) for src in {p for p, _ in gaps}}
        raws = {src: r for src, r in again.items() if r is not None}
        if not raws:
            break  # only the topic lacks them and it cannot be read again
        now_have = _signed_digests(raws, org, keys, None)
        for (src, o), hashes in list(gaps.items()):
            if src in now_have:
                hashes -= set(now_have[src].get(o, {}))
                if not hashes:
                    del gaps[(src, o)]
    waited = time.monotonic() - start
    return dict.fromkeys(gaps, waited)


def _archive_lookup(root: Path, org: str, days: set[str], wanted: set[str]) -> dict[str, tuple[str, str]]:
    """{event_id: (re-derived hash of its archived line, file)} for ``wanted``, from the org's day files."""
    out: dict[str, tuple[str, str]] = {}
    for p in archive_files.archive_paths(root, org):
        if p.name[7:17] not in days:
            continue
        for line in archive_files.iter_lines(p):
            m = _ID.search(line)
            if m is None or m.group(1).decode() not in wanted:
                continue
            h = _HASH.search(line)
            member = hash_member(h.group(1).decode()) if h else b""
            body = line.replace(member, b"", 1) if member and member in line else line
            out[m.group(1).decode()] = (hashlib.sha256(body).hexdigest(), f"{p.parent.name}/{p.name}")
    return out


def verify(
    settings: Settings,
    topic_records: list[bytes],
    org: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    archives: Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    client: Any = None,
    reread_topic: Callable[[], list[bytes]] | None = None,
) -> Report:
    """Check everything in scope (module docstring); ``topic_records``: the digest topic's records,
    ``reread_topic`` reads them again (to tell a publication in progress from a missing digest; without
    it, only the files and ClickHouse are re-read)."""
    cfg = settings.integrity
    db = settings.clickhouse_database
    client = client or make_client(settings, send_receive_timeout=900)
    now = utc(now or datetime.now(UTC))
    since, until = (utc(since) if since else None), (utc(until) if until else None)
    rep = Report(since=fmt(since), until=fmt(until), checked_at=fmt(now) or "")
    keys = trusted_keys(settings)

    # 1. digests from the three places; a place that lacks only the newest digests of an org may be in the
    # middle of a publication (ClickHouse, then the topic, then the files): re-read it before reporting.
    raw_by_source = {
        "topic": topic_records,
        "files": _read_place(settings, client, "files", org, None) or [],
        "clickhouse": _read_place(settings, client, "clickhouse", org, None) or [],
    }
    have = _signed_digests(raw_by_source, org, keys, rep)
    union: dict[str, dict[str, SignedDigest]] = {}
    for src in SOURCES:
        for o, ds in have[src].items():
            union.setdefault(o, {}).update(ds)
    late = _await_publication(settings, client, org, keys, have, union, reread_topic)
    cutoff = overdue_cutoff(now, cfg.window_s, cfg.grace_s, cfg.interval_s)
    for o, ds in sorted(union.items()):
        for f in chain_findings(o, ds.values()):
            rep.add(f)
        newest = max(d.sequence for d in ds.values())
        for src in SOURCES:
            mine = have[src].get(o, {})
            missing = sorted((d for h, d in ds.items() if h not in mine), key=lambda d: d.sequence)
            if not missing:
                continue
            top = max((d.sequence for d in mine.values()), default=0)
            head_missing = [d for d in missing if d.sequence > top]
            if head_missing and newest > top and (src, o) in late:
                rep.add(
                    Finding(
                        MISSING_NEWEST,
                        o,
                        f"{src} ends at digest {top or 'none'}; digests {head_missing[0].sequence}..{newest} "
                        f"exist elsewhere (still missing after {late[(src, o)]:.0f} s)",
                        window_start=head_missing[0].record["window_start"],
                        window_end=head_missing[-1].record["window_end"],
                        source=src,
                    )
                )
            for d in missing:
                if d.sequence <= top:
                    rep.add(
                        Finding(
                            MISSING_DIGEST,
                            o,
                            f"digest {d.sequence} is not in {src}",
                            window_start=d.record["window_start"],
                            window_end=d.record["window_end"],
                            source=src,
                        )
                    )
        head_end = max(d.window_end for d in ds.values())
        if (until is None or until > cutoff) and head_end < cutoff and cfg.enabled:
            rep.add(
                Finding(
                    MISSING_NEWEST,
                    o,
                    f"the newest digest anywhere ends {fmt(head_end)}; sealing should have reached "
                    f"{fmt(cutoff)} (digests deleted everywhere, or the sealer is not running)",
                    window_start=fmt(head_end),
                )
            )

    # 2-3. membership and events, org by org
    everyone = set(union) | store.stored_orgs(client, db) | store.sealed_orgs(client, db)
    orgs = sorted({org} if org else everyone)
    rep.orgs = len(orgs)
    total = len(orgs)
    if progress:
        progress(0, total)
    done = 0

    def one(o: str) -> Report:
        # one client per worker: queries of two organisations run side by side
        c = make_client(settings, send_receive_timeout=900)
        return _check_org(settings, c, o, list(union.get(o, {}).values()), since, until, archives, cutoff)

    with ThreadPoolExecutor(max_workers=max(1, cfg.verify_parallelism)) as pool:
        results = {}
        for o, sub in zip(orgs, pool.map(one, orgs), strict=True):
            results[o] = sub
            done += 1
            if progress:
                progress(done, total)
    for o in orgs:
        sub = results[o]
        for f in sub.findings:
            rep.add(f)
        rep.windows += sub.windows
        rep.events += sub.events
        rep.pending += sub.pending
        rep.sealed_through.update(sub.sealed_through)
        rep.truncated = rep.truncated or sub.truncated
    return rep


def _check_org(
    settings: Settings,
    client: Any,
    o: str,
    digests: list[SignedDigest],
    since: datetime | None,
    until: datetime | None,
    archives: Path | None,
    cutoff: datetime,
) -> Report:
    """Membership and events of one organisation (step 2-3 of the module docstring)."""
    cfg = settings.integrity
    db = settings.clickhouse_database
    sub = Report()
    ds = sorted(digests, key=lambda d: d.window_start)
    sealed_end = max((d.window_end for d in ds), default=None)
    if sealed_end is not None:
        sub.sealed_through[o] = fmt(sealed_end) or ""
    scope = [d for d in ds if in_range(d, since, until)]
    lo = scope[0].window_start if scope else (since if since else None)
    hi = scope[-1].window_end if scope else until
    sub.windows += len(scope)
    sub.events += sum(int(d.record["event_count"]) for d in scope)
    if scope:
        roots = store.window_roots(client, db, o, lo, hi)
        signed = {}
        for d in scope:
            signed.setdefault(d.window_start, d)  # a fork is already reported
        for ws, d in sorted(signed.items()):
            r = roots.pop((o, ws), None)
            n, root = (r.count, r.root) if r else (0, None)
            want_n, want_root = int(d.record["event_count"]), d.record["merkle_root"]
            if n != want_n or (want_n and root != want_root):
                sub.add(
                    Finding(
                        MEMBERSHIP,
                        o,
                        f"sealed_events now give {n} events"
                        + (f" and root {root}" if root and root != want_root else "")
                        + f"; the signed digest says {want_n} and root {want_root}",
                        window_start=d.record["window_start"],
                        window_end=d.record["window_end"],
                    )
                )
        for (_, ws), r in sorted(roots.items()):
            if sealed_end is not None and ws < sealed_end:
                sub.add(
                    Finding(
                        MEMBERSHIP,
                        o,
                        f"sealed_events list {r.count} events in a window no signed digest covers",
                        window_start=fmt(ws),
                    )
                )
    deleted: dict[str, store.EventProblem] = {}
    columns: list[tuple[str, dict[str, str]]] = []
    for p in store.event_problems(client, db, o, lo, hi, since, sealed_end):
        if len(sub.findings) >= MAX_FINDINGS:
            sub.truncated = True
            break
        where = {"window_start": fmt(p.window_start)} if p.window_start else {}
        if not p.sealed:
            sub.add(
                Finding(
                    INSERTED,
                    o,
                    f"stored {fmt(p.first_stored)}, before the org's sealed end {fmt(sealed_end)}, "
                    "but in no sealed window",
                    event_id=p.event_id,
                    source="clickhouse",
                )
            )
            continue
        if p.sealed_variants > 1:
            sub.add(
                Finding(MEMBERSHIP, o, "sealed twice with different hashes", event_id=p.event_id, **where)
            )
        if p.copies == 0:
            deleted[p.event_id] = p
            continue
        wrong = [h for h in p.stored_hashes if h != p.sealed_hash]
        if wrong:
            sub.add(
                Finding(
                    ALTERED,
                    o,
                    f"stored bytes re-hash to {wrong[0]}, sealed {p.sealed_hash}",
                    event_id=p.event_id,
                    source="clickhouse",
                    **where,
                )
            )
        elif p.columns_changed:
            columns.append((p.event_id, where))
    if columns:
        names = store.changed_columns(client, db, o, [e for e, _ in columns])
        for eid, where in columns:
            sub.add(
                Finding(
                    ALTERED,
                    o,
                    "columns differ from the sealed record: " + (", ".join(names.get(eid, [])) or "?"),
                    event_id=eid,
                    source="clickhouse",
                    **where,
                )
            )
    if deleted:
        days = {p.occurred_at.date().isoformat() for p in deleted.values() if p.occurred_at}
        found = _archive_lookup(archives or Path(settings.retention.archive_dir), o, days, set(deleted))
        for eid, p in sorted(deleted.items()):
            where = {"window_start": fmt(p.window_start)} if p.window_start else {}
            if eid not in found:
                sub.add(
                    Finding(
                        DELETED,
                        o,
                        "sealed, but in neither ClickHouse nor an archive file",
                        event_id=eid,
                        **where,
                    )
                )
            elif found[eid][0] != p.sealed_hash:
                sub.add(
                    Finding(
                        ALTERED,
                        o,
                        f"archived line re-hashes to {found[eid][0]}, sealed {p.sealed_hash}",
                        event_id=eid,
                        source=f"archive:{found[eid][1]}",
                        **where,
                    )
                )
    n, late = store.pending(client, db, o, sealed_end, cutoff)
    sub.pending += n
    if late and cfg.enabled and (until is None or until > (sealed_end or store.EPOCH)):
        sub.add(
            Finding(
                UNSEALED_OVERDUE,
                o,
                f"{late} event(s) stored before {fmt(cutoff)} are in no sealed window "
                f"(sealed through {fmt(sealed_end) or 'never'})",
            )
        )
    return sub
