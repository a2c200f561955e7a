"""A private, secured Kafka broker for tests: TLS listeners, SCRAM users, the StandardAuthorizer and the
production ACL table (deploy/kafka/acls.yaml), built on the local stack (services.common.stack) through its
KafkaExtras hook. Certificates are made at start by deploy/kafka/make-certs.sh (openssl).

Listeners (ports of this engineer's private range 20200-20299, or ``base``):

    SECURE      base+0  SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN)    services
    CONTROLLER  base+1  SSL, client certificate required                   KRaft controller
    MTLS        base+2  SSL, client certificate required                   brokers, setup job, mTLS clients
    OPEN        base+3  PLAINTEXT (no identity: User:ANONYMOUS)            to show it gets nothing

Principals: the SCRAM users of the ACL table plus ``auditpipe-admin`` (super user), all with
SCRAM-SHA-512 and SCRAM-SHA-256 credentials; ``CN=<name>`` certificates map to ``User:<name>``.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from schemas.topics import TopicSpec, load_topics
from services.common.kafka import ensure_topics, security_kwargs
from services.common.settings import Settings, load_settings
from services.common.stack.manager import KafkaExtras, Stack

ROOT = Path(__file__).resolve().parents[2]
ACLS = ROOT / "deploy" / "kafka" / "acls.yaml"
MAKE_CERTS = ROOT / "deploy" / "kafka" / "make-certs.sh"
ADMIN = "auditpipe-admin"
STATE_TOPIC = "audit.enricher.state.v1"

# Kafka protocol codes (org.apache.kafka.common.acl / resource)
RESOURCE = {"topic": 2, "group": 3, "cluster": 4, "transactionalId": 5}
PATTERN = {"literal": 3, "prefix": 4}
OPERATION = {
    "All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7, "Describe": 8,
    "ClusterAction": 9, "DescribeConfigs": 10, "AlterConfigs": 11, "IdempotentWrite": 12,
}  # fmt: skip
ALLOW = 3


def acl_table() -> dict[str, Any]:
    return yaml.safe_load(ACLS.read_text())["principals"]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass
class SecureBroker:
    """``start()`` formats and starts the broker, creates the topics and applies the ACL table."""

    state_dir: Path
    base: int = 20200
    heap: str = "512m"
    passwords: dict[str, str] = field(default_factory=dict)
    stack: Stack | None = None

    @property
    def certs(self) -> Path:
        return self.state_dir / "certs"

    @property
    def secure(self) -> str:
        return f"127.0.0.1:{self.base}"

    @property
    def mtls(self) -> str:
        return f"127.0.0.1:{self.base + 2}"

    @property
    def open(self) -> str:
        return f"127.0.0.1:{self.base + 3}"

    # ----------------------------------------------------------------------------- client settings
    def settings(self, user: str, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> Settings:
        """Settings of a service running as ``user`` over SASL_SSL."""
        return load_settings(
            kafka_bootstrap=self.secure,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username=user,
            kafka_sasl_password=password if password is not None else self.passwords[user],
            kafka_ssl_cafile=self.certs / "ca.crt",
        )

    def mtls_settings(self, certfile: Path, keyfile: Path | None, key_password: str | None) -> Settings:
        return load_settings(
            kafka_bootstrap=self.mtls,
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=self.certs / "ca.crt",
            kafka_ssl_certfile=certfile,
            kafka_ssl_keyfile=keyfile,
            kafka_ssl_key_password=key_password,
        )

    def client_cert(self, name: str, key_password: str | None = None) -> tuple[Path, Path]:
        """A client certificate ``CN=name`` signed by the test CA: (cert, key), the key PKCS#8, encrypted
        with ``key_password`` when given."""
        key, csr, crt = (self.certs / f"client-{name}.{x}" for x in ("key", "csr", "crt"))
        enc = ["-aes-256-cbc", "-pass", f"pass:{key_password}"] if key_password else []
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", *enc, "-out", str(key))
        passin = ["-passin", f"pass:{key_password}"] if key_password else []
        openssl("req", "-new", "-key", str(key), *passin, "-subj", f"/CN={name}", "-out", str(csr))
        ext = self.certs / f"client-{name}.ext"
        ext.write_text("extendedKeyUsage=clientAuth\n")
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.certs / "ca.crt"),
            "-CAkey", str(self.certs / "ca.key"), "-CAcreateserial", "-days", "2", "-sha256",
            "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip
        return crt, key

    # ----------------------------------------------------------------------------- broker
    def extras(self) -> KafkaExtras:
        b, c, m, o = self.base, self.base + 1, self.base + 2, self.base + 3
        jaas_scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in self.passwords.items())
        props = {
            "listeners": f"SECURE://127.0.0.1:{b},CONTROLLER://127.0.0.1:{c},MTLS://127.0.0.1:{m},OPEN://127.0.0.1:{o}",
            "advertised.listeners": f"SECURE://127.0.0.1:{b},MTLS://127.0.0.1:{m},OPEN://127.0.0.1:{o}",
            "listener.security.protocol.map": "SECURE:SASL_SSL,CONTROLLER:SSL,MTLS:SSL,OPEN:PLAINTEXT",
            "inter.broker.listener.name": "MTLS",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.certs / "kafka.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.certs / "ca.crt"),
            "listener.name.controller.ssl.client.auth": "required",
            "listener.name.mtls.ssl.client.auth": "required",
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "listener.name.secure.scram-sha-512.sasl.jaas.config": jaas_scram,
            "listener.name.secure.scram-sha-256.sasl.jaas.config": jaas_scram,
            "listener.name.secure.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:kafka;User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
        }
        scram = tuple(
            (mech, u, pw) for u, pw in self.passwords.items() for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256")
        )
        return KafkaExtras(properties=props, scram_users=scram)

    def start(self, timeout_s: float = 180.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(MAKE_CERTS), str(self.certs), "kafka", "localhost", "127.0.0.1"], check=True,
                       capture_output=True)  # fmt: skip
        users = [ADMIN, *acl_table()]
        self.passwords = {u: secrets.token_urlsafe(18) for u in users}
        admin = self.settings(ADMIN).model_copy(
            update={
                "stack": load_settings().stack.model_copy(
                    update={
                        "state_dir": self.state_dir / "stack",
                        "kafka_controller_port": self.base + 1,
                        "kafka_heap": self.heap,
                    }
                )
            }
        )
        self.stack = Stack(admin, self.extras())
        self.stack.kafka_up()
        deadline = time.monotonic() + timeout_s
        while not self.stack.kafka_status().healthy:
            if time.monotonic() > deadline:
                log = (self.state_dir / "stack" / "kafka" / "stdout.log").read_text(errors="replace")
                raise RuntimeError("secure broker did not start: " + " | ".join(log.splitlines()[-5:]))
            time.sleep(1)
        state = TopicSpec(STATE_TOPIC, 1, 1, -1, "producer", [], [], "", "compact")
        topics = [*load_topics().values(), state]
        asyncio.run(ensure_topics(admin, topics))
        asyncio.run(apply_acls(admin, acl_table()))

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.down()


async def apply_acls(admin_settings: Settings, table: dict[str, Any]) -> int:
    """Create every ACL of ``table`` (allow, any host) through the Kafka protocol; returns how many."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=admin_settings.bootstrap_servers, **security_kwargs(admin_settings)
    )
    await admin.start()
    n = 0
    try:
        for principal, entry in table.items():
            for acl in entry["acls"]:
                for op in acl["ops"]:
                    req = CreateAclsRequest(
                        RESOURCE[acl["type"]],
                        acl.get("name", "kafka-cluster"),
                        PATTERN[acl.get("pattern", "literal")],
                        f"User:{principal}",
                        "*",
                        OPERATION[op],
                        ALLOW,
                    )
                    resp = await admin._send_request(req)  # noqa: SLF001 - aiokafka has no create_acls
                    for code, msg in resp.creation_responses:
                        if code:
                            raise RuntimeError(f"CreateAcls {principal} {acl} {op}: {code} {msg}")
                    n += 1
    finally:
        await admin.close()
    return n
