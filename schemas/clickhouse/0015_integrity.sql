-- Tamper evidence (owner: integrity; docs/integrity.md).
--
-- sealed_events: the membership of every sealed window, written once by the sealer with one
-- INSERT ... SELECT from events (ids already sealed are excluded, so a re-run after a crash only adds
-- what is missing). An event belongs to the window in which the pipeline first stored it; this table
-- is what a signed Merkle root covers, so membership is never recomputed from inserted_at later (a
-- redelivered copy stored afterwards, which ReplacingMergeTree prefers, cannot move an event). Editing
-- this table breaks the signed root of the window. content_hash here is SHA-256 of the stored
-- event_json without its content_hash member, as computed by ClickHouse at sealing; columns_hash the
-- fingerprint of the flattened columns' values as event_json holds them (services/integrity/store.py), so
-- verification finds an edited column without parsing JSON again.
CREATE TABLE IF NOT EXISTS ${db}.sealed_events
(
    org_id        LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    event_id      UUID,
    occurred_at   DateTime64(3, 'UTC') COMMENT 'locates the row in events and its archive day',
    content_hash  FixedString(64),
    columns_hash  FixedString(64),

    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = MergeTree
ORDER BY (org_id, window_start, event_id);

-- The signed digests as the sealer stored them before publishing (one of three places a verifier
-- compares: the audit.digests.v1 topic, the digest files, this table). record = the published bytes.
CREATE TABLE IF NOT EXISTS ${db}.digests
(
    org_id        LowCardinality(String),
    sequence      UInt64,
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    event_count   UInt64,
    digest_hash   FixedString(64),
    record        String,
    stored_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (org_id, window_start);

-- Digests whose publication (topic, file, audit event) completed; the sealer republishes the others.
CREATE TABLE IF NOT EXISTS ${db}.digest_published
(
    org_id        LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    digest_hash   FixedString(64),
    published_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (org_id, window_start);

-- One row per completed seal run: every row stored before `horizon` is in sealed_events and every
-- known org has a digest up to it. The archive job never deletes rows stored after max(horizon).
CREATE TABLE IF NOT EXISTS ${db}.seal_runs
(
    horizon       DateTime64(3, 'UTC'),
    digests       UInt32,
    events        UInt64,
    finished_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY horizon;

-- Verifications run through the query API (the viewer's "last verified" indicator).
CREATE TABLE IF NOT EXISTS ${db}.integrity_checks
(
    org_id        String,
    since         Nullable(DateTime64(3, 'UTC')),
    until         Nullable(DateTime64(3, 'UTC')),
    sealed_through Nullable(DateTime64(3, 'UTC')),
    ok            Bool,
    summary       String,
    report        String CODEC(ZSTD(3)),
    checked_by    String,
    checked_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (org_id, checked_at);

-- The sealer reads each run's rows by storage time; events is sorted by (org, occurred_at), so a minmax
-- index on inserted_at lets it skip the parts written before the previous run.
ALTER TABLE ${db}.events ADD INDEX IF NOT EXISTS idx_inserted_at inserted_at TYPE minmax GRANULARITY 1;
