#!/bin/bash
# Creates auditpipe's topics as schemas/topics/*.yaml define them (tests/deploy checks that they match).
# Idempotent (--if-not-exists): safe to run on every `docker compose up`.
# REPLICATION_FACTOR: 1 for the single-node compose broker; 3 (with min.insync.replicas=2) on a
# three-broker cluster. Partition counts can be raised later (never lowered): see docs/operations.md.
set -euo pipefail
BOOTSTRAP="${BOOTSTRAP:-kafka:9094}"
RF="${REPLICATION_FACTOR:-1}"
# schemas/topics: min.insync.replicas 1 on one broker, 2 with replication factor 3 (environment "cluster")
MIN_ISR="${MIN_INSYNC_REPLICAS:-$(( RF >= 3 ? 2 : 1 ))}"
KT=/opt/kafka/bin/kafka-topics.sh
# The super user's client settings (mutual TLS; admin.properties); empty for an open development broker.
ADMIN=(${ADMIN_CONFIG:+--command-config "$ADMIN_CONFIG"})

for _ in $(seq 1 60); do
  "$KT" --bootstrap-server "$BOOTSTRAP" "${ADMIN[@]}" --list >/dev/null 2>&1 && break
  sleep 2
done

create_topic() { # name partitions retention_ms compression [extra --config args...]
  local name=$1 partitions=$2 retention_ms=$3 compression=$4
  shift 4
  "$KT" --bootstrap-server "$BOOTSTRAP" "${ADMIN[@]}" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor "$RF" \
    --config "retention.ms=$retention_ms" --config "compression.type=$compression" \
    --config "min.insync.replicas=$MIN_ISR" "$@"
  echo "topic ready: $name"
}

create_topic audit.raw.v1 6 604800000 zstd --config max.message.bytes=8388608
create_topic audit.events.v1 6 1209600000 zstd --config max.message.bytes=8388608
create_topic audit.deadletter.v1 3 2592000000 zstd --config max.message.bytes=8388608
# The org audit switch set through the query API, followed by the enricher: compacted (the latest record
# per org is the state; retention.ms does not apply to a compact-only topic).
create_topic audit.org-switch.v1 1 604800000 zstd --config cleanup.policy=compact
# Signed digests (schemas/topics/audit.digests.v1.yaml): append-only, never compacted, kept forever.
create_topic audit.digests.v1 1 -1 zstd
# The enricher's state topic (AUDITPIPE_ENRICHER__STATE_TOPIC) is compacted: it keeps the last switch
# state per org forever, so it must not be auto-created with the broker's delete policy.
create_topic audit.enricher.state.v1 1 604800000 zstd --config cleanup.policy=compact
# The enricher's faust table changelog (<enricher.consumer_group>-suppressed_daily-changelog), as many
# partitions as audit.raw.v1.
create_topic auditpipe-enricher-suppressed_daily-changelog 6 604800000 producer --config cleanup.policy=compact
# faust's leader-election topic of the enricher's group (<enricher.consumer_group>-__assignor-__leader).
create_topic auditpipe-enricher-__assignor-__leader 1 604800000 producer

"$KT" --bootstrap-server "$BOOTSTRAP" "${ADMIN[@]}" --describe --topic 'audit\..*' | grep -E '^Topic:' || true
