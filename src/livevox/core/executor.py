"""Run blocking model work off the event loop, fairly across sessions.

Each stage (VAD, STT, LLM, TTS) gets its own worker threads, so a long LLM answer never
holds up another session's VAD. Within a stage, jobs are queued per session and the workers
take them round-robin, so one session that submits many jobs (a long answer's clauses) cannot
starve another that submits one. A job may carry a priority (lower runs first), evaluated when a
worker picks: a turn's first clause goes before the later clauses of an answer that is already
seconds ahead of its playback.

Each job's wait in the queue is observed per stage (`livevox_stage_queue_wait_seconds`), and a
caller that sets `JOB_TIMINGS` gets (stage, queued, started, finished) of every job it submits.

`stream_job` is the bridge the model engines share: it runs a blocking producer on a stage's
executor and hands each item it emits to the event loop as soon as it exists.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Histogram

T = TypeVar("T")

#: A job's priority: a number, or a function giving it when a worker picks (lower runs first).
Priority = int | Callable[[], int]
NORMAL = 1

QUEUE_WAIT_SECONDS = Histogram(
    "livevox_stage_queue_wait_seconds", "Time a model job waited for a worker, per stage.", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


@dataclass(frozen=True, slots=True)
class JobTiming:
    """One model job: its stage and when it was queued, started and finished (monotonic s)."""

    stage: str
    queued: float
    started: float
    finished: float


#: Where the jobs that the current task submits are recorded (a turn's timings), if anywhere.
JOB_TIMINGS: contextvars.ContextVar[list[JobTiming] | None] = contextvars.ContextVar("job_timings", default=None)


@dataclass(slots=True)
class _Job:
    run: Callable[[], None]
    priority: Priority
    queued: float

    def rank(self) -> int:
        p = self.priority
        return p() if callable(p) else p


class FairExecutor:
    def __init__(self, name: str, threads: int = 1) -> None:
        self.name = name
        self._queues: collections.OrderedDict[str, collections.deque[_Job]] = collections.OrderedDict()
        self._wait = QUEUE_WAIT_SECONDS.labels(name)
        self._recent: collections.deque[float] = collections.deque(maxlen=100)  # the last waits (s)
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.ensure_threads(threads)

    def ensure_threads(self, threads: int) -> None:
        """At least this many workers (an engine with more slots than the stage had asks for more)."""
        with self._cond:
            while len(self._threads) < max(1, threads):
                t = threading.Thread(target=self._worker, name=f"livevox-{self.name}-{len(self._threads)}",
                                     daemon=True)
                self._threads.append(t)
                t.start()

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._closed:
                if self._queues:
                    # The best-ranked head; among equals the first in line (round-robin).
                    key = min(self._queues, key=lambda k: self._queues[k][0].rank())
                    q = self._queues[key]
                    job = q.popleft()
                    # Rotate: this session goes to the back of the line.
                    del self._queues[key]
                    if q:
                        self._queues[key] = q
                    return job
                self._cond.wait()
            return None

    def _worker(self) -> None:
        while (job := self._next_job()) is not None:
            job.run()
            # Drop it now, not when the next job comes: its priority may hold a response (and
            # its session) that has ended.
            del job

    async def run(self, key: str, fn: Callable[..., T], *args: Any, priority: Priority = NORMAL) -> T:
        """Run `fn(*args)` on a worker thread, queued behind `key`'s earlier jobs."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        sink = JOB_TIMINGS.get()
        queued = time.monotonic()

        def job() -> None:
            if fut.cancelled():
                return
            started = time.monotonic()
            self._wait.observe(started - queued)
            self._recent.append(started - queued)
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the awaiting task
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)
            finally:
                if sink is not None:
                    sink.append(JobTiming(self.name, queued, started, time.monotonic()))

        with self._cond:
            if self._closed:
                raise RuntimeError(f"executor {self.name} is closed")
            self._queues.setdefault(key, collections.deque()).append(_Job(job, priority, queued))
            self._cond.notify()
        return await fut

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def load(self) -> dict[str, Any]:
        """For /readyz: jobs waiting now, and the median and worst of the last waits (ms)."""
        waits = sorted(self._recent)
        return {"queued": self.pending(),
                "wait_ms_p50": round(waits[len(waits) // 2] * 1000, 1) if waits else None,
                "wait_ms_max": round(waits[-1] * 1000, 1) if waits else None}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queues.clear()
            self._cond.notify_all()


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


_executors: dict[str, FairExecutor] = {}
_lock = threading.Lock()


def stage_executor(stage: str, threads: int = 1) -> FairExecutor:
    """The process-wide executor for a stage (created on first use)."""
    with _lock:
        ex = _executors.get(stage)
        if ex is None:
            ex = _executors[stage] = FairExecutor(stage, threads)
        else:
            ex.ensure_threads(threads)
        return ex


def stage_loads() -> dict[str, dict[str, Any]]:
    """Each stage's queue (the stages that have run a job so far)."""
    with _lock:
        executors = dict(_executors)
    return {name: ex.load() for name, ex in sorted(executors.items())}


#: A producer runs on a worker thread: it calls `emit(item)` for each result and should return
#: soon after `stop` is set (the consumer went away).
Producer = Callable[[Callable[[T], None], threading.Event], None]

_DONE = object()

async def stream_job(stage: str, session_id: str, produce: Producer[T],
                     priority: Priority = NORMAL) -> AsyncIterator[T]:
    """Run `produce` as one job on `stage`'s executor and yield what it emits, as it emits it.

    Closing the iterator early (aclose, GeneratorExit, task cancellation) sets `stop`, so the
    producer can return at its next check; a job still queued is dropped without running.
    Exceptions raised by the producer are re-raised here, after the items emitted before them.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    started = threading.Event()

    def emit(item: T) -> None:
        if not stop.is_set():
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def job() -> None:
        started.set()
        if stop.is_set():
            return
        produce(emit, stop)

    def finished(task: asyncio.Task[None]) -> None:
        # Wakes the consumer with the job's outcome; always runs on the loop, after every emit.
        if task.cancelled():
            queue.put_nowait(_DONE)
        elif (exc := task.exception()) is not None:
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_DONE)

    task = asyncio.ensure_future(stage_executor(stage).run(session_id, job, priority=priority))
    task.add_done_callback(finished)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not task.done():
            stop.set()
            if not started.is_set():
                # Still queued behind other sessions' work: drop it (FairExecutor skips jobs whose
                # future is cancelled). If it started meanwhile, it sees `stop` and returns.
                task.cancel()
