"""`turn_detection.idle_timeout_ms` through the real server with the scripted stand-in engines
(VAD, STT, LLM and TTS are stand-ins: engines/scripted.py): after an answer has played, silence
for that long gives `input_audio_buffer.timeout_triggered`, a committed user item and an answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.types.realtime import InputAudioBufferTimeoutTriggered

from server_harness import ServerThread, scripted_settings
from session_harness import PlayoutTransport, new_session, settle
from wsclient import RealtimeClient, silence, tone, types

pytestmark = pytest.mark.usefixtures("fresh_scripts")

GA_PATH = "/v1/realtime?model=gpt-realtime"
TIMEOUT_MS = 600


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings()).start()
    yield srv
    srv.stop()


@contextlib.asynccontextmanager
async def microphone(send: Any) -> AsyncIterator[None]:
    """Silence at real-time pace in the background, as an open microphone sends it."""

    async def run() -> None:
        chunk = base64.b64encode(silence(0.04).astype("<i2").tobytes()).decode()
        t0 = time.monotonic()
        for i in range(10_000):
            await send(chunk)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.04 - time.monotonic()))

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def test_timeout_commits_the_silence_and_answers_openai_sdk(server: ServerThread) -> None:
    client = AsyncOpenAI(api_key="k", base_url=server.http + "/v1", websocket_base_url=server.ws + "/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": TIMEOUT_MS}}}})
        async with microphone(lambda a: conn.input_audio_buffer.append(audio=a)):
            await conn.response.create()
            seq: list[str] = []
            audio_ms = 0.0
            first_audio: float | None = None
            done_at = fired_at = 0.0
            trigger: Any = None
            async for ev in conn:
                seq.append(ev.type)
                if ev.type == "session.updated":
                    assert ev.session.audio.input.turn_detection.idle_timeout_ms == TIMEOUT_MS  # type: ignore[union-attr]
                elif ev.type == "response.output_audio.delta" and trigger is None:
                    first_audio = first_audio or time.monotonic()
                    audio_ms += len(base64.b64decode(ev.delta)) / 2 / 24
                elif ev.type == "response.done" and trigger is None:
                    done_at = time.monotonic()
                elif ev.type == "input_audio_buffer.timeout_triggered":
                    fired_at, trigger = time.monotonic(), ev
                elif ev.type == "input_audio_buffer.committed":
                    committed = ev
                elif ev.type == "response.done":
                    break
    assert isinstance(trigger, InputAudioBufferTimeoutTriggered)  # the SDK parsed it into its own model
    assert first_audio is not None and audio_ms > 0
    # not before the answer has played out in real time, and the timeout after that
    assert fired_at >= max(done_at, first_audio + audio_ms / 1000) + TIMEOUT_MS / 1000 - 0.05
    # offsets into the audio written so far: the silent stretch is about the timeout
    assert 0 <= trigger.audio_start_ms < trigger.audio_end_ms
    assert trigger.audio_end_ms - trigger.audio_start_ms >= TIMEOUT_MS - 200, trigger
    after = seq[seq.index("input_audio_buffer.timeout_triggered"):]
    assert after[:4] == ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed",
                         "conversation.item.added", "conversation.item.done"], after
    assert committed.item_id == trigger.item_id
    assert "response.created" in after and after[-1] == "response.done"


async def _answered(c: RealtimeClient) -> None:
    await c.send({"type": "response.create"})
    await c.until("response.done")


@pytest.mark.parametrize("path", ["/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime", "beta"])
async def test_timeout_in_beta_and_voice_live_spelling(server: ServerThread, path: str) -> None:
    headers = {"OpenAI-Beta": "realtime=v1"} if path == "beta" else None
    c = await RealtimeClient.connect(server.ws, GA_PATH if path == "beta" else path, headers=headers)
    s = await c.update({"turn_detection": {"type": "server_vad", "idle_timeout_ms": 300}})
    assert s["turn_detection"]["idle_timeout_ms"] == 300
    await _answered(c)
    evs = await c.until("input_audio_buffer.timeout_triggered", timeout=5)
    evs += await c.until("response.done")
    trigger = next(e for e in evs if e["type"] == "input_audio_buffer.timeout_triggered")
    assert set(trigger) == {"type", "event_id", "item_id", "audio_start_ms", "audio_end_ms"}
    committed = next(e for e in evs if e["type"] == "input_audio_buffer.committed")
    assert committed["item_id"] == trigger["item_id"]
    assert "response.created" in types(evs)
    await c.close()


async def test_speech_cancels_the_timer(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": {"type": "server_vad", "idle_timeout_ms": 300, "create_response": False}})
    await _answered(c)
    # The user speaks while the answer still plays: a turn, no answer, so no timer either.
    await c.append(np.concatenate([tone(0.5), silence(1.0)]))
    evs = await c.quiet(1.5)
    assert "input_audio_buffer.committed" in types(evs), types(evs)
    assert "input_audio_buffer.timeout_triggered" not in types(evs), types(evs)
    await c.close()


async def test_a_client_item_cancels_the_timer(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": {"type": "server_vad", "idle_timeout_ms": 300}})
    await _answered(c)
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hold on"}]}})
    evs = await c.quiet(1.5)
    assert "conversation.item.created" in types(evs)
    assert "input_audio_buffer.timeout_triggered" not in types(evs), types(evs)
    # the next answer arms it again
    await _answered(c)
    await c.until("input_audio_buffer.timeout_triggered", timeout=5)
    await c.close()


@pytest.mark.parametrize(("td", "param"), [
    ({"type": "semantic_vad", "idle_timeout_ms": 500}, "session.turn_detection.idle_timeout_ms"),
    ({"type": "azure_semantic_vad", "idle_timeout_ms": 500}, "session.turn_detection.idle_timeout_ms"),
    ({"type": "server_vad", "idle_timeout_ms": 0}, "session.turn_detection.idle_timeout_ms"),
    ({"type": "server_vad", "idle_timeout_ms": -5}, "session.turn_detection.idle_timeout_ms"),
    ({"type": "server_vad", "idle_timeout_ms": "500"}, "session.turn_detection.idle_timeout_ms"),
    ({"type": "server_vad", "idle_timeout_ms": True}, "session.turn_detection.idle_timeout_ms"),
    ({"type": "server_vad", "idle_timeout_ms": 10**9}, "session.turn_detection.idle_timeout_ms"),
])
async def test_bad_idle_timeouts_are_errors_and_the_session_goes_on(
        server: ServerThread, td: dict[str, Any], param: str) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.send({"type": "session.update", "event_id": "evt_bad", "session": {"turn_detection": td}})
    err = await c.error()
    assert err["param"] == param and err["code"] == "invalid_value" and err["event_id"] == "evt_bad", err
    assert "idle_timeout_ms" in err["message"]
    s = await c.update({"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1000}})
    assert s["turn_detection"]["idle_timeout_ms"] == 1000
    await c.close()


async def test_ga_error_names_the_param(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, GA_PATH)
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "idle_timeout_ms": 500}}}}})
    err = await c.error()
    assert err["param"] == "session.turn_detection.idle_timeout_ms", err
    await c.close()


async def test_the_timer_waits_until_the_transport_has_played_the_answer() -> None:
    # In process, over a transport that plays the audio itself (as WebRTC does); the timer's
    # steps are driven with explicit times (10 s timeout: the real-time poll never gets there).
    t = PlayoutTransport()
    s = await new_session(t)
    await s.handle_event({"type": "session.update", "session": {
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 10_000}}})
    await s.handle_event({"type": "response.create"})
    await settle(s)
    assert t.of("response.done") and t.pending_audio() is not None
    now = time.monotonic()
    for later in (0.0, 30.0, 60.0):
        await s.idle.step(now + later)  # done, but still queued in the transport: no timer
    assert not t.of("input_audio_buffer.timeout_triggered")
    t.play(10_000)
    await s.idle.step(now + 61)  # played out: the timer starts here
    await s.idle.step(now + 70.9)
    assert not t.of("input_audio_buffer.timeout_triggered")
    await s.idle.step(now + 71.1)
    [trigger] = t.of("input_audio_buffer.timeout_triggered")
    await settle(s)
    after = [e["type"] for e in t.events[t.events.index(trigger):]]
    assert after[:3] == ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed",
                         "conversation.item.created"], after
    assert t.of("input_audio_buffer.committed")[-1]["item_id"] == trigger["item_id"]
    assert s.conversation.get(trigger["item_id"]).item["role"] == "user"
    assert after.count("response.created") == 1 and len(t.of("response.done")) == 2
