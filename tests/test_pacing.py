"""Pacing: a spoken answer far ahead of what the caller has heard stops generating and resumes
from its own text (`llm.pace_ahead_s`, `llm.pace_resume_s`; realtime/response.py).

Through the real server on loopback and a WebSocket client. The protocol tests use the scripted
stand-in engines (ScriptedLLM with `continues`: it continues a final assistant message, as
llama.cpp does; ScriptedTTS: 60 ms of tone per word, made at once). The last test runs the
embedded llama.cpp itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from livevox.client.call import RealtimeCall
from livevox.engines.base import ChatRequest, TextDelta
from livevox.engines.llamacpp import LlamaCppLLM
from livevox.engines.scripted import ScriptedLLM
from rtcclient import RtcClient
from server_harness import ServerThread, scripted_settings
from wsclient import VL_PATH, RealtimeClient

pytestmark = pytest.mark.usefixtures("fresh_scripts")

SENTENCE = "This is one more sentence of a long spoken answer."  # 10 words: 600 ms of audio
SENTENCES = 12  # 7.2 s of audio in all


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(llm={"engine": "scripted", "pace_ahead_s": 2.0, "pace_resume_s": 1.0},
                                         webrtc={"host_addresses": ["127.0.0.1"]})).start()
    yield srv
    srv.stop()


async def ask(server: ServerThread) -> tuple[RealtimeClient, list[dict[str, Any]]]:
    """A text question; returns the client and the events up to the answer's first audio."""
    c = await RealtimeClient.connect(server.ws)
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}})
    await c.send({"type": "response.create"})
    return c, await c.until("response.audio.delta")


def audio_ms(events: list[dict[str, Any]]) -> float:
    return sum(len(e["delta"]) * 3 / 4 for e in events if e["type"] == "response.audio.delta") / 48


async def test_a_far_ahead_answer_pauses_and_resumes_from_its_own_text(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join([SENTENCE] * SENTENCES)
    ScriptedLLM.continues = True
    c, evs = await ask(server)
    first_audio = time.monotonic()
    evs += await c.until("response.done", timeout=30)
    took = time.monotonic() - first_audio
    done = evs[-1]["response"]
    assert done["status"] == "completed", done
    # Spoken in full, once: the resumed streams carried on where the paused ones stopped.
    transcript = next(e["transcript"] for e in evs if e["type"] == "response.audio_transcript.done")
    assert transcript == ScriptedLLM.reply
    assert audio_ms(evs) == pytest.approx(SENTENCES * 10 * 60, abs=60)
    calls = ScriptedLLM.calls
    assert len(calls) >= 2, [len(c.messages) for c in calls]
    words = len(ScriptedLLM.reply.split())
    used = 0
    for req in calls[1:]:
        last = req.messages[-1]
        assert last["role"] == "assistant" and ScriptedLLM.reply.startswith(last["content"]), last
        assert req.messages[:-1] == calls[0].messages  # the same conversation, plus the answer so far
        used = len(last["content"].split())
        assert req.max_tokens == calls[0].max_tokens - used  # the answer's remaining tokens
    assert 0 < used < words
    assert done["usage"]["output_tokens"] == words
    # Not all generated at once: the answer waited for the caller to catch up.
    assert took > (SENTENCES * 0.6 - 2.0) * 0.5, took
    await c.close()


async def test_a_paced_answer_plays_out_whole_over_webrtc(server: ServerThread) -> None:
    # Over RTP the transport plays the audio in real time; the pauses must not leave a gap the
    # caller hears, nor lose or repeat a word.
    ScriptedLLM.reply = " ".join([SENTENCE] * SENTENCES)
    ScriptedLLM.continues = True
    c = RtcClient(server.http, door="voicelive")
    try:
        await c.start(session={"turn_detection": None})
        await c.send_ws({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}})
        await c.send_ws({"type": "response.create"})
        done = await c.wait_for("response.done", timeout=30)
        await c.wait_for("output_audio_buffer.stopped", timeout=10)
        await asyncio.sleep(0.2)
        assert done["response"]["status"] == "completed"
        assert len(ScriptedLLM.calls) >= 2
        heard = c.loud_frames()
        assert len(heard) * 20 >= SENTENCES * 10 * 60 - 200, len(heard) * 20
        # No gap longer than the TTS's own silence between clauses: the resumed text came in time.
        gaps = [b.rtp_at - a.rtp_at for a, b in itertools.pairwise(heard)]
        assert max(gaps) < 0.5, [(round(a.rtp_at - heard[0].rtp_at, 2), round(g, 2))
                                 for a, g in zip(heard, gaps, strict=False) if g > 0.1]
    finally:
        await c.close()


async def test_the_call_client_waits_for_a_paced_answer_while_it_comes(server: ServerThread) -> None:
    # `livevox call`'s client: its timeout counts from the answer's latest event once it has
    # begun, so an answer that the server paces over longer than the timeout still completes.
    ScriptedLLM.reply = " ".join([SENTENCE] * SENTENCES)
    ScriptedLLM.continues = True
    call = await RealtimeCall.open(server.ws + VL_PATH)
    try:
        await call.configure(vad=False)
        t0 = time.monotonic()
        result = await call.manual_turn(np.zeros(24000, np.int16), timeout=3.0)
        took = time.monotonic() - t0
    finally:
        await call.close()
    assert (result.response or {}).get("status") == "completed", result.response
    assert took > 3.0, took  # longer than the timeout: it kept waiting while the answer came
    assert len(ScriptedLLM.calls) >= 2


async def test_an_engine_that_cannot_continue_is_not_paced(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join([SENTENCE] * SENTENCES)
    c, evs = await ask(server)
    evs += await c.until("response.done", timeout=30)
    assert evs[-1]["response"]["status"] == "completed"
    assert len(ScriptedLLM.calls) == 1
    await c.close()


async def test_a_paused_answer_can_be_cancelled(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join([SENTENCE] * SENTENCES)
    ScriptedLLM.continues = True
    c, evs = await ask(server)
    await asyncio.sleep(0.3)  # 2 s ahead at once (instant stand-ins), then paused for about 1 s
    calls = len(ScriptedLLM.calls)
    await c.send({"type": "response.cancel"})
    evs = await c.until("response.done", timeout=10)
    assert evs[-1]["response"]["status"] == "cancelled"
    await asyncio.sleep(1.5)  # past the resume point: nothing resumes
    assert len(ScriptedLLM.calls) == calls
    # The session goes on.
    ScriptedLLM.reply = "Short."
    await c.send({"type": "response.create"})
    evs = await c.until("response.done", timeout=10)
    assert evs[-1]["response"]["status"] == "completed"
    await c.close()


async def test_llamacpp_continues_a_final_assistant_message() -> None:
    # The embedded SmolLM2, greedy: the answer resumed from its first sentence goes on as the
    # whole answer did, without starting over.
    llm = LlamaCppLLM(max_tokens=60)
    await llm.load()
    try:
        question = [{"role": "system", "content": "You are a helpful voice assistant."},
                    {"role": "user", "content": "Tell me about the city of Paris."}]

        async def answer(messages: list[dict[str, Any]], max_tokens: int) -> list[str]:
            req = ChatRequest(messages=messages, temperature=0.0, max_tokens=max_tokens)
            return [ev.text async for ev in llm.stream(req, "pacing") if isinstance(ev, TextDelta)]

        whole = await answer(question, 60)
        # The prefix: the whole answer's tokens up to the end of its first sentence.
        n = next(i + 1 for i, t in enumerate(whole) if t.rstrip().endswith((".", "!", "?")) and i > 2)
        prefix = "".join(whole[:n])
        rest = await answer([*question, {"role": "assistant", "content": prefix}], 60 - n)
        assert "".join(rest).strip()
        assert not "".join(rest).lstrip().startswith(prefix.strip()[:20])  # no starting over
        # Greedy from the same tokens: the same continuation, at least for its first words.
        assert "".join(rest)[:40] == "".join(whole[n:])[:40], (prefix, rest, whole[n:])
    finally:
        await llm.close()
