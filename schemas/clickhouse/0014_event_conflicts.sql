-- Conflicting records (owner: sink; docs/sink.md "First content wins"): a record whose event_id is already
-- stored (event_ids, 0013) with another content_hash. It is never stored in events; it is kept here with
-- both sides (its own hash, org and time beside those of the stored first content), its bytes as they came
-- from Kafka and its Kafka coordinates, for Managers (GET /api/conflicts) and auditors.
-- One row per Kafka record: a batch re-read after a crash may write its conflicts again (a retried INSERT
-- carries the same de-duplication token and is skipped); readers keep the first row per
-- (topic, partition, offset) — `ORDER BY seen_at LIMIT 1 BY topic, partition, offset`.
CREATE TABLE IF NOT EXISTS ${db}.event_conflicts
(
    event_id            UUID,
    org_id              String COMMENT 'org of the conflicting record',
    occurred_at         DateTime64(3, 'UTC') COMMENT 'occurred_at of the conflicting record (0 if unreadable)',
    content_hash        String COMMENT 'content_hash of the conflicting record',
    stored_org_id       String,
    stored_occurred_at  DateTime64(3, 'UTC'),
    stored_content_hash FixedString(64),
    stored_inserted_at  DateTime64(3, 'UTC'),
    record              String CODEC(ZSTD(3)) COMMENT 'the conflicting record, bytes as read from Kafka',
    topic               String,
    partition           UInt32,
    offset              UInt64,
    seen_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (seen_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
