"""The per-stage executor serves sessions round-robin, so one session's many jobs cannot starve another."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from held_worker import Held, eventually, held
from livevox.core.executor import JOB_TIMINGS, FairExecutor, JobTiming


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


# ---------------------------------------------------------------- run_batched


@contextlib.asynccontextmanager
async def held_executor(name: str) -> AsyncIterator[Held]:
    """A fresh one-worker executor, held while the test queues its jobs (tests/held_worker.py)."""
    ex = FairExecutor(name, threads=1)
    try:
        async with held(ex, timeout=10) as h:
            yield h
    finally:
        ex.close()


def recording(calls: list[list[str]]) -> Callable[[list[str]], list[object]]:
    """A batch call that records its items and answers each with its own text (or error)."""

    def fn(items: list[str]) -> list[object]:
        calls.append(list(items))
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]

    return fn


async def test_a_lone_batched_job_runs_at_once() -> None:
    ex = FairExecutor("test-batch-lone", threads=1)
    calls: list[list[str]] = []
    try:
        # Nothing else queued: the worker runs it alone, without waiting for company.
        assert await ex.run_batched("a", "k", recording(calls), "a", max_batch=4) == "A"
        assert calls == [["a"]]
    finally:
        ex.close()


async def test_waiting_sessions_share_one_call_each_with_its_own_result() -> None:
    calls: list[list[str]] = []
    fn = recording(calls)
    timings: list[JobTiming] = []
    async with held_executor("test-batch-share") as h:

        async def submit(key: str, item: str, batch_key: str = "k") -> object:
            JOB_TIMINGS.set(timings)
            return await h.ex.run_batched(key, batch_key, fn, item, max_batch=3)

        futs = [asyncio.ensure_future(submit(k, k)) for k in ("a", "b", "c", "d")]
        other = asyncio.ensure_future(submit("e", "e", batch_key="other"))
        await h.queued(5)
        await h.release()
        assert await asyncio.gather(*futs, other) == ["A", "B", "C", "D", "E"]
    # up to max_batch in line order; a different key never joins
    assert calls == [["a", "b", "c"], ["d"], ["e"]]
    assert sorted(t.stage for t in timings) == ["test-batch-share"] * 5  # one timing per job


async def test_a_batch_takes_no_worse_priority_ahead_of_others() -> None:
    calls: list[list[str]] = []
    fn = recording(calls)
    order: list[str] = []
    async with held_executor("test-batch-prio") as h:
        ex = h.ex
        late = asyncio.ensure_future(ex.run_batched("a", "k", fn, "late", max_batch=4, priority=2))
        plain = asyncio.ensure_future(ex.run("b", order.append, "plain", priority=1))
        first = asyncio.ensure_future(ex.run_batched("c", "k", fn, "first", max_batch=4, priority=0))
        mate = asyncio.ensure_future(ex.run_batched("d", "k", fn, "mate", max_batch=4, priority=0))
        await h.queued(4)
        await h.release()
        await asyncio.gather(late, plain, first, mate)
    # "late" (priority 2) does not ride along ahead of "plain" (priority 1)
    assert calls == [["first", "mate"], ["late"]]
    assert order == ["plain"]


async def test_errors_in_a_batch_reach_only_their_own_caller() -> None:
    calls: list[list[str]] = []
    fn = recording(calls)
    async with held_executor("test-batch-err") as h:
        good = asyncio.ensure_future(h.ex.run_batched("a", "k", fn, "good", max_batch=2))
        bad = asyncio.ensure_future(h.ex.run_batched("b", "k", fn, "bad", max_batch=2))
        await h.queued(2)
        await h.release()
        assert await good == "GOOD"
        with pytest.raises(ValueError, match="bad"):
            await bad
        assert calls == [["good", "bad"]]

        def broken(items: list[str]) -> list[object]:
            raise RuntimeError("whole call")

        with pytest.raises(RuntimeError, match="whole call"):
            await h.ex.run_batched("a", "k", broken, "x", max_batch=2)


async def test_batching_keeps_round_robin_per_session() -> None:
    calls: list[list[str]] = []
    fn = recording(calls)
    async with held_executor("test-batch-rr") as h:
        # One session's jobs never share a call (only queue heads of OTHER sessions join), and a
        # session that rode along goes to the back of the line like one that was picked.
        futs = [asyncio.ensure_future(h.ex.run_batched(k, "k", fn, f"{k}{i}", max_batch=2))
                for k, i in (("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0))]
        await h.queued(5)
        await h.release()
        await asyncio.gather(*futs)
    assert calls == [["a0", "b0"], ["c0", "a1"], ["a2"]]


async def test_others_in_flight_counts_other_sessions_running_and_waiting() -> None:
    ex = FairExecutor("t-others", threads=1)
    gate = threading.Event()
    try:
        started = threading.Event()

        def block() -> None:
            started.set()
            gate.wait(10)

        running = asyncio.ensure_future(ex.run("a", block))
        assert await asyncio.to_thread(started.wait, 10)  # the worker runs it
        waiting = [asyncio.ensure_future(ex.run(k, lambda: None)) for k in ("a", "b", "c")]
        assert await eventually(lambda: ex.pending() == 3)  # all three queued
        # "a" runs one and waits with one; "b" and "c" wait with one each.
        assert ex.others_in_flight("a") == 2 and ex.others_in_flight("b") == 3 and ex.others_in_flight("z") == 4
        gate.set()
        await asyncio.gather(running, *waiting)
        # A worker counts a job done just after its caller has the result.
        assert await eventually(lambda: ex.others_in_flight("z") == 0)
    finally:
        gate.set()
        ex.close()
