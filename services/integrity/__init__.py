"""Tamper evidence (docs/integrity.md): sealing windows of stored events into signed, chained digests
(``auditpipe seal``) and verifying ClickHouse, the archives and the digests against each other
(``auditpipe verify``, ``GET /api/integrity``).

- :mod:`.keys` — Ed25519 signing and trusted public keys;
- :mod:`.rules` — pure rules: windows, the chain, what a difference means;
- :mod:`.store` — the ClickHouse side (sealed membership, Merkle roots, per-event checks, digests table);
- :mod:`.topic` — the Kafka side (the digest topic, the sink's committed progress);
- :mod:`.files` — digest files beside the archives;
- :mod:`.seal` — the sealing job and its process; :mod:`.verify` — verification.
"""
