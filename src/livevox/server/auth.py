"""API keys: the `api-key` header, `Authorization: Bearer`, the same two as query parameters, or
(browsers cannot set headers on a WebSocket) OpenAI's `openai-insecure-api-key.<key>` subprotocol."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

#: What OpenAI's browser clients offer: `realtime`, the key, and `openai-beta.realtime-v1` for beta.
REALTIME_SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
#: The one 401 message of every door.
AUTH_MESSAGE = ("Missing or invalid API key. Send it as the 'api-key' header, 'Authorization: Bearer <key>', "
                "or the 'api-key' query parameter.")


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    raw = headers.get("sec-websocket-protocol") or ""
    return [p.strip() for p in raw.split(",") if p.strip()]


def chosen_subprotocol(headers: Mapping[str, str]) -> str | None:
    """The subprotocol to accept: a browser fails the handshake unless one it offered comes back."""
    return REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered_subprotocols(headers) else None


def wants_beta(headers: Mapping[str, str]) -> bool:
    """OpenAI's beta dialect: the `OpenAI-Beta: realtime=v1` header, or its subprotocol (browsers)."""
    header = (headers.get("openai-beta") or "").replace(" ", "").lower()
    return header.startswith("realtime=v1") or BETA_SUBPROTOCOL in offered_subprotocols(headers)


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    for proto in offered_subprotocols(headers):
        if proto.startswith(KEY_SUBPROTOCOL_PREFIX) and len(proto) > len(KEY_SUBPROTOCOL_PREFIX):
            return proto[len(KEY_SUBPROTOCOL_PREFIX):]
    for source in (headers, query):
        key = source.get("api-key")
        if key:
            return key
        auth = source.get("authorization") or source.get("Authorization")
        if auth:
            scheme, _, token = auth.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else auth.strip()
    return None


def is_authorized(keys: list[str], headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    if not keys:
        return True
    key = presented_key(headers, query)
    if key is None:
        return False
    # Compare against every key in constant time.
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(key.encode(), k.encode())
    return ok
