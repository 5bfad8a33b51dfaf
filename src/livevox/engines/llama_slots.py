"""Which llama.cpp slot a request runs in: a session's requests go back to the slot that holds its
conversation.

llama.cpp keeps each slot's last prompt in its KV cache. Left to choose, it picks the idle slot
whose cached prompt shares the longest prefix with the new one, if that prefix is at least
`slot_prompt_similarity` (10 %) of the prompt, else the least recently used slot. When the
conversation's prefix changes early (a truncation cut drops the oldest messages, the client
deletes an early item), the shared prefix is only the instructions, under 10 % of a long prompt,
so the request lands in another slot and the whole conversation is evaluated again: 2,000 tokens
took 8-10 s on a 2-core CPU. Pinned to the conversation's own slot (`id_slot`), llama.cpp's cache
reuse (`n_cache_reuse`) shifts the cached chunks that follow the cut into place instead: 0.3-0.8 s
(docs/benchmarks.md, "Prompt cache").

The executor runs at most one job per slot, so a free slot always exists when a job starts. A
session's slot that is busy with the session's own request being stopped (a discarded
speculation, a barge-in) frees within a token: the new request waits for it briefly rather than
start over in another slot.
"""

from __future__ import annotations

import threading
import time

#: How long a request waits for its session's slot while the request in it is being stopped.
STOPPING_WAIT_S = 0.25


class SlotAffinity:
    """Slot bookkeeping for one llama.cpp server with `n` slots (thread-safe: jobs run on the
    LLM executor's workers)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._cond = threading.Condition()
        self._busy = [False] * n
        self._stopping: list[threading.Event | None] = [None] * n
        self._owner: list[str | None] = [None] * n
        self._used = [0] * n
        self._tick = 0

    def owner(self, slot: int) -> str | None:
        with self._cond:
            return self._owner[slot]

    def acquire(self, session: str | None, stop: threading.Event | None = None, *, owns: bool = True) -> int:
        """A free slot for a request of `session` (None: no session, e.g. a probe). With `owns`,
        the request carries the session's conversation: it goes to the session's slot, and a
        slot it takes becomes the session's. -1: none free (llama.cpp chooses)."""
        with self._cond:
            mine = self._own_slot(session) if owns else None
            if mine is not None and self._busy[mine]:
                stopping = self._stopping[mine]
                if stopping is not None and stopping.is_set():
                    deadline = time.monotonic() + STOPPING_WAIT_S
                    while self._busy[mine] and time.monotonic() < deadline:
                        self._cond.wait(deadline - time.monotonic())
            free = [i for i in range(self.n) if not self._busy[i]]
            if not free:
                return -1
            if mine is not None and not self._busy[mine]:
                slot = mine
            else:
                unowned = [i for i in free if self._owner[i] is None]
                slot = min(unowned or free, key=lambda i: self._used[i])
                # A session whose slot is busy with another of its requests keeps that slot.
                self._owner[slot] = session if owns and mine is None else None
            self._busy[slot] = True
            self._stopping[slot] = stop
            self._tick += 1
            self._used[slot] = self._tick
            return slot

    def release(self, slot: int) -> None:
        if slot < 0:
            return
        with self._cond:
            self._busy[slot] = False
            self._stopping[slot] = None
            self._cond.notify_all()

    def _own_slot(self, session: str | None) -> int | None:
        if session is None:
            return None
        for i in range(self.n):
            if self._owner[i] == session:
                return i
        return None
