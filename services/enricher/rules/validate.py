"""Raw events validated from bytes straight to plain JSON data.

The contract is ``schemas.events_v1.RawEvent`` and stays there, once. Validating a record into models and
then dumping them to JSON data (``model_dump(mode="json")``) costs about a third of the enricher's CPU;
this module derives, from the model's own pydantic-core schema, a validator that accepts exactly what the
model accepts and returns what the dump would return, in one pass in Rust:

- each model becomes a typed dict with the same fields, defaults, constraints, validators and
  ``extra="forbid"`` (fields come out in the model's order, as the dump writes them);
- values whose JSON form differs from their Python form get it right after validation: a UUID its text,
  a datetime pydantic's own JSON text (``to_jsonable_python``, after the model's UTC validators), an
  enum member its value (a literal of the members' values).

One difference is left, on purpose, to the caller: free-form JSON (``JSONValue``: payload, query,
snapshot, before/after) is kept as parsed, and pydantic's JSON parser accepts ``NaN``, ``Infinity`` and
numbers beyond the double range (read as infinity), which the dump writes as ``null``. The scrubbing walk
meets every float of an event and writes such a value as ``null`` too; one found inside a value that is
replaced by its indicator raises :class:`NonFiniteNumber` instead (its hash would differ), and the
enricher runs that record through the model and its dump (``services/enricher/rules/enrich.py``). The
output is the same either way: tests/enricher/test_validate.py holds both paths equal on
hypothesis-generated records.

Invalid input is reported by the model, not here: the caller validates a refused record again with the
model, whose error texts (field locations and messages) name what is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic_core import SchemaValidator, core_schema, to_jsonable_python

from schemas.events_v1 import OCCURRED_AT_END, OCCURRED_AT_MIN, RawEvent

# Values already written the way the dump would write them are taken as they are (in Rust, no Python
# call), the rest go through the full validator and conversion:
# - a UUID in its canonical text (lower-case, hyphenated) is its own JSON form;
# - a UTC time from 2000 to 2199 on days 01-28 (valid in every month), to the second or with 6 digits
#   of fraction that are not all zero, is what pydantic writes for that time, and inside the range every
#   time field of the contract accepts (checked below, so a narrower contract cannot be missed).
CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_MICROS = r"(?:\.(?:[1-9]\d{5}|0[1-9]\d{4}|00[1-9]\d{3}|000[1-9]\d{2}|0000[1-9]\d|00000[1-9]))?"
CANONICAL_UTC = (
    r"^(?:20|21)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    + _MICROS
    + "Z$"
)
if not (
    OCCURRED_AT_MIN <= datetime(2000, 1, 1, tzinfo=UTC)
    and datetime(2200, 1, 1, tzinfo=UTC) <= OCCURRED_AT_END
):
    raise RuntimeError("CANONICAL_UTC admits times the contract refuses: narrow it")


class NonFiniteNumber(ValueError):
    """A NaN or infinite number in free-form JSON: the record takes the model path (see the module)."""


def _plain(schema: Any) -> Any:
    """``schema`` with every model turned into a typed dict and every value into its JSON form."""
    t = schema["type"]
    if t == "model":
        if schema.get("custom_init") or schema.get("root_model") or schema.get("post_init"):
            raise TypeError(f"unsupported model in the raw contract: {schema['cls'].__name__}")
        fields = schema["schema"]
        if fields["type"] != "model-fields" or fields.get("computed_fields"):
            raise TypeError(f"unsupported model schema in the raw contract: {fields['type']}")
        if schema.get("config", {}).get("extra_fields_behavior") != "forbid":
            raise TypeError("raw contract models forbid extra fields")
        out_fields = {}
        for name, f in fields["fields"].items():
            if f.get("validation_alias") or f.get("serialization_alias"):
                raise TypeError(f"aliases are not supported ({name})")
            inner = _plain(f["schema"])
            out_fields[name] = core_schema.typed_dict_field(inner, required=inner["type"] != "default")
        return core_schema.typed_dict_schema(out_fields, extra_behavior="forbid")
    if t in ("default", "nullable"):
        return {**schema, "schema": _plain(schema["schema"])}
    if t == "list":
        return {**schema, "items_schema": _plain(schema["items_schema"])}
    if t == "dict":
        return {**schema, "values_schema": _plain(schema["values_schema"])}
    if t == "uuid":
        return core_schema.union_schema(
            [
                core_schema.str_schema(pattern=CANONICAL_UUID),
                core_schema.no_info_after_validator_function(str, schema),
            ],
            mode="left_to_right",
        )
    if t == "enum":
        return core_schema.literal_schema([m.value for m in schema["members"]])
    if t == "function-after":
        # the model's own validators (e.g. times to UTC) run first, then the value takes its JSON form
        inner = _innermost(schema)
        if inner == "datetime":
            return _time(schema)
        if inner == "model":  # a model validator expects the model, not a dict
            raise TypeError("model validators are not supported in the raw contract")
        return {**schema, "schema": _plain(schema["schema"])}
    if t == "datetime":
        return _time(schema)
    if t in ("str", "int", "any", "literal", "bool"):
        return schema
    raise TypeError(f"unsupported schema type in the raw contract: {t}")


def _time(schema: Any) -> Any:
    return core_schema.union_schema(
        [
            core_schema.str_schema(pattern=CANONICAL_UTC),
            core_schema.no_info_after_validator_function(to_jsonable_python, schema),
        ],
        mode="left_to_right",
    )


def _innermost(schema: Any) -> str:
    while schema["type"] in ("function-after", "nullable", "default"):
        schema = schema["schema"]
    return schema["type"]


_EVENT = _plain(RawEvent.__pydantic_core_schema__)
# Only keys are worth caching as Python strings (they repeat in every event); values rarely do.
_CONFIG = core_schema.CoreConfig(cache_strings="keys")
RAW_EVENT = SchemaValidator(_EVENT, config=_CONFIG)
RAW_EVENTS = SchemaValidator(core_schema.list_schema(_EVENT), config=_CONFIG)


def events_from_json(value: bytes) -> list[dict[str, Any]]:
    """The events of an envelope (a JSON array of raw events) as plain JSON data; raises
    ``pydantic_core.ValidationError`` when any of them is invalid."""
    return RAW_EVENTS.validate_json(value)  # type: ignore[no-any-return]


def event_from_json(value: bytes) -> dict[str, Any]:
    """One raw event as plain JSON data; raises ``pydantic_core.ValidationError`` when it is invalid."""
    return RAW_EVENT.validate_json(value)  # type: ignore[no-any-return]


__all__ = ["RAW_EVENT", "RAW_EVENTS", "NonFiniteNumber", "event_from_json", "events_from_json"]
