"""The operator's allow-list of MCP hosts (`mcp.allowed_hosts`): a client-supplied URL makes this
server send requests, so only listed hosts are ever contacted."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


class HostNotAllowed(Exception):
    """The URL is malformed, or its host is not on `mcp.allowed_hosts`; nothing was sent."""


def host_matches(host: str, entry: str) -> bool:
    """An entry is a host name (`mcp.internal`), a `*.suffix` wildcard, an IP address or a network
    (`10.0.0.0/8`). Names match literally: no DNS lookup is made here."""
    host, entry = host.lower().rstrip("."), entry.lower().rstrip(".")
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host == entry
    try:
        return addr in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def check_url(url: str, allowed: list[str]) -> str:
    """The URL's host when it may be contacted; raises HostNotAllowed otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise HostNotAllowed(f"server_url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise HostNotAllowed(f"server_url {url!r} must be an http:// or https:// URL with a host")
    if not any(host_matches(host, entry) for entry in allowed):
        raise HostNotAllowed(f"the MCP host {host!r} is not allowed by this server's mcp.allowed_hosts "
                             f"({', '.join(allowed) or 'empty'}); the operator must add it")
    return host
