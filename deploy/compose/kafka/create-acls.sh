#!/bin/bash
# Creates auditpipe's SCRAM users and Kafka ACLs (deploy/kafka/acls.yaml; docs/security.md) on the compose
# broker, as the super user auditpipe-admin over the mutual-TLS listener (ADMIN_CONFIG). Idempotent: a
# user's password is (re)set from its KAFKA_PASSWORD_* variable, an existing ACL is left as it is.
# The block between the markers is generated from the table; tests/deploy checks that it matches.
set -euo pipefail
BOOTSTRAP="${BOOTSTRAP:-kafka:9094}"
ADMIN_CONFIG="${ADMIN_CONFIG:-/opt/auditpipe/admin.properties}"
BIN=/opt/kafka/bin

user() { # principal password-variable
  local name=$1 var=$2
  local pw=${!var:?set $var in deploy/compose/.env}
  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --alter \
    --entity-type users --entity-name "$name" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$pw]" >/dev/null
  echo "scram user ready: $name"
}

acl() { # principal resource-type name pattern operation...
  local principal=$1 type=$2 name=$3 pattern=$4
  shift 4
  local ops=()
  for op in "$@"; do ops+=(--operation "$op"); done
  local pattern_type=literal
  [ "$pattern" = prefix ] && pattern_type=prefixed
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --add \
    --allow-principal "User:$principal" "${ops[@]}" "--$type" "$name" \
    --resource-pattern-type "$pattern_type" >/dev/null
  echo "acl: $principal $* on $type $name ($pattern)"
}

# --- ACLs: generated from deploy/kafka/acls.yaml by python -m tests.deploy.kafka_acls ---
user auditpipe-ingest KAFKA_PASSWORD_INGEST
user auditpipe-enricher KAFKA_PASSWORD_ENRICHER
user auditpipe-sink KAFKA_PASSWORD_SINK
user auditpipe-forwarder KAFKA_PASSWORD_FORWARDER
user auditpipe-query-api KAFKA_PASSWORD_QUERY_API
user auditpipe-seal KAFKA_PASSWORD_SEAL
user auditpipe-archive KAFKA_PASSWORD_ARCHIVE
user auditpipe-producer KAFKA_PASSWORD_PRODUCER
acl auditpipe-ingest topic audit.raw.v1 literal Write
acl auditpipe-enricher topic audit.raw.v1 literal Read
acl auditpipe-enricher group auditpipe-enricher literal Read
acl auditpipe-enricher topic audit.org-switch.v1 literal Read
acl auditpipe-enricher topic audit.events.v1 literal Write
acl auditpipe-enricher topic audit.deadletter.v1 literal Write
acl auditpipe-enricher topic audit.enricher.state.v1 literal Read Write
acl auditpipe-enricher topic auditpipe-enricher- prefix Create Read Write DescribeConfigs
acl auditpipe-sink topic audit.events.v1 literal Read
acl auditpipe-sink group auditpipe-sink literal Read
acl auditpipe-sink topic audit.deadletter.v1 literal Write
acl auditpipe-sink topic audit.raw.v1 literal Write
acl auditpipe-forwarder topic audit.events.v1 literal Read
acl auditpipe-forwarder group auditpipe-forwarder- prefix Read
acl auditpipe-forwarder topic audit.deadletter.v1.forwarder. prefix Create Write
acl auditpipe-query-api topic audit.raw.v1 literal Write
acl auditpipe-query-api topic audit.org-switch.v1 literal Write
acl auditpipe-query-api topic audit.digests.v1 literal Read
acl auditpipe-seal topic audit.digests.v1 literal Write
acl auditpipe-seal topic audit.raw.v1 literal Write
acl auditpipe-seal topic audit.events.v1 literal Describe
acl auditpipe-seal group auditpipe-sink literal Describe
acl auditpipe-archive topic audit.raw.v1 literal Write
acl auditpipe-producer topic audit.raw.v1 literal Write
# --- end of generated ACLs ---
