"""``auditpipe archive run|list|delete``."""

from __future__ import annotations

import argparse
import json
import sys

from services.common.errors import CliError
from services.common.progress import reporter
from services.common.settings import get_settings


def _run(args: argparse.Namespace) -> int:
    from services.archive.job import run_archive
    from services.archive.rules import ArchiveError

    try:
        with reporter("archiving", "day") as update:
            rep = run_archive(
                get_settings(), requested_by=args.requested_by, org_id=args.org, progress=update
            )
    except ArchiveError as e:
        raise CliError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        raise CliError(
            f"archive run failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
        ) from None
    if args.json:
        print(
            json.dumps(
                {
                    "files": [f.to_dict() for f in rep.files],
                    "deleted_rows": rep.deleted_rows,
                    "expired_conflicts": rep.expired_conflicts,
                    "errors": rep.errors,
                },
                indent=2,
            )
        )
    else:
        for f in rep.files:
            print(f"archived {f.file}  rows={f.rows}  sha256={f.sha256}")
        print(f"{len(rep.files)} file(s), {rep.deleted_rows} row(s) deleted from ClickHouse")
        if rep.expired_conflicts:
            print(f"{rep.expired_conflicts} conflicting record(s) older than the longest retention deleted")
        for err in rep.errors:
            print(f"error: {err}", file=sys.stderr)
    return 1 if rep.errors else 0


def _list(args: argparse.Namespace) -> int:
    from services.archive.files import list_archives

    files = list_archives(get_settings(), org_id=args.org)
    if args.json:
        print(json.dumps([f.to_dict() for f in files], indent=2))
        return 0
    for f in files:
        print(f"{f.file:<60} day={f.day} rows={f.rows:<8} bytes={f.bytes:<10} created={f.created_at[:19]}")
    if not files:
        print("no archives")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from services.archive.job import delete_archive
    from services.archive.rules import ArchiveError

    try:
        af = delete_archive(get_settings(), args.file, requested_by=args.requested_by)
    except ArchiveError as e:
        raise CliError(
            str(e), code=2 if e.code in ("invalid_name", "not_found", "too_young") else 1
        ) from None
    print(f"deleted {af.file} ({af.rows} events of {af.day})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("archive", help="retention archives: run, list, delete")
    asub = a.add_subparsers(dest="archive_cmd", required=True)
    r = asub.add_parser("run", help="archive and delete every day older than each org's retention")
    r.add_argument("--requested-by", default="system", help="who asked (recorded as the audit event's actor)")
    r.add_argument("--org", default=None, help="only this org")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_run)
    ls = asub.add_parser("list", help="archive files with their manifests")
    ls.add_argument("--org", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    d = asub.add_parser("delete", help="delete one archive file (refused when younger than 30 days)")
    d.add_argument("file", help="<org>/events-YYYY-MM-DD.jsonl as listed")
    d.add_argument("--requested-by", required=True, help="who asks (recorded as the audit event's actor)")
    d.set_defaults(func=_delete)
