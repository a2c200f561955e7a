"""Ingest: authenticated HTTP API that validates raw events and publishes them to ``audit.raw.v1``.

Pipeline of one request: read body (bounded) -> parse (UTF-8, JSON/NDJSON, depth) -> validate (contract)
-> authorise orgs -> stamp (event_id, received_at, producer, peer) -> publish and await acks -> answer.
"""
