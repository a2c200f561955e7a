"""Client IP behind proxies: the trusted-proxy rule of docs/enricher.md (the pre-rewrite copy).

Read ``X-Forwarded-For`` only when the peer is a trusted proxy. Walk the header from the right and take
the first address that is not trusted; if every address is trusted, take the leftmost. With no trusted
proxies configured the peer is always used.

Edge cases (see docs/enricher.md):

- ports are stripped (``1.2.3.4:80``, ``[2001:db8::1]:443``); brackets are removed; IPv4-mapped IPv6
  (``::ffff:10.0.0.5``) is read as the IPv4 address; results are in normal compressed form;
- whitespace around entries is ignored and empty entries (``a,,b``, trailing commas) are skipped;
- a garbage entry (``unknown``, ``_hidden``, ``999.1.1.1``, a hostname) ends the walk: nothing left of
  it can be attributed to a trusted hop, so the result is the leftmost address walked so far (the
  nearest trusted hop, or the peer);
- at most ``MAX_HOPS`` entries are examined from the right (very long headers cost bounded time); if
  all of them are trusted the leftmost examined one is used;
- a missing or unparseable peer yields ``None`` (the header cannot be trusted without a trusted peer).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOPS = 64
MAX_ENTRY_CHARS = 80  # longest textual IPv6 with zone and port is far shorter


def parse_address(text: str | None) -> IPAddress | None:
    """One address from a header entry or peer field, or ``None`` if it is not an address."""
    if text is None:
        return None
    s = text.strip()
    if not s or len(s) > MAX_ENTRY_CHARS:
        return None
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        rest = s[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # IPv4 with a port; bare IPv6 has two or more colons
        host, _, port = s.partition(":")
        if not port.isdigit():
            return None
        s = host
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Addresses or CIDR ranges; raises ``ValueError`` naming the first bad entry."""
        nets: list[IPNetwork] = []
        for e in entries:
            s = e.strip()
            if not s:
                continue
            try:
                net = ipaddress.ip_network(s.strip("[]"), strict=False)
            except ValueError:
                raise ValueError(f"trusted proxy '{e}' is not an address or CIDR range") from None
            nets.append(net)
        return cls(tuple(nets))

    def trusts(self, addr: IPAddress) -> bool:
        return any(addr.version == n.version and addr in n for n in self.networks)


def resolve_client_ip(peer: str | None, x_forwarded_for: str | None, trusted: TrustedProxies) -> str | None:
    """The client address by the trusted-proxy rule (see module docstring for edge cases)."""
    peer_addr = parse_address(peer)
    if peer_addr is None:
        return None
    if not trusted.networks or not x_forwarded_for or not trusted.trusts(peer_addr):
        return str(peer_addr)
    leftmost = peer_addr
    examined = 0
    # rsplit bounded: a 16 KB header of commas does not become a 16k-element list
    for entry in reversed(x_forwarded_for.rsplit(",", MAX_HOPS * 2)):
        if not entry.strip():
            continue
        examined += 1
        if examined > MAX_HOPS:
            break
        addr = parse_address(entry)
        if addr is None:
            break
        if not trusted.trusts(addr):
            return str(addr)
        leftmost = addr
    return str(leftmost)
