"""What a destination client reports for one request, and the interface every destination implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class EncodeError(Exception):
    """An event this destination can never accept (too large, unencodable): dead-lettered, never retried."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ProbeError(Exception):
    """The destination cannot be reached or refuses our credentials (``forwarder check``)."""


@dataclass
class Delivery:
    """Outcome of sending ``n`` encoded events; every index not listed was delivered (confirmed).

    ``retry``: indices to send again after a backoff (transient). ``dead``: index -> the destination's
    response, permanent. ``split``: the request was refused as a whole (400/413): the runner bisects it.
    """

    retry: list[int] = field(default_factory=list)
    dead: dict[int, str] = field(default_factory=dict)
    split: bool = False
    retry_after: float | None = None
    error: str = ""

    @classmethod
    def ok(cls) -> Delivery:
        return cls()

    @classmethod
    def retry_all(cls, n: int, error: str, retry_after: float | None = None) -> Delivery:
        return cls(retry=list(range(n)), error=error, retry_after=retry_after)

    @classmethod
    def dead_all(cls, n: int, response: str) -> Delivery:
        return cls(dead=dict.fromkeys(range(n), response), error=response)

    @classmethod
    def split_all(cls, n: int, response: str) -> Delivery:
        return cls(split=True, dead=dict.fromkeys(range(n), response), error=response)


class Client(Protocol):
    """One destination's I/O: send a batch of encoded events, probe reachability, close."""

    async def send(self, items: list[Any]) -> Delivery: ...

    async def probe(self) -> str: ...

    async def aclose(self) -> None: ...


class Encoder(Protocol):
    """Pure: one record -> this destination's wire unit (raises :class:`EncodeError`).

    ``record`` is the event's JSON exactly as read from Kafka (or re-serialised after a field mapping);
    encoders splice it into their wire format so the forwarded JSON is byte-identical to the record and
    ``content_hash`` still verifies at the destination. ``needs`` names the (dotted) members the encoder
    reads; ``doc`` holds at least those (absent ones as None), read by the runner together with what the
    filter needs, and nothing else unless a field mapping needs the whole record. An encoder that needs
    nothing gets ``doc = None`` unless the filter or mapping read the record anyway.
    """

    needs: tuple[str, ...]

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes: ...

    def size(self, item: bytes) -> int: ...
