-- auditpipe: ClickHouse roles and users (RBAC). Run as an administrator with access management,
-- e.g. `clickhouse-client --multiquery < deploy/clickhouse/grants.sql`, after `auditpipe migrate`.
-- Database `audit` is the default (AUDITPIPE_CLICKHOUSE_DATABASE); replace it if yours differs.
-- Passwords below are placeholders: set real ones (or use certificates/LDAP) before running.
--
-- Immutability: only `auditpipe_admin` may ALTER/DROP/TRUNCATE. Nobody gets ALTER UPDATE on events.
-- The only DELETE is the archive job's, after a verified archive of days beyond retention
-- (docs/sink.md "Retention and archives"); give it to a separate archiver user if the sink must stay INSERT-only.

-- ---------------------------------------------------------------- roles
CREATE ROLE IF NOT EXISTS auditpipe_writer;
CREATE ROLE IF NOT EXISTS auditpipe_archiver;
CREATE ROLE IF NOT EXISTS auditpipe_sealer;
CREATE ROLE IF NOT EXISTS auditpipe_query_api;
CREATE ROLE IF NOT EXISTS auditpipe_analyst;
CREATE ROLE IF NOT EXISTS auditpipe_admin;

-- The sink: append rows, nothing else. It writes the record bytes into the Null input table, whose view
-- fills events (0012); it looks up and adds first-content entries (0013; never deletes one) and keeps
-- conflicting records aside (0014).
GRANT INSERT ON audit.events TO auditpipe_writer;
GRANT INSERT ON audit.events_input TO auditpipe_writer;
GRANT SELECT, INSERT ON audit.event_ids TO auditpipe_writer;
GRANT INSERT ON audit.event_conflicts TO auditpipe_writer;

-- The archive job (inside the sink, or `auditpipe archive run` from cron with its own user): read the
-- rows it exports and verifies, read per-org retention, and delete exactly the archived days.
GRANT SELECT ON audit.events TO auditpipe_archiver;
GRANT SELECT ON audit.org_settings TO auditpipe_archiver;
GRANT ALTER DELETE ON audit.events TO auditpipe_archiver;
-- the time-sorted copy (0011) loses an archived day together with events (first, same filter)
GRANT ALTER DELETE ON audit.events_by_time TO auditpipe_archiver;
-- never deletes a row stored after the newest sealed horizon (0015)
GRANT SELECT ON audit.seal_runs TO auditpipe_archiver;
-- conflicting records (0014) older than the longest retention (retention.max_days) go, audited first
GRANT SELECT, ALTER DELETE ON audit.event_conflicts TO auditpipe_archiver;

-- The sealer (`auditpipe seal`, docs/integrity.md): reads what was stored, appends its own records of
-- what it sealed, signed and published (0015). Never changes or deletes a row, its own included.
GRANT SELECT ON audit.events TO auditpipe_sealer;
GRANT SELECT, INSERT ON audit.sealed_events TO auditpipe_sealer;
GRANT SELECT, INSERT ON audit.digests TO auditpipe_sealer;
GRANT SELECT, INSERT ON audit.digest_published TO auditpipe_sealer;
GRANT SELECT, INSERT ON audit.seal_runs TO auditpipe_sealer;

-- The query API: read events; write per-org retention settings (never events).
GRANT SELECT ON audit.events TO auditpipe_query_api;
GRANT SELECT ON audit.events_dedup TO auditpipe_query_api;
-- the view-fed copies the API reads for target ids (0010) and free text across orgs (0011)
GRANT SELECT ON audit.events_by_target TO auditpipe_query_api;
GRANT SELECT ON audit.events_by_time TO auditpipe_query_api;
GRANT SELECT, INSERT ON audit.org_settings TO auditpipe_query_api;
GRANT SELECT ON audit.event_conflicts TO auditpipe_query_api;
-- integrity status and verification (GET /api/integrity...): what was sealed, and the record of checks
GRANT SELECT ON audit.sealed_events TO auditpipe_query_api;
GRANT SELECT ON audit.digests TO auditpipe_query_api;
GRANT SELECT, INSERT ON audit.integrity_checks TO auditpipe_query_api;

-- Analysts who query ClickHouse directly: read-only. events_dedup is the view to use (never a duplicate);
-- SELECT on events is needed because a normal view runs with the invoker's rights (SQL SECURITY INVOKER).
GRANT SELECT ON audit.events_dedup TO auditpipe_analyst;
GRANT SELECT ON audit.events TO auditpipe_analyst;
-- `auditpipe verify` run by an auditor with this role (it only reads)
GRANT SELECT ON audit.sealed_events TO auditpipe_analyst;

-- Schema changes (auditpipe migrate) and break-glass operations. Keep this user off the network.
GRANT ALL ON audit.* TO auditpipe_admin WITH GRANT OPTION;

-- ---------------------------------------------------------------- settings profiles
CREATE SETTINGS PROFILE IF NOT EXISTS auditpipe_readonly SETTINGS
    readonly = 2 CONST,            -- no writes, no DDL; settings (and query parameters) may still be set
    allow_ddl = 0 CONST,
    max_execution_time = 60,
    max_memory_usage = 4000000000,
    max_result_rows = 10000000;
CREATE SETTINGS PROFILE IF NOT EXISTS auditpipe_service SETTINGS
    allow_ddl = 0 CONST,
    max_execution_time = 600;

-- ---------------------------------------------------------------- users
CREATE USER IF NOT EXISTS auditpipe_sink IDENTIFIED WITH sha256_password BY 'CHANGE-ME-sink'
    HOST LOCAL SETTINGS PROFILE auditpipe_service;
GRANT auditpipe_writer, auditpipe_archiver TO auditpipe_sink;
SET DEFAULT ROLE auditpipe_writer, auditpipe_archiver TO auditpipe_sink;

CREATE USER IF NOT EXISTS auditpipe_seal IDENTIFIED WITH sha256_password BY 'CHANGE-ME-seal'
    HOST LOCAL SETTINGS PROFILE auditpipe_service;
GRANT auditpipe_sealer TO auditpipe_seal;
SET DEFAULT ROLE auditpipe_sealer TO auditpipe_seal;

CREATE USER IF NOT EXISTS auditpipe_api IDENTIFIED WITH sha256_password BY 'CHANGE-ME-api'
    HOST LOCAL SETTINGS PROFILE auditpipe_service;
GRANT auditpipe_query_api TO auditpipe_api;
SET DEFAULT ROLE auditpipe_query_api TO auditpipe_api;

CREATE USER IF NOT EXISTS analyst_ada IDENTIFIED WITH sha256_password BY 'CHANGE-ME-ada'
    SETTINGS PROFILE auditpipe_readonly;
GRANT auditpipe_analyst TO analyst_ada;
SET DEFAULT ROLE auditpipe_analyst TO analyst_ada;

CREATE USER IF NOT EXISTS auditpipe_admin IDENTIFIED WITH sha256_password BY 'CHANGE-ME-admin' HOST LOCAL;
GRANT auditpipe_admin TO auditpipe_admin;
SET DEFAULT ROLE auditpipe_admin TO auditpipe_admin;

-- Optional: restrict an analyst to one organisation with a row policy (applies to the view too).
-- CREATE ROW POLICY IF NOT EXISTS ada_org_acme ON audit.events FOR SELECT USING org_id = 'org-acme' TO analyst_ada;
