"""Pure rules: which events a destination wants, and the field mapping applied before encoding."""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase
from typing import Any

from services.siem_forwarder.util.config import FieldsConfig, FilterConfig


def wanted(doc: dict[str, Any], f: FilterConfig) -> bool:
    if f.orgs and doc.get("org_id") not in f.orgs:
        return False
    action = str(doc.get("action", ""))
    if f.actions and not any(fnmatchcase(action, p) for p in f.actions):
        return False
    if f.exclude_actions and any(fnmatchcase(action, p) for p in f.exclude_actions):
        return False
    return not (f.event_types and doc.get("event_type") not in f.event_types)


_MISSING = object()


def _pop(doc: dict[str, Any], path: str) -> Any:
    parts = path.split(".")
    cur: Any = doc
    for p in parts[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return _MISSING
        cur = cur[p]
    if isinstance(cur, dict):
        return cur.pop(parts[-1], _MISSING)
    return _MISSING


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = doc
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def map_fields(doc: dict[str, Any], f: FieldsConfig) -> dict[str, Any]:
    """Return a new document with ``f.exclude`` removed and ``f.rename`` applied (input untouched)."""
    if not f.exclude and not f.rename:
        return doc
    out = copy.deepcopy(doc)
    for path in f.exclude:
        _pop(out, path)
    for src, dst in f.rename.items():
        v = _pop(out, src)
        if v is not _MISSING:
            _put(out, dst, v)
    return out
