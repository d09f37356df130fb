"""Pure decisions for presence and moderation: inputs as arguments, no ORM, no clock."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_parse(*, values: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip()]


def ip_in_networks(*, ip: str | None, networks: Iterable[Network]) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_ip(*, peer: str | None, forwarded_for: str | None, trusted_proxies: Iterable[Network]) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy, in which case
    the right-most X-Forwarded-For entry that is not itself a trusted proxy (entries to
    its left were written by the client and can be spoofed)."""
    trusted = list(trusted_proxies)
    if not forwarded_for or not ip_in_networks(ip=peer, networks=trusted):
        return peer
    for candidate in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return peer  # a malformed header: trust nothing in it
        if not ip_in_networks(ip=candidate, networks=trusted):
            return candidate
    return peer


def reconnect_abuse(*, connects: int, limit: int) -> bool:
    """More than ``limit`` connects in the window."""
    return limit > 0 and connects > limit


def connection_silent(*, now: float, last_seen: float, heartbeat: float) -> bool:
    """Dead after three heartbeats without a frame or pong (PROTOCOL.md §4)."""
    return now - last_seen > 3 * heartbeat
