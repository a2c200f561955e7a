"""``auditpipe seal [--once]``, ``auditpipe verify [...]`` and ``auditpipe integrity keys``."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from services.common.errors import CliError
from services.common.settings import get_settings


def _when(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] if text else type(e).__name__


def _seal(args: argparse.Namespace) -> int:
    from services.common.audit_events import AuditPublisher
    from services.common.logging import configure_logging
    from services.integrity.keys import IntegrityKeyError, signer
    from services.integrity.rules import fmt
    from services.integrity.seal import run_sealer, seal_once

    s = get_settings()
    try:
        key = signer(s)
    except IntegrityKeyError as e:
        raise CliError(str(e), code=2) from None
    if not args.once:
        if not s.integrity.enabled:
            raise CliError("integrity.enabled is false: nothing to seal", code=2)
        configure_logging("seal", s.log_level)
        asyncio.run(run_sealer(s))
        return 0

    async def once():  # noqa: ANN202
        pub = AuditPublisher(s, s.integrity.audit_topic)
        try:
            return await seal_once(s, pub, key)
        finally:
            await pub.close()

    try:
        res = asyncio.run(once())
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        raise CliError(f"seal failed: {_one_line(e)}") from None
    if res.horizon is None:
        print(
            f"nothing sealed: {res.waiting}"
            + (f" ({res.republished} republished)" if res.republished else "")
        )
    else:
        print(
            f"sealed through {fmt(res.horizon)}: {res.events} new event(s), {len(res.digests)} digest(s)"
            + (f", {res.republished} republished" if res.republished else "")
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from services.common.progress import reporter
    from services.integrity.topic import read_digests_blocking
    from services.integrity.verify import verify

    s = get_settings()
    if args.since and args.until and args.since >= args.until:
        raise CliError("--until must be after --since", code=2)
    if args.archives is not None and not args.archives.is_dir():
        raise CliError(f"--archives: not a folder: {args.archives}", code=2)
    try:
        records = read_digests_blocking(s)
    except Exception as e:  # noqa: BLE001
        raise CliError(f"cannot read the digest topic {s.integrity.digest_topic}: {_one_line(e)}") from None
    try:
        with reporter("verifying", "org") as update:
            rep = verify(
                s,
                records,
                args.org,
                args.since,
                args.until,
                args.archives,
                progress=update,
                reread_topic=lambda: read_digests_blocking(s),
            )
    except Exception as e:  # noqa: BLE001
        raise CliError(f"verify failed: {_one_line(e)}") from None
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        for f in rep.findings:
            where = f.event_id or (f"window {f.window_start}" if f.window_start else "")
            src = f" [{f.source}]" if f.source else ""
            print(f"{f.kind:<24} {f.org_id:<20} {where:<40} {f.detail}{src}")
        print(rep.summary())
    return 0 if rep.ok else 1


def _keys(args: argparse.Namespace) -> int:
    from services.integrity.keys import (
        IntegrityKeyError,
        key_id,
        load_public_key,
        public_b64,
        public_pem,
        signer,
    )

    s = get_settings()
    out = []
    try:
        cur = signer(s, create_dev_key=False)
        out.append(
            {
                "key_id": cur.key_id,
                "status": "signing",
                "public_key": public_b64(cur.public),
                "pem": public_pem(cur.public),
            }
        )
    except IntegrityKeyError:
        pass
    for text in s.integrity.public_keys:
        pub = load_public_key(text)
        if not any(k["key_id"] == key_id(pub) for k in out):
            out.append(
                {
                    "key_id": key_id(pub),
                    "status": "trusted",
                    "public_key": public_b64(pub),
                    "pem": public_pem(pub),
                }
            )
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k in out:
            print(f"{k['key_id']}  {k['status']:<8} {k['public_key']}")
        if not out:
            print("no keys: configure integrity.signing_key_file (or integrity.public_keys to verify only)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seal", help="seal stored windows into signed, chained digests (runs until stopped)")
    p.add_argument("--once", action="store_true", help="one sealing run, then exit")
    p.set_defaults(func=_seal)

    v = sub.add_parser(
        "verify", help="check ClickHouse, archives and digests against each other (exit 0 only when intact)"
    )
    v.add_argument("--org", default=None, help="only this organisation")
    v.add_argument("--since", type=_when, default=None, help="windows stored from (RFC 3339)")
    v.add_argument("--until", type=_when, default=None, help="windows stored until (RFC 3339)")
    v.add_argument(
        "--archives", type=Path, default=None, help="archive folder (default: retention.archive_dir)"
    )
    v.add_argument("--json", action="store_true", help="the full report as JSON")
    v.set_defaults(func=_verify)

    i = sub.add_parser("integrity", help="tamper-evidence keys")
    isub = i.add_subparsers(dest="integrity_cmd", required=True)
    k = isub.add_parser("keys", help="public keys whose digest signatures verification accepts")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=_keys)
