"""Schemathesis against the ingest's own OpenAPI document, served by a real uvicorn process (real Kafka).

Checks (schemathesis defaults): no 5xx, documented status codes, response bodies and content types match
the document. Generated valid events are published to the server's private raw topic. The schemathesis
pytest plugin does not work with pytest 9 here, so its Python API drives hypothesis directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError
from schemathesis import GenerationMode

from schemas.events_v1 import RawEvent
from tests.ingest.conftest import auth

pytestmark = pytest.mark.kafka


def _storable(value: object) -> bool:
    try:
        RawEvent.model_validate({"org_id": "o", "action": "a:b", "occurred_at": value})
    except ValidationError:
        return False
    return True


def test_openapi_contract(ingest_server) -> None:  # noqa: ANN001
    schema = schemathesis.openapi.from_url(f"{ingest_server['url']}/openapi.json")
    # Strings that UTF-8 can carry: a generated pair of lone surrogates (two "characters" to the
    # generator) decodes from JSON as one code point, which made a maxLength violation look accepted.
    schema.config.generation.update(codec="utf-8")

    # The bearer token comes from an auth provider, so schemathesis neither generates the Authorization
    # header nor counts it as a (negative) part of a case: negative cases mutate the body only.
    @schema.auth()
    class Token:
        def get(self, case, ctx) -> str:  # noqa: ANN001
            return auth("tok-any")["authorization"].split(" ", 1)[1]

        def set(self, case, data: str, ctx) -> None:  # noqa: ANN001
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    # The raw contract holds occurred_at to the times the store keeps (2000-01-01 to 2200-01-01, UTC),
    # which JSON Schema's date-time cannot say (the schema says it in words). Positive cases get a time
    # in that range when theirs is outside it; every other generated field is left as it is.
    @schema.hook
    def map_case(ctx, case):  # noqa: ANN001, ANN202, ARG001
        if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
            for ev in case.body if isinstance(case.body, list) else [case.body]:
                if isinstance(ev, dict) and not _storable(ev.get("occurred_at")):
                    ev["occurred_at"] = "2026-11-29T03:00:00Z"
        return case

    ops = [r.ok() for r in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in ops} >= {"POST /v1/events", "POST /v1/events/batch"}
    statuses: list[int] = []
    for op, mode in [(o, m) for o in ops for m in GenerationMode]:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:  # noqa: ANN001
            resp = case.call_and_validate()
            statuses.append(resp.status_code)

        run()
    assert statuses and all(s < 500 for s in statuses)
    print(f"\nschemathesis: {len(statuses)} calls, statuses {sorted(set(statuses))}")
