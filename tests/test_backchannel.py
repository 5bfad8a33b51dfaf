"""Backchannels and interruptions during an answer, decided by the session alone, carried out the
same by every transport: both WebRTC doors (aiortc peer, audio over RTP) and the WebSocket.

With `remove_filler_words`, an "mm-hmm" while the agent talks must leave the answer playing to its
end, even after it was fully generated and is only playing out of the server's RTP track; a real
interruption still stops the agent's audio. Scripted stand-in engines (energy VAD, canned STT, a
tone per word for TTS) make the audio lengths exact.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from livevox.client.webrtc import Received
from livevox.engines.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS
from rtcclient import RtcClient, silence, tone
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient
from wsclient import silence as ws_silence
from wsclient import tone as ws_tone

pytestmark = pytest.mark.usefixtures("fresh_scripts")

WORDS = 60  # 3.6 s of agent audio
ANSWER_MS = WORDS * 60
FILLER_TD = {"type": "server_vad", "remove_filler_words": True, "auto_truncate": True,
             "silence_duration_ms": 400}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(webrtc={"host_addresses": ["127.0.0.1"]})).start()
    yield srv
    srv.stop()


def session_for(door: str) -> dict[str, Any]:
    if door == "openai":
        return {"type": "realtime", "audio": {"input": {"turn_detection": FILLER_TD}}}
    return {"turn_detection": FILLER_TD}


@contextlib.asynccontextmanager
async def call(server: ServerThread, door: str) -> AsyncIterator[RtcClient]:
    c = RtcClient(server.http, door=door)
    try:
        await c.start(session=session_for(door))
        yield c
    finally:
        await c.close()


async def until_heard(c: RtcClient, ms: int, timeout: float = 10.0) -> None:
    for _ in range(int(timeout * 100)):
        if len(c.loud_frames()) * 20 >= ms:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"heard only {len(c.loud_frames()) * 20} ms of the answer")


def long_answer_then(second: str) -> None:
    """The question's answer is 3.6 s of audio; the caller's second utterance is heard as `second`."""
    ScriptedLLM.reply = " ".join(["word"] * WORDS) + "."
    ScriptedSTT.script(["what is the weather like", second])


async def ask(c: RtcClient) -> dict[str, Any]:
    """Say the question; returns the answer's output_audio_buffer.started."""
    c.mic.say(np.concatenate([silence(0.3), tone(1.0), silence(0.6)]))
    return await c.wait_for("output_audio_buffer.started", timeout=10)


@pytest.mark.parametrize("door", ["voicelive", "openai"])
async def test_webrtc_backchannel_lets_the_answer_play_to_its_end(server: ServerThread, door: str) -> None:
    long_answer_then("mm-hmm")
    async with call(server, door) as c:
        first = await ask(c)
        await c.wait_for("response.done", timeout=10)  # generated in full; now only playing out
        await until_heard(c, 600)
        n = len(c.all_events())
        c.mic.say(np.concatenate([tone(0.4, freq=300), silence(0.6)]))  # "mm-hmm"
        await c.wait_for("input_audio_buffer.speech_stopped", after=n, timeout=5)
        await c.wait_for("output_audio_buffer.stopped", after=n, timeout=10)
        seq = [e["type"] for _, _, e in c.all_events()[n:]]
        assert "output_audio_buffer.cleared" not in seq
        assert "conversation.item.truncated" not in seq
        assert "response.created" not in seq  # a backchannel is no turn
        done = next(e for _, _, e in c.all_events() if e["type"] == "response.done"
                    and e["response"]["id"] == first["response_id"])
        assert done["response"]["status"] == "completed"
        await asyncio.sleep(0.2)
        # the whole answer reached the caller (each word is a 60 ms tone, 20 ms frames)
        assert len(c.loud_frames()) * 20 >= ANSWER_MS - 200, len(c.loud_frames()) * 20


NEXT_ANSWER_HZ = 880.0


def peak_hz(f: Received) -> float:
    spectrum = np.abs(np.fft.rfft(f.pcm.astype(np.float64) * np.hanning(f.pcm.size)))
    return float(np.argmax(spectrum)) * f.rate / f.pcm.size


@pytest.mark.parametrize("door", ["voicelive", "openai"])
async def test_webrtc_real_interruption_still_stops_the_answer(server: ServerThread, door: str) -> None:
    long_answer_then("wait stop I have another question")
    async with call(server, door) as c:
        first = await ask(c)
        await until_heard(c, 600)
        # The first answer is synthesized in full by now (instant stand-ins); whatever is
        # synthesized from here on is the next answer, at another pitch. So its audio is told
        # from a leak of the first answer's by what it sounds like, not by when the next
        # answer's events arrive (the data channel may lag the RTP under load).
        assert sum(t.split().count("word") for t in ScriptedTTS.calls) >= WORDS - 1, ScriptedTTS.calls
        ScriptedTTS.frequency = NEXT_ANSWER_HZ
        n = len(c.all_events())
        c.mic.say(np.concatenate([tone(0.6, freq=300), silence(0.8)]))  # short, but words
        cleared = await c.wait_for("output_audio_buffer.cleared", after=n, timeout=5)
        assert cleared["response_id"] == first["response_id"]
        cleared_at = next(t for _, t, e in c.all_events()[n:] if e is cleared)
        await c.wait_for("input_audio_buffer.speech_stopped", after=n, timeout=5)
        await c.wait_for("response.created", after=n, timeout=5)  # the new turn
        await asyncio.sleep(0.5)
        late = [f for f in c.loud_frames() if f.rtp_at > cleared_at + 0.1]
        # the session decided (cleared is its mark): the first answer's audio stops at once,
        # within a few 20 ms frames, and never comes back
        leak = [round(f.rtp_at - cleared_at, 3) for f in late if peak_hz(f) < (440 + NEXT_ANSWER_HZ) / 2]
        assert not leak, leak[:5]
        assert any(abs(peak_hz(f) - NEXT_ANSWER_HZ) < 60 for f in late), "the next answer was not heard"
        assert any(f.rtp_at < cleared_at for f in c.loud_frames())
        truncated = c.find("conversation.item.truncated")
        assert truncated and truncated[0][2]["audio_end_ms"] < ANSWER_MS - 1000


async def test_websocket_backchannel_and_interruption(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join(["word"] * WORDS) + "."
    ScriptedLLM.token_delay = 0.05  # the answer is still being generated when the user speaks
    ScriptedSTT.script(["what is the weather like", "mm-hmm", "no wait, stop there"])
    c = await RealtimeClient.connect(server.ws)
    try:
        await c.update({"turn_detection": FILLER_TD})
        await c.append(np.concatenate([ws_tone(1.0), ws_silence(0.6)]))
        evs = await c.until("response.audio.delta")
        await c.append(np.concatenate([ws_tone(0.4), ws_silence(0.6)]))  # "mm-hmm"
        evs += await c.until("response.done")
        seq = [e["type"] for e in evs]
        assert evs[-1]["response"]["status"] == "completed"
        assert "conversation.item.truncated" not in seq and seq.count("response.created") == 1
        audio_ms = sum(len(e["delta"]) * 3 // 4 for e in evs if e["type"] == "response.audio.delta") // 48
        assert audio_ms >= ANSWER_MS - 200, audio_ms
        # the next answer, interrupted by words: cancelled
        await c.append(np.concatenate([ws_tone(1.0), ws_silence(0.6)]))
        await c.until("response.audio.delta")
        await c.append(np.concatenate([ws_tone(0.6), ws_silence(0.6)]))
        evs = await c.until("response.done")
        assert evs[-1]["response"]["status"] == "cancelled"
        assert evs[-1]["response"]["status_details"]["reason"] == "turn_detected"
    finally:
        await c.close()
