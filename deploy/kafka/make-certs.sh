#!/bin/bash
# Makes the TLS material of a Kafka cluster for auditpipe with openssl: a private CA, the brokers' key and
# certificate (one for every broker, valid for the names given), and the admin client certificate of the
# setup job. Kafka reads PEM keystores directly (ssl.keystore.type=PEM), so no Java keystore is needed.
#
#   deploy/kafka/make-certs.sh OUT_DIR NAME... # e.g. deploy/kafka/make-certs.sh deploy/compose/kafka/certs kafka localhost 127.0.0.1
#
# OUT_DIR/ca.crt      the CA certificate: every client's AUDITPIPE_KAFKA_SSL_CAFILE, the brokers' truststore
# OUT_DIR/ca.key      the CA key: keep it offline (it signs new certificates), never mount it anywhere
# OUT_DIR/kafka.pem   the brokers' private key + certificate chain (ssl.keystore.location), subject CN=kafka
# OUT_DIR/admin.pem   the setup job's key + certificate, subject CN=auditpipe-admin (a Kafka super user)
#
# The subjects become principals through ssl.principal.mapping.rules (RULE:^CN=([^,]+)$/$1/): User:kafka
# and User:auditpipe-admin. Services authenticate with SCRAM passwords, not certificates (docs/security.md).
# Existing files are kept (re-running only fills what is missing); delete OUT_DIR to start over.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR NAME..." >&2; exit 2; }
OUT=$1
shift
DAYS=${CERT_DAYS:-825}
mkdir -p "$OUT"
umask 077

san=""
for n in "$@"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}

if [ ! -f "$OUT/ca.key" ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$OUT/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$OUT/ca.key" -sha256 -days "$DAYS" -subj "/CN=auditpipe-kafka-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$OUT/ca.crt"
fi

issue() { # name subject extended-key-usage [subjectAltName]
  local name=$1 subject=$2 eku=$3 alt=${4:-}
  [ -f "$OUT/$name.pem" ] && return 0
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$OUT/$name.key" 2>/dev/null
  openssl req -new -key "$OUT/$name.key" -subj "$subject" -out "$OUT/$name.csr"
  local ext="$OUT/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$alt" ] && echo "subjectAltName=$alt"
  } >"$ext"
  openssl x509 -req -in "$OUT/$name.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$ext" -out "$OUT/$name.crt" 2>/dev/null
  cat "$OUT/$name.key" "$OUT/$name.crt" "$OUT/ca.crt" >"$OUT/$name.pem"
  rm -f "$OUT/$name.csr" "$OUT/$name.ext" "$OUT/$name.key" "$OUT/$name.crt"
}

# Brokers act as servers (clients connect) and as clients (to each other and to the controllers).
issue kafka "/CN=kafka" "serverAuth,clientAuth" "$san"
issue admin "/CN=auditpipe-admin" "clientAuth"
chmod 0644 "$OUT/ca.crt"
chmod 0600 "$OUT/ca.key" "$OUT/kafka.pem" "$OUT/admin.pem"
echo "certificates in $OUT: ca.crt (clients' AUDITPIPE_KAFKA_SSL_CAFILE), kafka.pem, admin.pem; keep ca.key offline"
