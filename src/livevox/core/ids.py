"""Opaque ids in the shapes the service uses (`sess_…`, `item_…`, `resp_…`, `call_…`, `event_…`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"
