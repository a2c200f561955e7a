-- Target-id lookup across orgs (owner: query API; docs/query_api.md "Speed").
-- events is sorted by (org_id, occurred_at, event_id), so "one target id, all orgs, newest first" had to
-- test the target_id bloom filter of every granule. This narrow copy is sorted by target and time: the
-- API reads the newest candidate keys of a target here and then reads exactly those rows from events
-- with `(org_id, occurred_at, event_id) IN (...)`, which the primary key of events prunes to a few
-- granules. It only narrows: every filter, the scope and de-duplication are applied to events itself.
-- Rows removed from events (archive/retention deletes) may stay here: they match nothing in events, so
-- they are harmless (the API falls back to the plain query when a candidate window comes up short).
-- Duplicates (redelivery) share the key and collapse on merge like in events. Rows are ~30 bytes: granules
-- of 1024 make one lookup read ~1k keys per part instead of 8k.
CREATE TABLE IF NOT EXISTS ${db}.events_by_target
(
    target_id   String,
    occurred_at DateTime64(3, 'UTC'),
    org_id      LowCardinality(String),
    event_id    UUID
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (target_id, occurred_at, event_id)
SETTINGS index_granularity = 1024;

-- Written in the same INSERT as events (every writer: the sink, tests, the benchmark generator).
CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.events_by_target_mv TO ${db}.events_by_target AS
SELECT target_id, occurred_at, org_id, event_id FROM ${db}.events;

-- Backfill what events held before the view existed. Rows inserted while this runs may be written twice
-- (view + backfill): same key, collapsed by ReplacingMergeTree, and harmless to an IN list meanwhile.
INSERT INTO ${db}.events_by_target (target_id, occurred_at, org_id, event_id)
SELECT target_id, occurred_at, org_id, event_id FROM ${db}.events;
