-- Free-text search across organisations (owner: query API; docs/query_api.md "Speed").
-- events is sorted by (org_id, occurred_at, event_id): "q over the last 7 days, all orgs, newest first"
-- must read at least one granule of every org in any time window (a 1-hour window read 1.6M rows) and
-- its ngram bloom filter prunes little for common words. This copy holds only what a listing shows and
-- filters on (no payload, request, snapshot or event_json), sorted by time, so:
--   * a common word is answered by reading the newest rows in order and stopping after one page;
--   * a rare word is answered by the text index (inverted, row-level postings of 3-grams), which reads
--     the rows containing every 3-gram of the pattern instead of the text of every row in the range.
-- The API answers "q, newest or oldest first, no org" from here alone (listing columns are all here);
-- with an org (filter or token scope) events' own sort key is better and is used.
-- Rows removed from events by the archive job are removed here first (services/sink/archive.py).
-- Duplicates (redelivery) share (occurred_at, event_id), are adjacent in every read and collapse on merge;
-- the API skips adjacent repeats. Text indexes are GA from ClickHouse 26.2.
-- Cost on the benchmark's 10M events: ~640 MB of columns + ~500 MB of index (events: 2.6 GB).
CREATE TABLE IF NOT EXISTS ${db}.events_by_time
(
    occurred_at     DateTime64(3, 'UTC'),
    event_id        UUID,
    org_id          LowCardinality(String),
    project_id      String,
    environment_id  String,
    actor_type      LowCardinality(String),
    actor_id        String,
    actor_name      String,
    actor_email     String,
    action          LowCardinality(String),
    event_type      LowCardinality(String),
    target_type     LowCardinality(String),
    target_id       String,
    target_name     String,
    source          LowCardinality(String),
    status          UInt16,
    change          String,
    client_ip       String,
    client_ip_v6    IPv6,
    inserted_at     DateTime64(3, 'UTC'),

    -- the same expression as idx_text on events and query.TEXT_EXPR, so `LIKE` on it uses the index
    INDEX idx_text lower(concat(target_id, ' ', target_name, ' ', action, ' ', change))
                   TYPE text(tokenizer = ngrams(3))
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (occurred_at, event_id)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000;

-- The view tables remember the blocks of the last 1000 inserts too (as events does since 0003), so a
-- batch the sink retries with the same token is not written to them twice.
ALTER TABLE ${db}.events_by_target MODIFY SETTING non_replicated_deduplication_window = 1000;

-- Written in the same INSERT as events (every writer: the sink, tests, the benchmark generator); the sink
-- inserts with deduplicate_blocks_in_dependent_materialized_views so a retried batch reaches both once.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.events_by_time_mv TO ${db}.events_by_time AS
SELECT occurred_at, event_id, org_id, project_id, environment_id, actor_type, actor_id, actor_name,
       actor_email, action, event_type, target_type, target_id, target_name, source, status, change,
       client_ip, client_ip_v6, inserted_at
FROM ${db}.events;

-- Backfill what events held before the view existed. Rows inserted while this runs may be written twice
-- (view + backfill): same key, adjacent, skipped by the API and collapsed on merge.
INSERT INTO ${db}.events_by_time
SELECT occurred_at, event_id, org_id, project_id, environment_id, actor_type, actor_id, actor_name,
       actor_email, action, event_type, target_type, target_id, target_name, source, status, change,
       client_ip, client_ip_v6, inserted_at
FROM ${db}.events;
