"""Sensitive values: find them and replace each with an indicator.

Three ways a value is found (all configurable from ``EnricherSettings``):

- explicit paths, e.g. ``request.payload.password`` (``*`` matches any one key or list index);
- key-name patterns at any depth of ``request.payload``, ``request.query``, ``request.headers``,
  ``metadata``, ``snapshot`` and ``changes`` (a change whose ``field`` is sensitive has its ``before`` and
  ``after`` replaced; values inside before/after are searched like a payload). A key matches when the
  pattern is a substring of the key, both lower-cased with ``-`` read as ``_``. A mapping that marks
  itself sensitive (``is_sensitive``/``sensitive``/``isSensitive``: true) has its ``value`` replaced, and
  an event whose payload is so marked has changes to ``value`` replaced;
- value detectors over every free-text string of the event: PEM private keys, JWTs, AWS access key
  ids, Google API keys and OAuth tokens, GitHub and Slack tokens, bearer credentials. Only the matching
  substring is replaced.

Two indicator modes:

- ``indicator`` (Octopus): ``sha256(salt || sha256(value))`` with 16 fresh random bytes of salt that are
  thrown away: it shows that a value was there, links to nothing, and cannot be guessed offline;
- ``hmac`` (Vault): ``HMAC-SHA256(key, value)``: an operator holding the key can check whether a known
  value appears. The key is never written anywhere.

Non-string values are hashed as their RFC 8785 canonical JSON. ``None`` is left alone (nothing to hide).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785

INDICATOR_PREFIX = "[sensitive:"
KEY_CACHE_MAX = 100_000
SENSITIVE_FLAGS = ("is_sensitive", "sensitive", "issensitive")

# Each detector matches the secret itself; only that substring is replaced.
DETECTORS: dict[str, re.Pattern[str]] = {
    "pem_private_key": re.compile(
        r"(?s:-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z))"
    ),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    "aws_access_key_id": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
    "gcp_api_key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),
    "gcp_oauth_token": re.compile(r"\bya29\.[0-9A-Za-z_\-]{20,}"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "slack_token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "bearer": re.compile(r"(?i:\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{12,})"),
}
# The shortest string any detector can match (a minimal JWT): shorter strings skip detection.
MIN_DETECT_LEN = 13
# Spellings of the self-declared sensitivity flag (exact keys: cheaper than normalising every key).
FLAG_KEYS = ("is_sensitive", "sensitive", "isSensitive", "IsSensitive", "is-sensitive", "Sensitive")
# One pass decides whether a string needs any detector at all (most strings need none).
ANY_DETECTOR = re.compile("|".join(f"(?:{rx.pattern})" for rx in DETECTORS.values()))

# Fields that are identifiers/enums of the contract, never free text: detectors skip them.
STRUCTURAL_FIELDS = frozenset(
    {
        "schema_version",
        "event_id",
        "occurred_at",
        "received_at",
        "org_id",
        "project_id",
        "environment_id",
        "action",
        "event_type",
        "source",
        "status",
        "producer",
        "content_hash",
        "enriched_at",
        "client_ip",
        "sensitive_paths",
    }
)
# Where key-name patterns apply in an event.
KEYED_AREAS = (
    ("request", "payload"),
    ("request", "query"),
    ("request", "headers"),
    ("metadata",),
    ("snapshot",),
)


def _flag_like(v: Any) -> bool:
    """Booleans (``include_private_key: true``) say whether, not what: a key match leaves them."""
    return isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in ("true", "false"))


def _norm_key(k: str) -> str:
    return k.lower().replace("-", "_")


@dataclass
class Hasher:
    mode: Literal["indicator", "hmac"] = "indicator"
    key: bytes | None = None
    salt: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        if self.mode == "hmac" and not self.key:
            raise ValueError("hmac mode needs a key")

    def indicator(self, value: Any) -> str:
        data = value.encode() if isinstance(value, str) else rfc8785.dumps(value)
        if self.mode == "hmac":
            assert self.key is not None
            return f"{INDICATOR_PREFIX}hmac-sha256:{hmac.new(self.key, data, hashlib.sha256).hexdigest()}]"
        inner = hashlib.sha256(data).digest()
        salted = hashlib.sha256(self.salt(16) + inner).hexdigest()
        return f"{INDICATOR_PREFIX}salted-sha256:{salted}]"


def is_indicator(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(INDICATOR_PREFIX) and value.endswith("]")


def _fmt(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


@dataclass
class Scrubber:
    """Replaces sensitive values in JSON data; returns the sorted list of replaced paths."""

    hasher: Hasher
    key_patterns: tuple[str, ...] = ()
    paths: tuple[tuple[str, ...], ...] = ()
    _key_cache: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, hasher: Hasher, key_patterns: Iterable[str], paths: Iterable[str]) -> Scrubber:
        pats = tuple(sorted({_norm_key(p) for p in key_patterns if p.strip()}))
        parsed = tuple(tuple(re.findall(r"[^.\[\]]+", p)) for p in paths if p.strip())
        return cls(hasher=hasher, key_patterns=pats, paths=parsed)

    # -- predicates -----------------------------------------------------------------------------
    def key_is_sensitive(self, key: str) -> bool:
        hit = self._key_cache.get(key)
        if hit is None:
            k = _norm_key(key)
            hit = any(p in k for p in self.key_patterns)
            if len(self._key_cache) < KEY_CACHE_MAX:  # keys repeat across events; bounded memo
                self._key_cache[key] = hit
        return hit

    def _path_listed(self, path: tuple[str | int, ...]) -> bool:
        for spec in self.paths:
            if len(spec) == len(path) and all(s in ("*", str(p)) for s, p in zip(spec, path, strict=True)):
                return True
        return False

    # -- replacement ----------------------------------------------------------------------------
    def _replace(self, value: Any, path: tuple[str | int, ...], found: list[str]) -> Any:
        if value is None or is_indicator(value):
            return value
        found.append(_fmt(path))
        return self.hasher.indicator(value)

    def _detect(self, text: str, path: tuple[str | int, ...], found: list[str]) -> str:
        if len(text) < MIN_DETECT_LEN or is_indicator(text) or not ANY_DETECTOR.search(text):
            return text
        out = text
        for rx in DETECTORS.values():
            if rx.search(out):
                out = rx.sub(lambda m: self.hasher.indicator(m.group(0)), out)
        if out is not text and out != text:
            found.append(_fmt(path))
        return out

    def _walk(
        self, value: Any, path: tuple[str | int, ...], found: list[str], *, keyed: bool, detect: bool
    ) -> Any:
        """Explicit paths everywhere; key patterns when ``keyed``; detectors on strings when ``detect``."""
        if self.paths and self._path_listed(path):
            return self._replace(value, path, found)
        if isinstance(value, dict):
            flagged = any(value.get(f) is True for f in FLAG_KEYS)
            out: dict[str, Any] = {}
            for k, v in value.items():
                p = (*path, k)
                by_key = keyed and isinstance(k, str) and self.key_is_sensitive(k) and not _flag_like(v)
                if by_key or (flagged and k == "value"):
                    out[k] = self._replace(v, p, found)
                else:
                    out[k] = self._walk(v, p, found, keyed=keyed, detect=detect)
            return out
        if isinstance(value, list):
            return [self._walk(v, (*path, i), found, keyed=keyed, detect=detect) for i, v in enumerate(value)]
        if detect and isinstance(value, str):
            return self._detect(value, path, found)
        return value

    # -- entry points ---------------------------------------------------------------------------
    def scrub_event(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Scrub a RawEvent's JSON form (``model_dump(mode="json")``); returns (new dict, paths)."""
        found: list[str] = []
        out: dict[str, Any] = {}
        payload = (
            (event.get("request") or {}).get("payload") if isinstance(event.get("request"), dict) else None
        )
        target = event.get("target") if isinstance(event.get("target"), dict) else {}
        event_flagged = (
            isinstance(payload, dict)
            and any(payload.get(f) is True for f in payload if _norm_key(str(f)) in SENSITIVE_FLAGS)
        ) or (isinstance(target.get("name"), str) and self.key_is_sensitive(target["name"]))
        for k, v in event.items():
            if k in STRUCTURAL_FIELDS:
                out[k] = v
            elif k == "changes" and isinstance(v, list):
                out[k] = [self._scrub_change(c, i, found, event_flagged) for i, c in enumerate(v)]
            elif k in ("metadata", "snapshot"):
                out[k] = self._walk(v, (k,), found, keyed=True, detect=True)
            elif k == "request" and isinstance(v, dict):
                req: dict[str, Any] = {}
                for rk, rv in v.items():
                    keyed = rk in ("payload", "query", "headers")
                    req[rk] = self._walk(rv, ("request", rk), found, keyed=keyed, detect=True)
                out[k] = req
            else:  # actor, target, change text, anything else: explicit paths + detectors
                out[k] = self._walk(v, (k,), found, keyed=False, detect=True)
        return out, sorted(set(found))

    def _scrub_change(self, change: Any, i: int, found: list[str], event_flagged: bool) -> Any:
        if not isinstance(change, dict):
            return self._walk(change, ("changes", i), found, keyed=True, detect=True)
        fld = change.get("field")
        last = re.split(r"[.\[\]/]", fld.rstrip("]"))[-1] if isinstance(fld, str) else ""
        sensitive = isinstance(fld, str) and (
            self.key_is_sensitive(fld) or (event_flagged and _norm_key(last) == "value")
        )
        out: dict[str, Any] = {}
        for k, v in change.items():
            p = ("changes", i, k)
            if k in ("before", "after") and sensitive:
                out[k] = self._replace(v, p, found)
            elif k == "field":
                out[k] = v
            else:
                out[k] = self._walk(v, p, found, keyed=True, detect=True)
        return out

    def scrub_any(self, data: Any) -> tuple[Any, list[str]]:
        """Scrub arbitrary JSON (a dead letter's parsed original): key patterns and detectors everywhere."""
        found: list[str] = []
        if isinstance(data, dict) and isinstance(data.get("changes"), list):
            data = dict(data)
            data["changes"] = [self._scrub_change(c, i, found, True) for i, c in enumerate(data["changes"])]
        return self._walk(data, (), found, keyed=True, detect=True), sorted(set(found))

    def scrub_text(self, text: str) -> str:
        """Scrub text that is not JSON: detectors, then ``"key": "value"`` / ``key=value`` pairs."""
        found: list[str] = []
        out = self._detect(text, (), found)
        if not self.key_patterns:
            return out
        alt = "|".join(re.escape(p).replace("_", "[_-]") for p in self.key_patterns)
        quoted = re.compile(rf'(?i)("[^"]*(?:{alt})[^"]*"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}}\]\s]+)')
        out = quoted.sub(lambda m: m.group(1) + '"' + self.hasher.indicator(m.group(2)) + '"', out)
        pair = re.compile(rf"(?i)(\b[\w-]*(?:{alt})[\w-]*\s*[=:]\s*)([^\s&,;\"'}}]+)")
        return pair.sub(lambda m: m.group(1) + self.hasher.indicator(m.group(2)), out)
