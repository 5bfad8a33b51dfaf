"""Hold a stage executor's one worker while jobs queue, so the executor's choice alone (not a race
with the event loop or the network) decides how they are picked and batched. Shared by
tests/test_executor.py, tests/test_stt_batch.py and benchmarks/stt_batch.py."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from livevox.core.executor import FairExecutor


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `cond` every 5 ms until it holds or `timeout` passes; whether it held."""
    for _ in range(int(timeout / 0.005)):
        if cond():
            return True
        await asyncio.sleep(0.005)
    return cond()


class Held:
    """Every worker of `ex` runs a blocking job until `release()` (a stage may have several: the
    STT stage has `stt.workers`); released together, the first to pick takes what it batches."""

    def __init__(self, ex: FairExecutor, timeout: float = 60.0) -> None:
        self.ex = ex
        self.timeout = timeout
        self.gate = threading.Event()
        self._busy = threading.Semaphore(0)
        self._n = ex.workers

        def block() -> None:
            self._busy.release()
            self.gate.wait(timeout)  # bounded, so a broken executor fails the test instead of hanging it

        self.blocker = asyncio.gather(*(ex.run(f"_held_blocker{i}", block) for i in range(self._n)))

    async def hold(self) -> None:
        for _ in range(self._n):
            assert await asyncio.to_thread(self._busy.acquire, True, self.timeout)

    async def queued(self, n: int) -> None:
        """Until `n` jobs wait: a condition, polled (a job is queued once its task has run, or its
        session's server has had the client's event)."""
        await eventually(lambda: self.ex.pending() >= n, self.timeout)
        assert self.ex.pending() == n

    async def release(self) -> float:
        """Let the worker go; when it was let go (perf_counter)."""
        released = time.perf_counter()
        self.gate.set()
        await self.blocker
        return released


@contextlib.asynccontextmanager
async def held(ex: FairExecutor, timeout: float = 60.0) -> AsyncIterator[Held]:
    h = Held(ex, timeout)
    try:
        await h.hold()
        yield h
    finally:
        h.gate.set()


async def while_held(ex: FairExecutor, queued: int,
                     start: Callable[[], list[Awaitable[Any]]]) -> tuple[list[Any], float]:
    """Start the awaitables while `ex` is held, release once `queued` jobs wait: their results,
    and when the worker was released (perf_counter)."""
    async with held(ex) as h:
        tasks = [asyncio.ensure_future(a) for a in start()]
        await h.queued(queued)
        released = await h.release()
    return list(await asyncio.gather(*tasks)), released


def record_batches(stt: Any) -> list[int]:
    """The size of each batched call a FasterWhisperSTT makes from now on (`del stt._batch` ends it)."""
    sizes: list[int] = []
    batch = stt._batch

    def recording(utts: list[Any]) -> list[Any]:
        sizes.append(len(utts))
        return batch(utts)

    stt._batch = recording
    return sizes
