"""Sharing the box between callers: the stage executors' priorities (a turn's first clause before
the later clauses of an answer that is ahead of its playback), the queue waits they record (per
stage in /metrics and /readyz, per turn in the opt-in latency event), the turns-in-flight count,
and admission that refuses a new session when too many turns are in flight.

The executor is tested directly with blocking jobs (its order is the behaviour); the rest through
the real server: scripted stand-ins, and the real Piper voice where a stage must queue real work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
import websockets.sync.client

from engine_standin import EngineStandIn
from livevox.core.executor import JOB_TIMINGS, QUEUE_WAIT_SECONDS, FairExecutor, JobTiming
from livevox.engine_settings import OpenAILLMSettings
from livevox.engines.base import ChatRequest, TextDelta
from livevox.engines.llamacpp import LlamaCppLLM, auto_parallel, auto_threads
from livevox.engines.openai_llm import OpenAILLM
from livevox.engines.scripted import ScriptedLLM
from livevox.realtime.metrics import TurnTimings
from livevox.realtime.response import AHEAD, FIRST_CLAUSE, LOW_WATER_MS, RUNNING_OUT, ResponseRun
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient, silence, tone

pytestmark = pytest.mark.usefixtures("fresh_scripts")


async def run_in_order(ex: FairExecutor, jobs: list[tuple[str, Any]]) -> list[str]:
    """Block the one worker, queue `jobs` ((session, priority) each), release: the run order."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(ex.run("blocker", gate.wait))
    await asyncio.sleep(0.05)  # the worker is inside the blocker now
    order: list[str] = []
    futures = [asyncio.ensure_future(ex.run(key, order.append, f"{key}{i}", priority=prio))
               for i, (key, prio) in enumerate(jobs)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *futures)
    return order


async def test_lower_priority_first_then_round_robin() -> None:
    ex = FairExecutor("test-prio", threads=1)
    try:
        order = await run_in_order(ex, [("a", 2), ("a", 2), ("c", 1), ("b", 0), ("d", 2)])
        assert order == ["b3", "c2", "a0", "d4", "a1"]  # a and d alternate at the same priority
    finally:
        ex.close()


async def test_a_priority_function_is_asked_when_a_worker_picks() -> None:
    ex = FairExecutor("test-prio-fn", threads=1)
    level = {"a": 0}
    try:
        gate = threading.Event()
        blocker = asyncio.ensure_future(ex.run("blocker", gate.wait))
        await asyncio.sleep(0.05)
        order: list[str] = []
        first = asyncio.ensure_future(ex.run("a", order.append, "a", priority=lambda: level["a"]))
        second = asyncio.ensure_future(ex.run("b", order.append, "b", priority=1))
        await asyncio.sleep(0.05)
        level["a"] = 2  # queued urgent, no longer urgent by the time a worker is free
        gate.set()
        await asyncio.gather(blocker, first, second)
        assert order == ["b", "a"]
    finally:
        ex.close()


async def test_queue_waits_are_observed_and_jobs_recorded_for_their_turn() -> None:
    ex = FairExecutor("test-wait", threads=1)
    before = QUEUE_WAIT_SECONDS.labels("test-wait")._sum.get()  # the histogram's own total
    try:
        jobs: list[JobTiming] = []
        token = JOB_TIMINGS.set(jobs)
        try:
            order = await run_in_order(ex, [("a", 1), ("b", 1)])
        finally:
            JOB_TIMINGS.reset(token)
        assert order == ["a0", "b1"]
        assert [j.stage for j in jobs] == ["test-wait"] * 3  # the blocker and both jobs
        for j in jobs:
            assert j.queued <= j.started <= j.finished
        # both waited behind the blocker (~0.1 s): the histogram and the load report saw it
        assert QUEUE_WAIT_SECONDS.labels("test-wait")._sum.get() - before >= 0.08
        load = ex.load()
        assert load["queued"] == 0 and load["wait_ms_max"] >= 40
    finally:
        ex.close()


def test_later_clauses_yield_once_their_answer_is_ahead_of_playback() -> None:
    run: Any = ResponseRun.__new__(ResponseRun)  # only the fields the priority reads
    run.timings = TurnTimings()
    run._audio_ms = 5000.0
    assert run._later_clause_priority() == RUNNING_OUT  # nothing heard yet
    run.timings.mark("first_audio_sent", time.monotonic() - 1.0)
    assert run._later_clause_priority() == AHEAD  # 4 s still to play
    run.timings.marks["first_audio_sent"] = time.monotonic() - (5000 - LOW_WATER_MS / 2) / 1000
    assert run._later_clause_priority() == RUNNING_OUT  # less than LOW_WATER_MS left
    assert FIRST_CLAUSE < RUNNING_OUT < AHEAD


# ------------------------------------------------------------------ through the server


async def test_a_turns_tts_jobs_are_in_its_latency_event(piper_server: ServerThread) -> None:
    ScriptedLLM.reply = "The capital of France is Paris. It is on the Seine. It has many museums."
    c = await RealtimeClient.connect(piper_server.ws, "/voice-live/realtime?model=x&livevox-latency-events=1")
    try:
        await c.append(np.concatenate([tone(0.8), silence(0.8)]))
        evs = await c.until("livevox.turn.metrics", timeout=30)
        metrics = evs[-1]
        tts = [j for j in metrics["jobs"] if j["stage"] == "tts"]
        assert tts, metrics["jobs"]  # one job per TTS call (the clause splitter decides how many)
        for j in tts:
            assert j["queued_ms"] <= j["started_ms"] <= j["finished_ms"]
        assert tts[0]["queued_ms"] >= metrics["stages_ms"]["first_clause"] - 1
        # /metrics has the stage's queue-wait histogram
        text = (await asyncio.to_thread(httpx.get, f"{piper_server.http}/metrics")).text
        assert 'livevox_stage_queue_wait_seconds_count{stage="tts"}' in text
    finally:
        await c.close()


def test_the_admission_limits_default_to_the_embedded_llms_slots() -> None:
    """Unset, `limits.max_turns_in_flight` is the embedded llama.cpp's slot count (turns beyond it
    would wait for a slot) and `limits.max_sessions` 1.5 sessions per slot, and the session beyond
    it is refused; with the scripted (or a remote) LLM there is no turn limit and 500 sessions."""
    srv = ServerThread(scripted_settings(llm={"engine": "llamacpp", "parallel": 2, "n_ctx": 512})).start(timeout=300)
    try:
        load = httpx.get(f"{srv.http}/readyz").json()["load"]
        assert (load["max_turns_in_flight"], load["max_sessions"], load["sessions"]) == (2, 3, 0)
        url = srv.ws + "/voice-live/realtime?model=x"
        with contextlib.ExitStack() as held:
            for _ in range(2):
                held.enter_context(websockets.sync.client.connect(url))
            with websockets.sync.client.connect(url):
                assert httpx.get(f"{srv.http}/readyz").json()["load"]["sessions"] == 3
                with pytest.raises(websockets.InvalidStatus) as info:
                    websockets.sync.client.connect(url)
                assert info.value.response.status_code == 503
                assert json.loads(info.value.response.body)["error"]["code"] == "session_limit_reached"
                assert b"limits.max_sessions" in info.value.response.body
            deadline = time.monotonic() + 10  # the server notices the close, then admits again
            while httpx.get(f"{srv.http}/readyz").json()["load"]["sessions"] > 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            with websockets.sync.client.connect(url) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    finally:
        srv.stop()
    srv = ServerThread(scripted_settings()).start()
    try:
        load = httpx.get(f"{srv.http}/readyz").json()["load"]
        assert (load["max_turns_in_flight"], load["max_sessions"]) == (None, 500)
    finally:
        srv.stop()


async def test_readyz_shows_the_load_and_admission_refuses_when_saturated() -> None:
    srv = ServerThread(scripted_settings(limits={"max_turns_in_flight": 1})).start()
    try:
        ScriptedLLM.reply = " ".join(["word"] * 40) + "."
        ScriptedLLM.token_delay = 0.05  # 2 s of generation
        a = await RealtimeClient.connect(srv.ws)
        await a.update({"turn_detection": None})
        await a.send({"type": "response.create"})
        await a.until("response.created")
        load = (await asyncio.to_thread(httpx.get, f"{srv.http}/readyz")).json()["load"]
        assert load["turns_in_flight"] == 1 and load["max_turns_in_flight"] == 1
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(srv.ws + "/voice-live/realtime?model=x")
        assert info.value.response.status_code == 503
        assert b"limits.max_turns_in_flight" in info.value.response.body
        await a.until("response.done")  # the box is free again: a new caller gets in
        await asyncio.sleep(0.1)
        assert (await asyncio.to_thread(httpx.get, f"{srv.http}/readyz")).json()["load"]["turns_in_flight"] == 0
        b = await RealtimeClient.connect(srv.ws)
        await b.close()
        await a.close()
    finally:
        srv.stop()


async def test_remote_llm_streams_run_side_by_side(standin: EngineStandIn) -> None:
    """Several sessions' requests to an OpenAI-compatible server are sent at once and streamed
    at once: every stream has its first token before any has finished."""
    standin.reset()
    standin.token_delay = 0.05  # ~10 tokens: each stream lasts about half a second
    llm = OpenAILLM(OpenAILLMSettings(base_url=standin.base_url))
    await llm.load()
    try:
        async def one(i: int) -> tuple[float, float]:
            first = None
            async for ev in llm.stream(ChatRequest(messages=[{"role": "user", "content": f"q{i}"}]), f"s{i}"):
                if isinstance(ev, TextDelta) and first is None:
                    first = time.monotonic()
            assert first is not None
            return first, time.monotonic()

        spans = await asyncio.gather(*(one(i) for i in range(4)))
        assert max(f for f, _ in spans) < min(e for _, e in spans), spans
    finally:
        await llm.close()
        standin.reset()


async def test_llamacpp_slots_generate_for_several_sessions_at_once() -> None:
    """`llm.parallel = 2`: two sessions' answers stream at once from one llama.cpp (the embedded
    SmolLM2), each slot with the whole `n_ctx`."""
    llm = LlamaCppLLM(n_ctx=1024, threads=2, parallel=2)
    await llm.load()
    try:
        assert llm.context_tokens() == 1024

        async def one(i: int) -> tuple[float, float]:
            req = ChatRequest(messages=[{"role": "user", "content": f"Tell me a long story about robot {i}."}],
                              max_tokens=48, temperature=0.0)
            first = None
            async for ev in llm.stream(req, f"slot-{i}"):
                if isinstance(ev, TextDelta) and first is None:
                    first = time.monotonic()
            assert first is not None
            return first, time.monotonic()

        spans = await asyncio.gather(one(0), one(1))
        assert max(f for f, _ in spans) < min(e for _, e in spans), spans  # interleaved, not one after the other
    finally:
        await llm.close()


async def test_llamacpp_prefill_is_chunked_between_other_slots_decoding() -> None:
    """A long prompt is prefilled `n_batch` tokens per step, and a slot that is already answering
    gets tokens between the chunks: one session's long prompt does not stall another's answer.
    With n_batch 2048 the same prompt is one step, and the answering slot gets at most one token
    while it runs (mutation check: this test fails with n_batch=2048)."""
    llm = LlamaCppLLM(n_ctx=4096, threads=2, parallel=2, n_batch=128)
    await llm.load()
    try:
        words = "the of and a to in is you that it he was for on are as with his they at be this have".split()
        long_prompt = " ".join(words[(i * 7) % len(words)] for i in range(1500)) + "\nOne word for all that?"
        a_tokens: list[float] = []
        b_first: list[float] = []
        decoding = asyncio.Event()

        async def answer() -> None:
            req = ChatRequest(messages=[{"role": "user", "content": "Count from 1 to 300, with commas."}],
                              max_tokens=400, temperature=0.0)
            async for ev in llm.stream(req, "answering"):
                if isinstance(ev, TextDelta):
                    a_tokens.append(time.monotonic())
                    if len(a_tokens) == 10:
                        decoding.set()

        task = asyncio.create_task(answer())
        await decoding.wait()  # the first session is decoding
        b_start = time.monotonic()
        req = ChatRequest(messages=[{"role": "user", "content": long_prompt}], max_tokens=2, temperature=0.0)
        async for ev in llm.stream(req, "long-prompt"):
            if isinstance(ev, TextDelta) and not b_first:
                b_first.append(time.monotonic())
        assert b_first
        during = [t for t in a_tokens if b_start < t < b_first[0]]
        # ~1600 prompt tokens in 128-token steps: about 12 steps, a token for the answer in each.
        assert len(during) >= 6, (len(during), len(a_tokens))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await llm.close()


def test_auto_parallel_follows_cores_and_model_size() -> None:
    assert auto_parallel(1, 100 << 20) == 2
    assert auto_parallel(2, 100 << 20) == 4  # this machine, the embedded SmolLM2
    assert auto_parallel(16, 100 << 20) == 8
    assert auto_parallel(16, 5 << 30) == 4  # a big GGUF: fewer slots
    assert LlamaCppLLM(parallel=None).parallel == auto_parallel(os.cpu_count() or 1, 0)


def test_auto_threads_leave_cores_to_the_other_stages() -> None:
    assert [auto_threads(c) for c in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 8]
    assert LlamaCppLLM().threads == auto_threads(os.cpu_count() or 1)
    assert LlamaCppLLM(threads=3).threads == 3


# A fresh process: the stage executors are process-wide, and this one must start with its own.
_PIPER_WORKERS = """
import asyncio, json, sys
from livevox.core.executor import JOB_TIMINGS
from livevox.engines.base import SynthesisOptions
from livevox.engines.piper.tts import PiperTTS

async def main() -> None:
    tts = PiperTTS(workers=int(sys.argv[1]))
    await tts.load()
    text = "The capital of France is Paris, a city on the Seine."

    async def one(sid: str) -> tuple[int, list[tuple[float, float]]]:
        jobs = []
        JOB_TIMINGS.set(jobs)
        n = sum([len(a) async for a in tts.synthesize(text, SynthesisOptions(), sid)])
        return n, [(j.started, j.finished) for j in jobs if j.stage == "tts"]

    print(json.dumps(await asyncio.gather(one("a"), one("b"))))

asyncio.run(main())
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_piper_workers_synthesize_for_two_sessions_at_once(workers: int) -> None:
    """`tts.workers = 2`: two sessions' clauses are synthesized side by side by the one Piper voice
    (real Piper), each whole; with one worker, one after the other."""
    out = subprocess.run([sys.executable, "-c", _PIPER_WORKERS, str(workers)], capture_output=True, text=True,
                         timeout=120, check=True)
    (n_a, jobs_a), (n_b, jobs_b) = json.loads(out.stdout.strip().splitlines()[-1])
    assert n_a > 22050 and n_b > 22050, (n_a, n_b)  # over a second of speech each
    assert len(jobs_a) == len(jobs_b) == 1, (jobs_a, jobs_b)
    (start_a, end_a), (start_b, end_b) = jobs_a[0], jobs_b[0]
    overlap = min(end_a, end_b) > max(start_a, start_b)
    assert overlap == (workers == 2), (jobs_a, jobs_b)
