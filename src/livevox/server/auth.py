"""API keys: the `api-key` header, `Authorization: Bearer`, or the same two as query parameters."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
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
