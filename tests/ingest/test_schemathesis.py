"""Schemathesis against the ingest's own OpenAPI document, served by a real uvicorn process (real Kafka).

Checks (schemathesis defaults): no 5xx, documented status codes, response bodies and content types match
the document. Generated valid events are published to the server's private raw topic. The schemathesis
pytest plugin does not work with pytest 9 here, so its Python API drives hypothesis directly.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.ingest.conftest import auth

pytestmark = pytest.mark.kafka


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
