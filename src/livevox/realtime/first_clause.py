"""The spoken answers of this process still waiting for their first clause.

An answer far ahead of what its caller has heard yields the LLM to them (`llm.yield_ahead_s`,
realtime/response.py): in a burst of callers, the first words of one matter more than the
seventh sentence of another that will not be heard for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

_waiting: dict[str, str] = {}  # response id -> session id
_watchers: set[asyncio.Event] = set()  # yielding answers, woken when a wait ends


def wait_started(response_id: str, session_id: str) -> None:
    _waiting[response_id] = session_id


def wait_ended(response_id: str) -> None:
    """Its first clause is out, or it ended without one. Idempotent."""
    if _waiting.pop(response_id, None) is not None:
        for event in _watchers:
            event.set()


def others_waiting(session_id: str) -> int:
    """Answers of other sessions that wait for their first clause now."""
    return sum(1 for s in _waiting.values() if s != session_id)


@contextlib.contextmanager
def watching() -> Iterator[asyncio.Event]:
    """An event set whenever an answer stops waiting for its first clause."""
    event = asyncio.Event()
    _watchers.add(event)
    try:
        yield event
    finally:
        _watchers.discard(event)
