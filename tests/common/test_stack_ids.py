"""The local Kafka's cluster id must be accepted by kafka-storage's argument parser."""

from __future__ import annotations

import base64
import re

from services.common.stack.manager import new_cluster_id


def test_cluster_ids_never_start_with_a_dash() -> None:
    # a leading '-' (1 id in 64) made `kafka-storage format -t -x…` fail: "expected one argument"
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [c for c in ids if c.startswith("-")]
    for c in ids[:200]:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", c)
        assert len(base64.urlsafe_b64decode(c + "==")) == 16
    assert len(set(ids)) == len(ids)
