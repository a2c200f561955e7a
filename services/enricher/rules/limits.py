"""String length limits of the enriched contract, by path, read once from the contract itself.

Scrubbing replaces secrets with indicators that can be longer than what they replace (a 13-character
JWT becomes an 86-character indicator). A string that grows past its limit is cut back to it (see
``sensitive.truncate``), so a valid raw event never becomes an invalid enriched one. The limits come
from ``EnrichedEvent``'s JSON Schema, so they follow the contract without being written twice.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from schemas.events_v1 import EnrichedEvent

ANY_KEY = "*"


def _max_length(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """The ``maxLength`` of a (possibly nullable) string schema, or the resolved object schema."""
    if "$ref" in schema:
        return defs[schema["$ref"].rsplit("/", 1)[-1]]
    for alt in schema.get("anyOf", ()):
        if alt.get("type") == "string" and "maxLength" in alt:
            return alt["maxLength"]
        if "$ref" in alt:
            return defs[alt["$ref"].rsplit("/", 1)[-1]]
    if schema.get("type") == "string" and "maxLength" in schema:
        return schema["maxLength"]
    return schema if schema.get("type") == "object" else None


@cache
def string_limits() -> dict[tuple[str, ...], int]:
    """{(field, subfield) or (field, "*"): max length} for every bounded string of the contract."""
    root = EnrichedEvent.model_json_schema()
    defs = root.get("$defs", {})
    out: dict[tuple[str, ...], int] = {}
    for name, prop in root["properties"].items():
        got = _max_length(prop, defs)
        if isinstance(got, int):
            out[(name,)] = got
        elif isinstance(got, dict):
            for sub, sprop in got.get("properties", {}).items():
                lim = _max_length(sprop, defs)
                if isinstance(lim, int):
                    out[(name, sub)] = lim
            extra = got.get("additionalProperties")
            if isinstance(extra, dict) and isinstance(extra.get("maxLength"), int):
                out[(name, ANY_KEY)] = extra["maxLength"]
    return out


def limit_for(path: tuple[str | int, ...]) -> int | None:
    """The contract's length limit for the string at ``path`` (None when unbounded)."""
    if not path or len(path) > 2:
        return None
    limits = string_limits()
    if len(path) == 1:
        return limits.get((str(path[0]),))
    return limits.get((str(path[0]), str(path[1]))) or limits.get((str(path[0]), ANY_KEY))
