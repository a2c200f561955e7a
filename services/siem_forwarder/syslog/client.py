"""Syslog TCP/TLS client: one persistent connection; each batch is written and drained. Before writing,
a connection the receiver closed (EOF seen) is replaced, so a restarted receiver does not swallow a batch
into a dead socket; any write error closes the connection and the batch is retried."""

from __future__ import annotations

import asyncio
import ssl

from services.siem_forwarder.syslog.config import SyslogConfig
from services.siem_forwarder.util.config import secret_from_env
from services.siem_forwarder.util.delivery import Delivery, ProbeError


def tls_context(config: SyslogConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=config.ca_file)
    if not config.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.client_cert_file:
        pw = secret_from_env(config.client_key_password_env, f"{config.name}.client_key_password_env")
        ctx.load_cert_chain(
            config.client_cert_file, config.client_key_file, password=pw.get_secret_value() if pw else None
        )
    return ctx


class SyslogClient:
    def __init__(self, config: SyslogConfig) -> None:
        self.config = config
        self.ssl = tls_context(config) if config.tls else None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.config.host,
                self.config.port,
                ssl=self.ssl,
                server_hostname=(self.config.server_name or self.config.host) if self.ssl else None,
            ),
            self.config.connect_timeout_s,
        )

    def _alive(self) -> bool:
        return (
            self.writer is not None
            and self.reader is not None
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and self.reader.exception() is None
        )

    async def _close(self) -> None:
        w, self.writer, self.reader = self.writer, None, None
        if w is not None:
            w.close()
            try:
                await asyncio.wait_for(w.wait_closed(), 2.0)
            except (OSError, TimeoutError, ssl.SSLError):
                pass

    async def send(self, items: list[bytes]) -> Delivery:
        n = len(items)
        try:
            if not self._alive():
                await self._close()
                await self._connect()
            assert self.writer is not None
            self.writer.write(b"".join(items))
            await asyncio.wait_for(self.writer.drain(), self.config.retry.request_timeout_s)
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as e:
            await self._close()
            return Delivery.retry_all(n, f"{type(e).__name__}: {e}")
        return Delivery.ok()

    async def probe(self) -> str:
        try:
            await self._connect()
        except (OSError, TimeoutError, ssl.SSLError) as e:
            raise ProbeError(f"unreachable: {type(e).__name__}: {e}") from e
        finally:
            await self._close()
        return "TLS handshake ok" if self.ssl else "TCP connect ok"

    async def aclose(self) -> None:
        await self._close()
