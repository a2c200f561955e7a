"""Syslog destination config.

Protocol (RFC 5424 message format; RFC 6587 octet-counting framing ``MSG-LEN SP SYSLOG-MSG`` over TCP,
RFC 5425 over TLS; docs/forwarder.md): ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG``. Header
field limits from RFC 5424: HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32 printable US-ASCII; SD-ID
with an ``@`` private enterprise number (default 32473, the documentation PEN of RFC 5612).
No application-level acknowledgement exists: "delivered" means written to the socket and drained
(flushed to the kernel). Message size: receivers cap it (rsyslog ``maxMessageSize`` default 8 KB, raise it
to ``max_message_bytes``); a larger event is dead-lettered (``message_too_large``), the syslog
equivalent of an HTTP 400. A closed/refused connection is the equivalent of a 503: reconnect and retry.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from services.siem_forwarder.util.config import DestinationConfig, secret_from_env


class SyslogConfig(DestinationConfig):
    type: Literal["syslog"]
    host: str
    port: int = Field(default=6514, ge=1, le=65535)
    tls: bool = False
    ca_file: str | None = Field(default=None, description="CA bundle to verify the receiver (TLS)")
    verify_tls: bool = True
    server_name: str | None = Field(default=None, description="TLS SNI / name to verify; default host")
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_key_password_env: str | None = None
    facility: int = Field(default=13, ge=0, le=23, description="13 = log audit")
    severity: int = Field(default=6, ge=0, le=7, description="6 = informational")
    app_name: str = "auditpipe"
    hostname: str | None = Field(default=None, description="HOSTNAME field; default: this machine's name")
    sd_id: str = "auditpipe@32473"
    sd_fields: list[str] = Field(
        default_factory=lambda: [
            "event_id",
            "org_id",
            "project_id",
            "action",
            "event_type",
            "actor.id",
            "client_ip",
        ],
        description="event fields (dotted) copied into the structured-data element",
    )
    max_message_bytes: int = Field(default=64 * 1024, ge=480, description="RFC 5424 minimum is 480")
    connect_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("app_name")
    @classmethod
    def _app(cls, v: str) -> str:
        if not (0 < len(v) <= 48) or not all(33 <= ord(c) <= 126 for c in v):
            raise ValueError("APP-NAME must be 1-48 printable US-ASCII characters without spaces")
        return v

    @field_validator("sd_id")
    @classmethod
    def _sd(cls, v: str) -> str:
        if not (0 < len(v) <= 32) or any(c in v for c in ' ="]') or not all(33 <= ord(c) <= 126 for c in v):
            raise ValueError('SD-ID must be 1-32 printable US-ASCII characters, no space = " ]')
        return v

    def check_secrets(self) -> None:
        secret_from_env(self.client_key_password_env, f"{self.name}.client_key_password_env")

    def build(self) -> tuple[Any, Any]:
        from services.siem_forwarder.syslog.client import SyslogClient
        from services.siem_forwarder.syslog.encoder import SyslogEncoder

        return SyslogEncoder(self), SyslogClient(self)
