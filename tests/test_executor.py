"""The per-stage executor serves sessions round-robin, so one session's many jobs cannot starve another."""

from __future__ import annotations

import asyncio
import time

from livevox.core.executor import FairExecutor


async def test_round_robin_across_sessions() -> None:
    ex = FairExecutor("test", threads=1)
    order: list[str] = []

    def job(name: str) -> None:
        time.sleep(0.005)
        order.append(name)

    try:
        long = [asyncio.ensure_future(ex.run("long", job, f"long{i}")) for i in range(20)]
        await asyncio.sleep(0.001)
        short = asyncio.ensure_future(ex.run("short", job, "short"))
        await short
        # the short session's single job runs after at most a couple of the long session's jobs
        assert order.index("short") <= 3, order
        await asyncio.gather(*long)
    finally:
        ex.close()


async def test_exceptions_reach_the_caller() -> None:
    ex = FairExecutor("test-exc")

    def boom() -> None:
        raise ValueError("x")

    try:
        try:
            await ex.run("s", boom)
        except ValueError as exc:
            assert str(exc) == "x"
        else:
            raise AssertionError("no exception")
    finally:
        ex.close()
