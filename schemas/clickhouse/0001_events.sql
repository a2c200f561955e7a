-- The audit record. One row per enriched event; duplicates (redelivery) share event_id and sort key,
-- so ReplacingMergeTree collapses them on merge and reads de-duplicate with FINAL (see docs/architecture.md).
-- Organisation and time lead the sort key because every analyst question starts there.
CREATE TABLE IF NOT EXISTS ${db}.events
(
    event_id        UUID,
    org_id          LowCardinality(String),
    occurred_at     DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    enriched_at     DateTime64(3, 'UTC'),
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
    client_ip_v6    IPv6 COMMENT 'client_ip, IPv4 mapped into IPv6, for CIDR filters',
    request_method  LowCardinality(String),
    request_path    String,
    request_query   String CODEC(ZSTD(3)) COMMENT 'JSON',
    request_payload String CODEC(ZSTD(3)) COMMENT 'JSON, sensitive values replaced',
    user_agent      String,
    peer_ip         String,
    x_forwarded_for String,
    metadata        Map(String, String),
    changes         String CODEC(ZSTD(3)) COMMENT 'JSON array of {field, before, after}',
    snapshot        String CODEC(ZSTD(3)) COMMENT 'JSON object state after the event',
    producer        LowCardinality(String),
    sensitive_paths Array(String),
    content_hash    FixedString(64),
    schema_version  UInt8,
    event_json      String CODEC(ZSTD(3)) COMMENT 'the enriched event exactly as hashed and published',
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3),

    INDEX idx_event_id   event_id       TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_actor_id   actor_id       TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_actor_name actor_name     TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_target_id  target_id      TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_project    project_id     TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_env        environment_id TYPE bloom_filter(0.01)  GRANULARITY 1,
    INDEX idx_action     action         TYPE set(1024)           GRANULARITY 1,
    INDEX idx_ip         client_ip_v6   TYPE minmax              GRANULARITY 1,
    INDEX idx_text lower(concat(target_id, ' ', target_name, ' ', action, ' ', change))
                                        TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (org_id, occurred_at, event_id)
SETTINGS index_granularity = 8192;

-- What analysts who query ClickHouse directly should read: never a duplicate.
CREATE VIEW IF NOT EXISTS ${db}.events_dedup AS
SELECT * FROM ${db}.events FINAL;
