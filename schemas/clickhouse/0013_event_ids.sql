-- First content wins (owner: sink; docs/sink.md "First content wins"). One entry per event id ever
-- stored: the content hash, org and time of its FIRST stored content and when it was stored. The sink
-- looks up every batch's ids here (one query, the ids sent as external data) and inserts into events only
-- ids it does not know; a known id with the same hash is an invisible redelivery, with another hash a
-- conflict (0014), never stored in events or its view tables.
-- EmbeddedRocksDB: a key-value table, so a lookup of 50k ids reads 50k keys (measured ~0.1 s against 1M
-- keys), whatever the size; an INSERT of an existing key overwrites it, so only the sink writes here, and
-- only ids it has just inserted into events (after that insert succeeded: never an id events lacks).
-- Nothing deletes from it: the archive job removes rows of events, never their ids, so a redelivered or
-- forged copy of an archived event cannot come back. Per server: on a cluster, shard by event_id.
CREATE TABLE IF NOT EXISTS ${db}.event_ids
(
    event_id     UUID,
    content_hash FixedString(64),
    org_id       String,
    occurred_at  DateTime64(3, 'UTC'),
    inserted_at  DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY event_id;

-- Backfill from what events holds: per id, the first stored copy (smallest inserted_at). Run with the sink
-- stopped (docs/operations.md "Upgrading"); the aggregation spills to disk beyond 1 GB.
INSERT INTO ${db}.event_ids (event_id, content_hash, org_id, occurred_at, inserted_at)
SELECT
    event_id,
    argMin(content_hash, inserted_at),
    argMin(org_id, inserted_at),
    argMin(occurred_at, inserted_at),
    min(inserted_at)
FROM ${db}.events
GROUP BY event_id
SETTINGS max_bytes_before_external_group_by = 1000000000;
