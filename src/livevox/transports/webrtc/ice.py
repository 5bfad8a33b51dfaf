"""ICE settings for the WebRTC doors: ICE servers, the host-candidate allow-list and NAT 1:1.

aiortc adds a public Google STUN server when it is given no ICE server list, and aioice gathers
host candidates on every interface except loopback. Here:

- `rtc_configuration()` always passes an explicit list (empty unless configured), so no server is
  contacted unless the operator asked for one.
- `host_address_policy()` decides the interfaces aioice gathers host candidates on, for the peer
  connections negotiated inside the `with` block: exactly the allow-list when one is given;
  otherwise aioice's own choice plus loopback when the peer listens on (or calls) a loopback
  address, or when the machine has no other address (a container or namespace with only `lo`),
  since aioice alone would then offer nothing. It works through a context variable that a wrapper
  around `aioice.ice.get_host_addresses` reads; without a policy, aioice behaves as before (so
  other aiortc users in the same process are not affected).
- `advertise_nat_1to1()` adds, for every host candidate of an SDP answer, the same candidate on
  the public address of a 1:1 NAT.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aioice.ice
import ifaddr
from aiortc import RTCConfiguration, RTCIceServer

from ...netaddr import is_loopback_host
from ...settings import WebRTCSettings


@dataclass(frozen=True)
class _Policy:
    allow: tuple[str, ...]  # empty: aioice's choice (+ loopback, see `with_loopback`)
    listen_host: str | None


_POLICY: contextvars.ContextVar[_Policy | None] = contextvars.ContextVar(
    "livevox_host_address_policy", default=None)
_ORIGINAL: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def rtc_configuration(settings: WebRTCSettings) -> RTCConfiguration:
    """The peer connection configuration: only the configured ICE servers, never a default one."""
    servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
               for s in settings.ice_servers]
    return RTCConfiguration(iceServers=servers)


def _matches(allow: tuple[str, ...], adapter: str, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    for item in allow:
        if item == adapter:
            return True
        with contextlib.suppress(ValueError):
            if addr in ipaddress.ip_network(item, strict=False):
                return True
    return False


def allowed_host_addresses(allow: tuple[str, ...], use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """This machine's addresses that the allow-list admits (loopback included if admitted)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if use_ipv4 and _matches(allow, adapter.name, ip.ip):
                    found.append(ip.ip)
            elif use_ipv6 and ip.ip[2] == 0 and _matches(allow, adapter.name, ip.ip[0]):
                # scope id 0: no link-local addresses, as aioice itself does
                found.append(ip.ip[0])
    return found


def loopback_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """This machine's loopback addresses (usually 127.0.0.1 and ::1)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            addr = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if ipaddress.ip_address(addr).is_loopback and (use_ipv4 if isinstance(ip.ip, str) else use_ipv6):
                found.append(addr)
    return found


def with_loopback(addresses: list[str], listen_host: str | None, use_ipv4: bool = True,
                  use_ipv6: bool = True) -> list[str]:
    """aioice's host addresses, plus loopback when `listen_host` is loopback or nothing else exists."""
    if addresses and not is_loopback_host(listen_host):
        return addresses
    return addresses + [a for a in loopback_addresses(use_ipv4, use_ipv6) if a not in addresses]


def _policy_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    policy = _POLICY.get()
    if policy is None:
        return _ORIGINAL(use_ipv4, use_ipv6)
    if policy.allow:
        return allowed_host_addresses(policy.allow, use_ipv4, use_ipv6)
    return with_loopback(_ORIGINAL(use_ipv4, use_ipv6), policy.listen_host, use_ipv4, use_ipv6)


def install() -> None:
    """Route aioice's host-address lookup through the policy (idempotent)."""
    current: Any = aioice.ice.get_host_addresses
    if current is not _policy_host_addresses:
        aioice.ice.get_host_addresses = _policy_host_addresses


@contextlib.contextmanager
def host_address_policy(allow: list[str] | tuple[str, ...], listen_host: str | None = None) -> Iterator[None]:
    """Within the block, peer connections gather host candidates only on `allow` (interface
    names, addresses or networks). An empty list means aioice's default (every non-loopback
    address), plus loopback when `listen_host` (the address the server binds, or the client
    calls) is loopback or when the machine has no other address."""
    install()
    token = _POLICY.set(_Policy(tuple(allow), listen_host))
    try:
        yield
    finally:
        _POLICY.reset(token)


_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d+) (\S+) (\d+) (\S+) (\d+) typ host(.*)$")


def advertise_nat_1to1(sdp: str, public_ip: str | None) -> str:
    """Add a copy of every host candidate on `public_ip` (same port, lower priority)."""
    if not public_ip:
        return sdp
    out: list[str] = []
    for line in sdp.splitlines():
        out.append(line)
        m = _CANDIDATE.match(line)
        if m and m.group(5) != public_ip:
            foundation, component, proto, priority, _host, port, rest = m.groups()
            out.append(f"a=candidate:{foundation}n {component} {proto} {max(1, int(priority) - 1)} "
                       f"{public_ip} {port} typ host{rest}")
    return "\r\n".join(out) + "\r\n"
