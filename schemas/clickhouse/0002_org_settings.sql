-- Per-organisation audit settings (retention days, audit on/off), last write wins.
CREATE TABLE IF NOT EXISTS ${db}.org_settings
(
    org_id          String,
    retention_days  UInt16,
    audit_enabled   Bool,
    updated_by      String,
    updated_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY org_id;
