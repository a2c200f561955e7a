-- Insert de-duplication for the non-replicated events table (owner: sink).
-- The sink sends every batch with insert_deduplication_token = topic/partition/offset ranges of the batch,
-- so a batch retried after a timeout (did the first attempt land?) is stored once. Plain MergeTree only
-- remembers block hashes when non_replicated_deduplication_window > 0 (default 0): keep the last 1000.
-- Redelivery with other batch boundaries (crash, rebalance) is handled by ReplacingMergeTree + FINAL reads.
ALTER TABLE ${db}.events MODIFY SETTING non_replicated_deduplication_window = 1000;
