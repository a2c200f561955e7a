"""Sensitive values: find them and replace each with an indicator, in one walk that also decides how the
event can be canonicalised (see :class:`Walk`).

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

- ``indicator`` (Octopus): ``sha256(salt || sha256(value))`` where the 16-byte salt is
  ``HMAC-SHA256(secret, event_id NUL path NUL n)`` truncated — ``secret`` is the deployment's
  ``enricher.indicator_secret``, ``n`` counts matches within one string. It shows that a value was there
  and cannot be linked to the value or to another record of the same value without the secret; and the
  same raw record enriched twice (restart, rebalance, kill -9) gives the same bytes, which tamper
  evidence relies on;
- ``hmac`` (Vault): ``HMAC-SHA256(key, value)``: an operator holding the key can check whether a known
  value appears. The key is never written anywhere.

Non-string values are hashed as their RFC 8785 canonical JSON. ``None`` is left alone (nothing to hide).

Every detector is linear in its input: they run on RE2 (``google-re2``), whose matching time is linear
by construction — a literal pre-filter over the whole record first, then one pass of all detectors
together per string, then each detector in order on the strings that matched. RE2's ``\\b`` and
``\\w`` are ASCII-only, so a detector also fires right after a non-ASCII letter (the old engine did
not): detection is slightly more eager, never less.
A string that grows past its contract limit through replacement is cut to the limit with
:data:`TRUNCATION_MARKER` (scrubbing never makes a valid event invalid).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import re2
import rfc8785

from services.enricher.rules.limits import limit_for
from services.enricher.rules.validate import NonFiniteNumber

INDICATOR_PREFIX = "[sensitive:"
TRUNCATION_MARKER = "…[truncated by auditpipe]"
# Past this many indicators in one event (or one text), a value found by its key is replaced by ELIDED,
# a fixed marker, and the rest of a free-text string holding more secrets is withheld (cut, with a marker
# saying how much): hashing and matching cost a few µs per secret, and a body stuffed with thousands of
# them must not buy the sender seconds of CPU. Nothing past the budget is stored in clear.
MAX_INDICATORS = 500
ELIDED = "[sensitive:elided]"
KEY_CACHE_MAX = 100_000
SENSITIVE_FLAGS = ("is_sensitive", "sensitive", "issensitive")
SAFE_INT = 2**53 - 1

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 64 << 20  # room for the DFA on inputs of the event size limit

# Python's Unicode whitespace (str.isspace), spelled out: RE2's \s is ASCII only, and a secret after a
# no-break or an em space must still be found.
WS = r"[\t\n\x0b\f\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"

# Each detector matches the secret itself; only that substring is replaced. Applied in this order.
DETECTOR_PATTERNS: dict[str, str] = {
    "pem_private_key": (
        r"(?s:-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z))"
    ),
    "jwt": r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    "aws_access_key_id": r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
    "gcp_api_key": r"\bAIza[0-9A-Za-z_\-]{35}",
    "gcp_oauth_token": r"\bya29\.[0-9A-Za-z_\-]{20,}",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    "slack_token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "bearer": rf"(?i:\b(?:bearer|basic|token){WS}+[A-Za-z0-9._~+/=\-]{{12,}})",
}
DETECTORS: dict[str, Any] = {k: re2.compile(p, _RE2_OPTIONS) for k, p in DETECTOR_PATTERNS.items()}
# Any detector at all, in one linear pass: strings without a match skip the detectors one by one.
ANY_DETECTOR = re2.compile("|".join(f"(?:{p})" for p in DETECTOR_PATTERNS.values()), _RE2_OPTIONS)
# A literal every detector's match contains, searched in the raw record's bytes: a record without any
# (and without \u escapes, which could spell one) needs no detector on any of its strings. RE2 here too:
# Python's engine scans this case-insensitive alternation at ~40 MB/s, RE2 at ~800 MB/s.
RECORD_PREFILTER = re2.compile(
    rb"-----BEGIN|eyJ|AKIA|ASIA|ABIA|ACCA|A3T|AIza|ya29\.|gh[pousr]_|github_pat_|xox[abprs]-"
    rb"|(?i:bearer|basic|token)|\\u",
    _RE2_OPTIONS,
)
# The shortest string any detector can match (a minimal JWT): shorter strings skip detection.
MIN_DETECT_LEN = 13
# Spellings of the self-declared sensitivity flag (exact keys: cheaper than normalising every key).
FLAG_KEYS = ("is_sensitive", "sensitive", "isSensitive", "IsSensitive", "is-sensitive", "Sensitive")
_FLAG_KEY_SET = frozenset(FLAG_KEYS)

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
# The members of a raw event the walk visits, in the contract's order (everything not structural).
WALKED_FIELDS = ("actor", "target", "change", "request", "metadata", "changes", "snapshot")
# Top-level members that hold only strings (by the contract): with no detector to run on a record and no
# explicit path configured, the walk skips them.
STRINGS_ONLY = frozenset({"actor", "target", "change"})
# Request members that key patterns apply to.
KEYED_REQUEST = frozenset({"payload", "query", "headers"})
_FIELD_SPLIT = re.compile(r"[.\[\]/]")


def _flag_like(v: Any) -> bool:
    """Booleans (``include_private_key: true``) say whether, not what: a key match leaves them."""
    return isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in ("true", "false"))


def _norm_key(k: str) -> str:
    return k.lower().replace("-", "_")


def value_bytes(value: Any) -> bytes:
    """What a non-string value is hashed as: its RFC 8785 form; never raises (an integer beyond RFC 8785's
    range, which the contract refuses anyway, falls back to orjson's sorted form)."""
    t = type(value)
    if t is str:
        return value.encode()
    if t is bool:
        return b"true" if value else b"false"
    if t is int and -SAFE_INT <= value <= SAFE_INT:
        return str(value).encode()  # RFC 8785's form of an integer is its decimal text
    try:
        return rfc8785.dumps(value)
    except Exception:  # noqa: BLE001 - out-of-range numbers: still a stable, secret-free digest input
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except Exception:  # noqa: BLE001
            return repr(value).encode()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacSha256:
    """HMAC-SHA256 under one fixed key, with the key's inner and outer SHA-256 states computed once
    (RFC 2104): ~0.5 µs a message instead of ~1.3 µs for ``hmac.digest``, which sets the key up again on
    every call. Equal to ``hmac.digest(key, msg, "sha256")`` (tests/enricher/test_sensitive.py)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


@dataclass
class Hasher:
    """Turns a sensitive value into an indicator (see the module docstring for both modes)."""

    mode: Literal["indicator", "hmac"] = "indicator"
    key: bytes | None = None
    secret: bytes = b""
    _mac: HmacSha256 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode == "hmac" and not self.key:
            raise ValueError("hmac mode needs a key")
        if self.mode == "indicator" and not self.secret:
            raise ValueError("indicator mode needs a secret")
        self._mac = HmacSha256(self.key if self.mode == "hmac" and self.key else self.secret)

    def indicator(self, value: Any, event_id: str, path: str, n: int = 0) -> str:
        data = value_bytes(value)
        if self.mode == "hmac":
            return f"{INDICATOR_PREFIX}hmac-sha256:{self._mac.digest(data).hex()}]"
        salt = self._mac.digest(f"{event_id}\0{path}\0{n}".encode())[:16]
        salted = hashlib.sha256(salt + hashlib.sha256(data).digest()).hexdigest()
        return f"{INDICATOR_PREFIX}salted-sha256:{salted}]"


def is_indicator(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(INDICATOR_PREFIX) and value.endswith("]")


def withheld(n: int) -> str:
    return f"…[sensitive:withheld {n} characters]"


def _sub_within_budget(rx: Any, text: str, repl: Any, w: Walk) -> str:
    """``rx.sub(repl, text)`` for as many matches as the indicator budget allows; when a string holds more
    secrets than that, the rest of it is withheld (cut, with a marker saying how much) instead of being
    matched and replaced one by one: the cost stays bounded by the budget, and nothing past it leaks."""
    room = MAX_INDICATORS - w.indicators
    if room <= 0:
        m = rx.search(text)
        return text if m is None else text[: m.start()] + withheld(len(text) - m.start())
    cut = None
    for i, m in enumerate(rx.finditer(text)):
        if i == room:
            cut = m.start()
            break
    if cut is None:
        return rx.sub(repl, text)
    return rx.sub(repl, text[:cut]) + withheld(len(text) - cut)


def fmt_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with the truncation marker."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(TRUNCATION_MARKER))
    return (text[:keep] + TRUNCATION_MARKER)[:limit]


class UnsafeInteger(ValueError):
    """A number without fraction outside ±(2**53 - 1): outside the contract (RFC 8785 cannot represent
    it exactly)."""

    def __init__(self, path: tuple[str | int, ...]) -> None:
        super().__init__(f"{fmt_path(path) or '(root)'}: number without fraction outside ±(2**53-1)")
        self.path = path


@dataclass(slots=True)
class Walk:
    """What one walk over one event found besides the replacements it made.

    The walk also leaves the event in a form orjson (sorted keys) writes as exactly RFC 8785 bytes, which
    holds for all JSON but two spots, handled where they occur: a float
    without fraction becomes an int (RFC 8785 writes it as the integer) and a non-integral float in
    [1e-6, 1e-5) becomes a pre-written fragment (RFC 8785 writes ``0.0000012``, orjson ``1.2e-6``); an
    object whose keys mix characters at or above U+E000 with characters beyond U+FFFF becomes a fragment
    with its keys in UTF-16 order (RFC 8785's order; orjson sorts by code point). Both checked against the
    reference implementation by tests/enricher/test_canonical.py.
    """

    event_id: str
    detect: bool = True
    found: list[str] = field(default_factory=list)
    indicators: int = 0


def _float(v: float, w: Walk, path: tuple[str | int, ...] | None = None) -> Any:
    if v.is_integer():
        if -SAFE_INT <= v <= SAFE_INT:
            return int(v)  # RFC 8785 writes it as the integer; orjson then writes the same bytes
        raise UnsafeInteger(path or ())
    if 1e-6 <= abs(v) < 1e-5:
        return orjson.Fragment(_small_float(v))
    if not _isfinite(v):
        return None  # NaN or infinity (validate.py lets them through): null, as the model's dump writes them
    return v


_isfinite = math.isfinite


def _has_non_finite(value: Any) -> bool:
    t = type(value)
    if t is float:
        return not _isfinite(value)
    if t is dict:
        return any(_has_non_finite(v) for v in value.values())
    if t is list:
        return any(_has_non_finite(v) for v in value)
    return False


def _small_float(v: float) -> bytes:
    """RFC 8785's text of a float in [1e-6, 1e-5): ``0.00000`` then its shortest digits (``-`` first)."""
    text = orjson.dumps(v).decode()  # e.g. "-3.6290244904410107e-6": the same shortest digits
    sign = "-" if text.startswith("-") else ""
    mantissa = text.lstrip("-").split("e")[0].replace(".", "")
    return f"{sign}0.00000{mantissa}".encode()


def _utf16_key(k: str) -> bytes:
    return k.encode("utf-16-be", "surrogatepass")


def _orders_differ(obj: dict[str, Any]) -> bool:
    """Whether RFC 8785's key order (UTF-16 code units) differs from orjson's (code points) here."""
    ks = list(obj)
    return sorted(ks) != sorted(ks, key=_utf16_key)


def _utf16_ordered(obj: dict[str, Any]) -> Any:
    """An object whose keys orjson and RFC 8785 would order differently, pre-written in RFC 8785's order."""
    items = sorted(obj.items(), key=lambda kv: _utf16_key(kv[0]))
    body = b",".join(orjson.dumps(k) + b":" + orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for k, v in items)
    return orjson.Fragment(b"{" + body + b"}")


@dataclass
class Scrubber:
    """Replaces sensitive values in JSON data in place; reports the replaced paths on the :class:`Walk`."""

    hasher: Hasher
    key_patterns: tuple[str, ...] = ()
    paths: tuple[tuple[str, ...], ...] = ()
    _key_cache: dict[str, bool] = field(default_factory=dict, repr=False)
    _text_rules: tuple[Any, Any] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, hasher: Hasher, key_patterns: Iterable[str], paths: Iterable[str]) -> Scrubber:
        pats = tuple(sorted({_norm_key(p) for p in key_patterns if p.strip()}))
        parsed = tuple(tuple(re.findall(r"[^.\[\]]+", p)) for p in paths if p.strip())
        s = cls(hasher=hasher, key_patterns=pats, paths=parsed)
        if pats:
            alt = "|".join(re.escape(p).replace("_", "[_-]") for p in pats)
            quoted = re2.compile(
                rf'(?i)("[^"]*(?:{alt})[^"]*"{WS}*:{WS}*)("(?:[^"\\]|\\.)*"|[^,}}\]\s]+)', _RE2_OPTIONS
            )
            pair = re2.compile(rf"(?i)(\b[\w-]*(?:{alt})[\w-]*{WS}*[=:]{WS}*)([^\s&,;\"'}}]+)", _RE2_OPTIONS)
            s._text_rules = (quoted, pair)
        return s

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
    def _replace(self, value: Any, path: tuple[str | int, ...], w: Walk) -> Any:
        if value is None or is_indicator(value):
            return value
        if type(value) is not str and _has_non_finite(value):
            # validate.py lets NaN and infinity through; hashed, they would not be what the model's dump
            # (null) gives: the record takes the model path
            raise NonFiniteNumber(fmt_path(path))
        p = fmt_path(path)
        w.found.append(p)
        w.indicators += 1
        if w.indicators > MAX_INDICATORS:
            out: str = ELIDED
        else:
            out = self.hasher.indicator(value, w.event_id, p)
        limit = limit_for(path)
        return truncate(out, limit) if limit is not None and len(out) > limit else out

    def _detect(self, text: str, path: tuple[str | int, ...], w: Walk) -> str:
        if len(text) < MIN_DETECT_LEN or is_indicator(text) or not ANY_DETECTOR.search(text):
            return text
        p = fmt_path(path)
        n = 0

        def repl(m: Any) -> str:
            nonlocal n
            n += 1
            w.indicators += 1
            return self.hasher.indicator(m.group(0), w.event_id, p, n)

        out = text
        for rx in DETECTORS.values():
            if rx.search(out):
                out = _sub_within_budget(rx, out, repl, w)
        if out != text:
            w.found.append(p)
            limit = limit_for(path)
            if limit is not None and len(out) > limit:
                out = truncate(out, limit)
        return out

    def _walk(self, value: Any, path: tuple[str | int, ...], w: Walk, keyed: bool, detect: bool) -> Any:
        """Explicit paths everywhere; key patterns when ``keyed``; detectors on strings when ``detect``.

        Containers are modified in place (the caller owns them); the returned value replaces ``value``.
        """
        if self.paths and self._path_listed(path):
            return self._replace(value, path, w)
        t = type(value)
        if t is dict:
            flagged = False
            if not _FLAG_KEY_SET.isdisjoint(value):
                flagged = any(value.get(f) is True for f in FLAG_KEYS)
            high = False
            for k, v in value.items():
                if not high and not k.isascii() and max(k) >= "\ue000":
                    high = True
                if (keyed and self.key_is_sensitive(k) and not _flag_like(v)) or (flagged and k == "value"):
                    value[k] = self._replace(v, (*path, k), w)
                    continue
                tv = type(v)
                if tv is str:
                    if detect and len(v) >= MIN_DETECT_LEN and not self.paths:
                        value[k] = self._detect(v, (*path, k), w)
                    elif self.paths:
                        value[k] = self._walk(v, (*path, k), w, keyed, detect)
                elif tv is dict or tv is list or self.paths:
                    value[k] = self._walk(v, (*path, k), w, keyed, detect)
                elif tv is int:
                    if not -SAFE_INT <= v <= SAFE_INT:
                        raise UnsafeInteger((*path, k))
                elif tv is float:
                    value[k] = _float(v, w, (*path, k))
            return _utf16_ordered(value) if high and _orders_differ(value) else value
        if t is list:
            for i, v in enumerate(value):
                tv = type(v)
                if tv is str and not self.paths:
                    if detect and len(v) >= MIN_DETECT_LEN:
                        value[i] = self._detect(v, (*path, i), w)
                elif tv is int and not self.paths:
                    if not -SAFE_INT <= v <= SAFE_INT:
                        raise UnsafeInteger((*path, i))
                elif tv is float and not self.paths:
                    value[i] = _float(v, w, (*path, i))
                elif tv is dict or tv is list or self.paths:
                    value[i] = self._walk(v, (*path, i), w, keyed, detect)
            return value
        if t is str:
            return self._detect(value, path, w) if detect else value
        if t is int:
            if not -SAFE_INT <= value <= SAFE_INT:
                raise UnsafeInteger(path)
            return value
        if t is float:
            return _float(value, w, path)
        return value

    # -- entry points ---------------------------------------------------------------------------
    def scrub_event(self, event: dict[str, Any], w: Walk) -> None:
        """Scrub a RawEvent's JSON form (``model_dump(mode="json")``) in place; paths land on ``w.found``.

        Raises :class:`UnsafeInteger` for an integer the contract does not allow.
        """
        request = event.get("request")
        payload = request.get("payload") if type(request) is dict else None
        target = event.get("target")
        event_flagged = (
            type(payload) is dict
            and True in payload.values()  # a cheap first look (1 and 1.0 pass it too): exact below
            and any(x is True and _norm_key(str(f)) in SENSITIVE_FLAGS for f, x in payload.items())
        ) or (
            type(target) is dict
            and isinstance(target.get("name"), str)
            and self.key_is_sensitive(target["name"])
        )
        detect = w.detect
        paths = bool(self.paths)
        for k in WALKED_FIELDS:  # the rest are identifiers and enums of the contract (STRUCTURAL_FIELDS)
            v = event.get(k)
            if v is None:
                continue
            if not detect and not paths and k in STRINGS_ONLY:
                continue  # nothing to find in plain strings without detectors
            if k == "changes" and type(v) is list:
                for i, c in enumerate(v):
                    v[i] = self._scrub_change(c, i, w, event_flagged)
            elif k in ("metadata", "snapshot"):
                event[k] = self._walk(v, (k,), w, True, detect)
            elif k == "request" and type(v) is dict:
                for rk, rv in v.items():
                    if rv is None or (type(rv) is str and not detect and not paths):
                        continue
                    v[rk] = self._walk(rv, ("request", rk), w, rk in KEYED_REQUEST, detect)
            else:  # actor, target, change text: explicit paths + detectors
                event[k] = self._walk(v, (k,), w, False, detect)

    def _scrub_change(self, change: Any, i: int, w: Walk, event_flagged: bool) -> Any:
        if type(change) is not dict:
            return self._walk(change, ("changes", i), w, True, w.detect)
        fld = change.get("field")
        sensitive = False
        if isinstance(fld, str):
            last = _FIELD_SPLIT.split(fld.rstrip("]"))[-1]
            sensitive = self.key_is_sensitive(fld) or (event_flagged and _norm_key(last) == "value")
        for k, v in change.items():
            p = ("changes", i, k)
            if k in ("before", "after") and sensitive:
                change[k] = self._replace(v, p, w)
            elif k != "field":
                change[k] = self._walk(v, p, w, True, w.detect)
        return change

    def scrub_any(self, data: Any, event_id: str = "") -> tuple[Any, list[str]]:
        """Scrub arbitrary JSON (a dead letter's parsed original) in place: key patterns and detectors
        everywhere; numbers outside the contract's range are left as they are (the letter says why it
        is dead). Returns (data, replaced paths)."""
        w = Walk(event_id=event_id)
        try:
            if isinstance(data, dict) and isinstance(data.get("changes"), list):
                for i, c in enumerate(data["changes"]):
                    data["changes"][i] = self._scrub_change(c, i, w, True)
            data = self._walk(data, (), w, True, True)
        except (UnsafeInteger, NonFiniteNumber):
            data = self._walk_strings_only(data, w)  # what was replaced before the refusal stays replaced
        return data, sorted(set(w.found))

    def _walk_strings_only(self, data: Any, w: Walk, path: tuple[str | int, ...] = ()) -> Any:
        """Fallback for data with out-of-range numbers: key patterns and detectors, numbers untouched."""
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(k, str) and self.key_is_sensitive(k) and not _flag_like(v):
                    data[k] = self._replace(v, (*path, k), w)
                else:
                    data[k] = self._walk_strings_only(v, w, (*path, k))
        elif isinstance(data, list):
            for i, v in enumerate(data):
                data[i] = self._walk_strings_only(v, w, (*path, i))
        elif isinstance(data, str):
            return self._detect(data, path, w)
        return data

    def scrub_text(self, text: str, event_id: str = "") -> str:
        """Scrub text that is not JSON: detectors, then ``"key": "value"`` / ``key=value`` pairs."""
        w = Walk(event_id=event_id)
        out = self._detect(text, (), w)
        if self._text_rules is None:
            return out
        quoted, pair = self._text_rules

        def value(v: str) -> str:
            if is_indicator(v.strip('"')):
                return v.strip('"')
            w.indicators += 1
            return self.hasher.indicator(v, event_id, "text")

        out = _sub_within_budget(quoted, out, lambda m: m.group(1) + '"' + value(m.group(2)) + '"', w)
        return _sub_within_budget(pair, out, lambda m: m.group(1) + value(m.group(2)), w)
