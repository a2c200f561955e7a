"""Generate the checked-in JSON Schema files from the pydantic models.

Run ``python -m schemas.generate`` after changing ``schemas/events_v1.py`` or ``schemas/digests_v1.py``;
``tests/schemas`` fails when the files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from schemas.digests_v1 import Digest
from schemas.events_v1 import (
    DeadLetter,
    EnrichedEvent,
    EnricherSwitchState,
    OrgSwitch,
    RawEvent,
    RawRecord,
    with_json_values,
)

HERE = Path(__file__).parent
OUT = HERE / "jsonschema"
MODELS = {
    "raw_event.v1.json": RawEvent,
    "enriched_event.v1.json": EnrichedEvent,
    "dead_letter.v1.json": DeadLetter,
    "org_switch.v1.json": OrgSwitch,
    "raw_record.v1.json": TypeAdapter(RawRecord),
    "enricher_switch_state.v1.json": EnricherSwitchState,
    "digest.v1.json": Digest,
}
TITLES = {"raw_record.v1.json": "RawRecord"}


def render() -> dict[str, str]:
    out = {}
    for name, model in MODELS.items():
        if isinstance(model, TypeAdapter):
            schema = model.json_schema(mode="validation")
            schema["title"] = TITLES[name]
            schema["description"] = (
                "One record of audit.raw.v1: one RawEvent, or an envelope (a JSON array of 1..N RawEvents "
                "sent together, normally of one org)."
            )
        else:
            schema = model.model_json_schema(mode="validation")
        extra: dict[str, object] = {}
        schema = with_json_values(schema, "#/$defs/JSONValue", extra)
        if "#/$defs/JSONValue" in json.dumps(schema):
            schema.setdefault("$defs", {}).update(extra)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://auditpipe.dev/schemas/{name}"
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
