"""Reading only the members of a record that a destination needs (its filter and its encoder).

:func:`reader` builds, once per destination, a msgspec decoder for exactly those (dotted) paths: it checks
the record is JSON but builds nothing for the other members, and returns a plain dict holding the needed
members (absent ones as None). For the forwarder's events that costs ~1.0 µs against ~1.5 µs for a full
``orjson.loads`` (the record's bytes are what gets forwarded either way). A record whose shape does not
fit the paths (e.g. ``actor`` is a string where ``actor.id`` is needed) is read in full instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import orjson

from services.siem_forwarder.util.delivery import EncodeError

Reader = Callable[[bytes], dict[str, Any]]


def full(record: bytes) -> dict[str, Any]:
    """The whole record as a JSON object; :class:`EncodeError` (``invalid_json``) when it is not one."""
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError as e:
        raise EncodeError("invalid_json", f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise EncodeError("invalid_json", "not a JSON object")
    return doc


def _struct(tree: dict[str, Any], name: str) -> type:
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for i, (key, sub) in enumerate(sorted(tree.items())):
        attr = f"f{i}"  # member names need not be identifiers
        rename[attr] = key
        fields.append((attr, Any if sub is None else _struct(sub, f"{name}_{i}") | None, None))
    return msgspec.defstruct(name, fields, rename=rename)


def reader(paths: Iterable[str]) -> Reader:
    """A function record bytes -> {member: value} for ``paths`` (dotted, e.g. ``actor.id``)."""
    wanted = set(paths)
    # a member needed whole covers its sub-paths
    wanted = {p for p in wanted if not any(p.startswith(q + ".") for q in wanted)}
    tree: dict[str, Any] = {}
    for path in sorted(wanted):
        node = tree
        parts = path.split(".")
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            node = child
        node[parts[-1]] = None  # a leaf: decoded whole
    decode = msgspec.json.Decoder(_struct(tree, "Needed")).decode
    to_dict = msgspec.to_builtins

    def read(record: bytes) -> dict[str, Any]:
        try:
            return to_dict(decode(record))
        except msgspec.ValidationError:
            return full(record)  # JSON of another shape: read it all (or say why it is no object)
        except msgspec.DecodeError as e:
            raise EncodeError("invalid_json", f"not JSON: {e}") from None

    return read
