-- The sink's write path (owner: sink; docs/sink.md "Write path"): bytes in, ClickHouse parses.
-- The sink sends each record of audit.events.v1 exactly as it came from Kafka
-- (`INSERT INTO events_input FORMAT JSONAsString`); nothing is stored in this Null table: its view computes
-- every column of events from the record in C++ and writes events, whose own views write events_by_target
-- (0010) and events_by_time (0011) in the same INSERT. The columns are what services/sink/rows.py maps
-- (tests/sink/test_input_view.py inserts the same events both ways and compares every column):
--   * event_json = the record bytes unchanged (content_hash is re-derivable from it);
--   * "" for an absent or null string, 0 for an absent status, IPv4 client_ip mapped into IPv6;
--   * request_query / request_payload / snapshot: the JSON text of the value, "" when absent or null;
--     changes: the JSON array of {field, before, after} (each key present, as rows.py writes it), "" when
--     empty. JSON text is ClickHouse's serialisation of the value: equal as JSON to rows.py's, byte-equal
--     for ordinary values (it differs only in escapes like \u001F vs \u001f and numbers like 1.0 vs 1).
-- The record is parsed once (JSONExtractKeysAndValuesRaw: top-level member -> raw text); every field is
-- then read from its small member text. That halves the parse cost of 36 JSONExtract calls on the whole
-- record (measured: 0.47 s instead of 0.92 s for 100k records of ~1 KB on this 2-core machine).
-- A record ClickHouse cannot map (no parseable occurred_at, an event_id that is not a UUID, a content_hash
-- longer than 64) fails the INSERT with a bad-data code; the sink bisects and dead-letters that record.
CREATE TABLE IF NOT EXISTS ${db}.events_input (record String) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.events_input_mv TO ${db}.events AS
SELECT
    toUUID(JSONExtractString(m['event_id'])) AS event_id,
    JSONExtractString(m['org_id']) AS org_id,
    parseDateTime64BestEffort(JSONExtractString(m['occurred_at']), 3, 'UTC') AS occurred_at,
    parseDateTime64BestEffort(JSONExtractString(m['received_at']), 3, 'UTC') AS received_at,
    parseDateTime64BestEffort(JSONExtractString(m['enriched_at']), 3, 'UTC') AS enriched_at,
    JSONExtractString(m['project_id']) AS project_id,
    JSONExtractString(m['environment_id']) AS environment_id,
    JSONExtractString(m['actor'], 'type') AS actor_type,
    JSONExtractString(m['actor'], 'id') AS actor_id,
    JSONExtractString(m['actor'], 'name') AS actor_name,
    JSONExtractString(m['actor'], 'email') AS actor_email,
    JSONExtractString(m['action']) AS action,
    JSONExtractString(m['event_type']) AS event_type,
    JSONExtractString(m['target'], 'type') AS target_type,
    JSONExtractString(m['target'], 'id') AS target_id,
    JSONExtractString(m['target'], 'name') AS target_name,
    JSONExtractString(m['source']) AS source,
    toUInt16(JSONExtractUInt(m['status'])) AS status,
    JSONExtractString(m['change']) AS change,
    JSONExtractString(m['client_ip']) AS client_ip,
    -- an IPv6 zone (fe80::1%eth0) is dropped, as Python's ipaddress packs the address without it
    toIPv6OrDefault(if(position(client_ip, ':') > 0, splitByChar('%', client_ip)[1], client_ip)) AS client_ip_v6,
    JSONExtractString(m['request'], 'method') AS request_method,
    JSONExtractString(m['request'], 'path') AS request_path,
    if(JSONExtractRaw(m['request'], 'query') AS q IN ('', 'null'), '', q) AS request_query,
    if(JSONExtractRaw(m['request'], 'payload') AS p IN ('', 'null'), '', p) AS request_payload,
    JSONExtractString(m['request'], 'user_agent') AS user_agent,
    JSONExtractString(m['request'], 'peer_ip') AS peer_ip,
    JSONExtractString(m['request'], 'x_forwarded_for') AS x_forwarded_for,
    JSONExtract(m['metadata'], 'Map(String, String)') AS metadata,
    if(
        empty(JSONExtractArrayRaw(m['changes']) AS cs),
        '',
        concat('[', arrayStringConcat(arrayMap(c -> concat(
            '{"field":', JSONExtractRaw(c, 'field'),
            ',"before":', if(JSONHas(c, 'before'), JSONExtractRaw(c, 'before'), 'null'),
            ',"after":', if(JSONHas(c, 'after'), JSONExtractRaw(c, 'after'), 'null'), '}'), cs), ','), ']')
    ) AS changes,
    if(m['snapshot'] IN ('', 'null'), '', m['snapshot']) AS snapshot,
    JSONExtractString(m['producer']) AS producer,
    JSONExtract(m['sensitive_paths'], 'Array(String)') AS sensitive_paths,
    JSONExtractString(m['content_hash']) AS content_hash,
    toUInt8(JSONExtractUInt(m['schema_version'])) AS schema_version,
    record AS event_json
FROM
(
    SELECT record, CAST(JSONExtractKeysAndValuesRaw(record), 'Map(String, String)') AS m
    FROM ${db}.events_input
);
