"""Run blocking model work off the event loop, fairly across sessions.

Each stage (VAD, STT, LLM, TTS) gets its own worker threads, so a long LLM answer never
holds up another session's VAD. Within a stage, jobs are queued per session and the workers
take them round-robin, so one session that submits many jobs (a long answer's clauses) cannot
starve another that submits one. A job may carry a priority (lower runs first), evaluated when a
worker picks: a turn's first clause goes before the later clauses of an answer that is already
seconds ahead of its playback.

Each job's wait in the queue is observed per stage (`livevox_stage_queue_wait_seconds`), and a
caller that sets `JOB_TIMINGS` gets (stage, queued, started, finished) of every job it submits.

`run_batched` submits a job that may share one call with other sessions' jobs (STT: one encoder
pass for several utterances). A worker that picks such a job also takes the heads of other
sessions' queues that carry the same batch key and no worse a priority, up to `max_batch`; it
never waits for company, so a lone job runs at once. Each job keeps its own result or
exception, its own queue-wait observation and JobTiming; `livevox_stage_batch_size` counts how
many jobs each batched call served.

`stream_job` is the bridge the model engines share: it runs a blocking producer on a stage's
executor and hands each item it emits to the event loop as soon as it exists.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import Histogram

T = TypeVar("T")

#: A job's priority: a number, or a function giving it when a worker picks (lower runs first).
Priority = int | Callable[[], int]
NORMAL = 1
#: Work nobody waits for yet (a piece of a turn still being spoken): after every NORMAL job.
BACKGROUND = 2

QUEUE_WAIT_SECONDS = Histogram(
    "livevox_stage_queue_wait_seconds", "Time a model job waited for a worker, per stage.", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
BATCH_SIZE = Histogram(
    "livevox_stage_batch_size", "Jobs served by one batched model call, per stage.", ["stage"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))


@dataclass(frozen=True, slots=True)
class JobTiming:
    """One model job: its stage and when it was queued, started and finished (monotonic s)."""

    stage: str
    queued: float
    started: float
    finished: float


#: Where the jobs that the current task submits are recorded (a turn's timings), if anywhere.
JOB_TIMINGS: contextvars.ContextVar[list[JobTiming] | None] = contextvars.ContextVar("job_timings", default=None)


#: A batched call: the items of the jobs it serves, in; one result per item (an exception
#: instance for an item that failed alone), out.
BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(slots=True)
class _Batch:
    """What makes a job batchable: its key (jobs share a call only with the same key), the call,
    its item, and how it reports back (`begin` returns False for a job nobody awaits any more)."""

    key: Hashable
    fn: BatchFn
    item: Any
    max_batch: int
    begin: Callable[[float], bool]
    end: Callable[[bool, Any, float], None]


@dataclass(slots=True)
class _Job:
    run: Callable[[], None]
    priority: Priority
    queued: float
    batch: _Batch | None = field(default=None)
    key: str = ""  # the session it was queued for

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
        self._running: collections.Counter[str] = collections.Counter()  # session -> jobs on a worker
        self.ensure_threads(threads)

    @property
    def workers(self) -> int:
        with self._cond:
            return len(self._threads)

    def ensure_threads(self, threads: int) -> None:
        """At least this many workers (an engine with more slots than the stage had asks for more)."""
        with self._cond:
            while len(self._threads) < max(1, threads):
                t = threading.Thread(target=self._worker, name=f"livevox-{self.name}-{len(self._threads)}",
                                     daemon=True)
                self._threads.append(t)
                t.start()

    def _pop(self, key: str) -> _Job:
        q = self._queues[key]
        job = q.popleft()
        self._running[key] += 1  # until _done: a worker runs it from now on
        # Rotate: this session goes to the back of the line.
        del self._queues[key]
        if q:
            self._queues[key] = q
        return job

    def _next_jobs(self) -> list[_Job] | None:
        """The next job, with the batchable heads of other sessions' queues that may share its call."""
        with self._cond:
            while not self._closed:
                if self._queues:
                    # The best-ranked head; among equals the first in line (round-robin).
                    ranks = {k: q[0].rank() for k, q in self._queues.items()}
                    key = min(ranks, key=ranks.__getitem__)
                    job = self._pop(key)
                    jobs = [job]
                    b = job.batch
                    if b is not None and b.max_batch > 1:
                        # Company already waiting, in line order; never a worse-ranked job ahead
                        # of better-ranked ones, and never waiting for more.
                        for other in [k for k in self._queues if k != key]:
                            if len(jobs) >= b.max_batch:
                                break
                            head = self._queues[other][0]
                            if (head.batch is not None and head.batch.key == b.key and head.batch.fn == b.fn
                                    and ranks[other] <= ranks[key]):
                                jobs.append(self._pop(other))
                    return jobs
                self._cond.wait()
            return None

    def _worker(self) -> None:
        while (jobs := self._next_jobs()) is not None:
            try:
                if jobs[0].batch is None:
                    jobs[0].run()
                else:
                    self._run_batch([j.batch for j in jobs if j.batch is not None])
            finally:
                self._done(jobs)
            # Drop them now, not when the next job comes: a priority may hold a response (and
            # its session) that has ended.
            del jobs

    def _done(self, jobs: list[_Job]) -> None:
        with self._cond:
            for j in jobs:
                self._running[j.key] -= 1
                if self._running[j.key] <= 0:
                    del self._running[j.key]

    def others_in_flight(self, key: str) -> int:
        """Jobs of sessions other than `key` running or waiting now (whether this stage is busy
        with other callers, for a job deciding how much work to do)."""
        with self._cond:
            waiting = sum(len(q) for k, q in self._queues.items() if k != key)
            return waiting + sum(n for k, n in self._running.items() if k != key)

    def _run_batch(self, batch: list[_Batch]) -> None:
        started = time.monotonic()
        live = [b for b in batch if b.begin(started)]
        if not live:
            return
        BATCH_SIZE.labels(self.name).observe(len(live))
        try:
            results = list(live[0].fn([b.item for b in live]))
            if len(results) != len(live):
                raise RuntimeError(f"batched {self.name} call gave {len(results)} results for {len(live)} jobs")
        except BaseException as exc:  # every job of the call gets it
            finished = time.monotonic()
            for b in live:
                b.end(False, exc, finished)
            return
        finished = time.monotonic()
        for b, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                b.end(False, result, finished)
            else:
                b.end(True, result, finished)

    async def run(self, key: str, fn: Callable[..., T], *args: Any, priority: Priority = NORMAL) -> T:
        """Run `fn(*args)` on a worker thread, queued behind `key`'s earlier jobs."""
        fut, begin, end = self._reporting()

        def job() -> None:
            if not begin(time.monotonic()):
                return
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the awaiting task
                end(False, exc, time.monotonic())
            else:
                end(True, result, time.monotonic())

        return await self._submit(key, fut, _Job(job, priority, time.monotonic()))

    async def run_batched(self, key: str, batch_key: Hashable, fn: BatchFn, item: Any, *,
                          max_batch: int, priority: Priority = NORMAL) -> Any:
        """`fn([item, ...])[i]` for this job's item, on a worker thread, queued behind `key`'s
        earlier jobs; the call may also serve other sessions' waiting jobs with the same
        `batch_key` (and the same `fn`), up to `max_batch` items. An exception instance in the
        results is raised to that job's caller alone; an exception from `fn` to all of them."""
        fut, begin, end = self._reporting()

        def alone() -> None:  # never called: a batched job runs through _run_batch
            raise AssertionError("batched job run alone")

        job = _Job(alone, priority, time.monotonic(), _Batch(batch_key, fn, item, max_batch, begin, end))
        return await self._submit(key, fut, job)

    def _reporting(self) -> tuple[asyncio.Future[Any], Callable[[float], bool], Callable[[bool, Any, float], None]]:
        """A job's future, and its two hooks for the worker: `begin(started)` (False: nobody
        waits for it, skip it) observes its queue wait; `end(ok, value, finished)` delivers the
        result or exception and records its JobTiming."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        sink = JOB_TIMINGS.get()
        queued = time.monotonic()
        started_at = [queued]

        def begin(started: float) -> bool:
            if fut.cancelled():
                return False
            started_at[0] = started
            self._wait.observe(started - queued)
            self._recent.append(started - queued)
            return True

        def end(ok: bool, value: Any, finished: float) -> None:
            # Recorded before the result is handed over: the caller may read its timings as soon
            # as it resumes (a turn's metrics event, once its last job is done).
            if sink is not None:
                sink.append(JobTiming(self.name, queued, started_at[0], finished))
            loop.call_soon_threadsafe(_set_result if ok else _set_exception, fut, value)

        return fut, begin, end

    async def _submit(self, key: str, fut: asyncio.Future[T], job: _Job) -> T:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"executor {self.name} is closed")
            job.key = key
            self._queues.setdefault(key, collections.deque()).append(job)
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
