#!/usr/bin/env bash
# Installs the Debian packages tests and the demo need, only when they are missing:
#   chromium (browser tests of the web viewer), rsyslog + rsyslog-openssl (real syslog receiver
#   for the forwarder, TCP and TLS),
#   kcat (a non-Python Kafka producer for the wire-format test),
#   maven + a JDK 17 (Kafka is fetched from Maven Central and runs on Java 17).
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
# TLS driver for rsyslog's imtcp (the forwarder's syslog-over-TLS conformance test)
compgen -G '/usr/lib/*/rsyslog/lmnsd_ossl.so' >/dev/null || need+=(rsyslog-openssl)
# kcat: the non-Python producer of docs/wire-format.md (tests/ingest/test_kcat.py)
command -v kcat >/dev/null || need+=(kcat)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
