-- Plausible event time (owner: sink). An occurred_at of 1970 (a producer's zero timestamp) or centuries
-- ahead would land in a partition of its own and never age out by retention; ClickHouse refuses it
-- (code 469) and the sink dead-letters exactly that row, the rest of its batch still lands.
ALTER TABLE ${db}.events ADD CONSTRAINT IF NOT EXISTS occurred_at_plausible
    CHECK occurred_at >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC')
      AND occurred_at < toDateTime64('2200-01-01 00:00:00', 3, 'UTC');
