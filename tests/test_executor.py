"""The per-stage executor serves sessions round-robin, so one session's many jobs cannot starve another."""

from __future__ import annotations

import asyncio
import threading

import pytest

from livevox.core.executor import FairExecutor


async def test_round_robin_across_sessions() -> None:
    ex = FairExecutor("test", threads=1)
    order: list[str] = []
    busy, release = threading.Event(), threading.Event()

    def block() -> None:
        busy.set()
        release.wait(10)  # bounded, so a broken executor fails the test instead of hanging it

    try:
        # The only worker is held while every job is queued, so the order below is the
        # executor's choice alone, not a race with the event loop.
        blocker = asyncio.ensure_future(ex.run("blocker", block))
        assert await asyncio.to_thread(busy.wait, 10)
        long = [asyncio.ensure_future(ex.run("long", order.append, f"long{i}")) for i in range(20)]
        short = asyncio.ensure_future(ex.run("short", order.append, "short"))
        mid = [asyncio.ensure_future(ex.run("mid", order.append, f"mid{i}")) for i in range(2)]
        for _ in range(1000):  # each task queues its job when it first runs
            if ex.pending() == 23:
                break
            await asyncio.sleep(0)
        assert ex.pending() == 23
        release.set()
        await asyncio.gather(blocker, short, *long, *mid)
        # one job per session in turn: the short session waits for one long job, not twenty
        assert order == ["long0", "short", "mid0", "long1", "mid1", *(f"long{i}" for i in range(2, 20))], order
    finally:
        release.set()
        ex.close()


async def test_exceptions_reach_the_caller() -> None:
    ex = FairExecutor("test-exc")

    def boom() -> None:
        raise ValueError("x")

    try:
        with pytest.raises(ValueError) as err:
            await ex.run("s", boom)
        assert str(err.value) == "x"
    finally:
        ex.close()
