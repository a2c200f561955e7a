"""``python -m benchmarks.enricher.passthrough``: the enricher's faust shell with its rules replaced by a
pass-through (decode each event of a record, encode it again, key it by event id).

Everything else is the worker's own code: the agent taking records with ``noack_take``, bulk delivery,
ordered acks, the switch follower. The difference between this and ``python -m services.enricher`` on the
same topic is what the rules cost inside the worker; the difference between this and a bare aiokafka
loop is what faust costs.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from services.common.settings import load_settings
from services.enricher.rules.enrich import Results


class PassThrough:
    def process_record(
        self, value: bytes | None, out: Results, *, topic: str, partition: int, offset: int, timestamp_ms: Any
    ) -> None:
        data = orjson.loads(value or b"null")
        for ev in data if isinstance(data, list) else [data]:
            out.events.append((str(ev.get("event_id")).encode(), orjson.dumps(ev)))


def main() -> int:
    from services.enricher.main import run

    return run(load_settings(), rules=PassThrough())


if __name__ == "__main__":
    sys.exit(main())
