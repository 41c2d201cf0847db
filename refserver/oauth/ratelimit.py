"""Per-client-IP token buckets for the authorization server's public endpoints.

The buckets live in the shared `KeyValueStore`, so every instance counts against the same limit. The client
IP is the direct peer unless that peer is a trusted proxy: only then is `X-Forwarded-For` believed, and the
client is the right-most address in it that is not itself a trusted proxy (everything left of that point
was written by the client and proves nothing).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from typing import Final

from refserver.backend.kv import KeyValueStore
from refserver.errors import RateLimited

IPV6_BUCKET_PREFIX: Final = 64
"""One IPv6 subscriber usually holds a whole /64: keying on single addresses would let it dodge the limit."""
MAX_FORWARDED_HOPS: Final = 32
"""X-Forwarded-For entries looked at, right to left; a longer chain is a client padding the header."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An IP address from a peer address or an X-Forwarded-For entry (`[v6]:port` and `v4:port` allowed)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port (some proxies append it)
    text = text.split("%", 1)[0]  # an IPv6 zone id says nothing about the client
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Trusted proxies as addresses or CIDRs; raises ValueError on an entry that is neither."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


class RateLimiter:
    def __init__(self, kv: KeyValueStore, per_minute: int, trusted_proxies: Sequence[str]) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute!r}")
        self._kv = kv
        self.per_minute = per_minute
        self._trusted = parse_networks(trusted_proxies)
        self._limited = 0

    def _is_trusted(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self._trusted)

    def client_ip(self, remote_addr: str, forwarded_for: str | None) -> str:
        """The address the limit applies to (a normalized IP, or the raw peer string if it is not one)."""
        peer = parse_address(remote_addr)
        if peer is None:
            return remote_addr.strip() or "unknown"
        if not forwarded_for or not self._is_trusted(peer):
            return str(peer)
        client = peer
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            address = parse_address(hop)
            if address is None:
                break  # a trusted proxy wrote garbage: stop at the last address we can vouch for
            client = address
            if not self._is_trusted(address):
                break
        return str(client)

    def bucket_key(self, bucket: str, client_ip: str) -> str:
        address = parse_address(client_ip)
        if isinstance(address, ipaddress.IPv6Address):
            client_ip = str(ipaddress.IPv6Network((address, IPV6_BUCKET_PREFIX), strict=False))
        return f"ratelimit:{bucket}:{client_ip}"

    @property
    def retry_after(self) -> int:
        """Seconds until the next token: one token refills in 60 / per_minute seconds."""
        return max(1, math.ceil(60 / self.per_minute))

    async def check(self, bucket: str, client_ip: str) -> None:
        """Take one token from `bucket` for `client_ip`, or raise RateLimited."""
        allowed = await self._kv.take_rate_token(
            self.bucket_key(bucket, client_ip), self.per_minute, self.per_minute / 60.0
        )
        if not allowed:
            self._limited += 1
            raise RateLimited(
                f"Too many requests to {bucket}: the limit is {self.per_minute} per minute",
                retry_after=self.retry_after,
            )

    def statistics(self) -> dict[str, int]:
        return {"per_minute": self.per_minute, "trusted_proxies": len(self._trusted), "limited": self._limited}
