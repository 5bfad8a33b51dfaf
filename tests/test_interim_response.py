"""Voice Live `interim_response` through the real server on loopback: a short filler spoken while the
answer is late (the `latency` trigger) or while a tool call is pending (`tool`), static or written
by the LLM engine; it never comes after the answer's audio, stays out of what the LLM sees, is cut
at a word boundary when the answer is ready, and is cut by a cancel like any audio.

The stand-in engines (canned LLM with a per-token delay, a tone per word for TTS) make "late" exact;
the word-boundary test speaks with the real Piper voice, whose word marks give the boundaries.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from livevox.engines.scripted import ScriptedLLM, ScriptedToolCall, ScriptedTTS
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient, types

pytestmark = pytest.mark.usefixtures("fresh_scripts")

FILLER = "Hold on please."
STATIC = {"type": "static_interim_response", "texts": [FILLER], "latency_threshold_ms": 150}
TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings()).start()
    yield srv
    srv.stop()


async def session(server: ServerThread, **extra: Any) -> RealtimeClient:
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None, **extra})
    return c


def messages_of(evs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each output item's events, by item id, in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in evs:
        iid = e.get("item_id") or (e.get("item") or {}).get("id")
        if iid and e["type"].startswith("response."):
            out.setdefault(iid, []).append(e)
    return out


def late_answer() -> None:
    ScriptedLLM.reply = "Paris is the capital of France."
    ScriptedLLM.token_delay = 0.12  # the first clause is complete after ~0.7 s


async def test_latency_filler_comes_first_and_stays_out_of_the_context(server: ServerThread) -> None:
    late_answer()
    c = await session(server, interim_response=STATIC)
    try:
        await c.send({"type": "response.create"})
        evs = await c.until("response.done")
        done = evs[-1]["response"]
        assert done["status"] == "completed"
        filler, answer = done["output"]
        assert filler["content"][0]["transcript"] == FILLER and filler["status"] == "completed"
        assert answer["content"][0]["transcript"] == ScriptedLLM.reply
        audio = [(i, e["item_id"]) for i, e in enumerate(evs) if e["type"] == "response.audio.delta"]
        assert audio and audio[0][1] == filler["id"]
        last_filler = max(i for i, iid in audio if iid == filler["id"])
        first_answer = min(i for i, iid in audio if iid == answer["id"])
        assert last_filler < first_answer  # one voice at a time: the filler, then the answer
        # its own output item, before the answer's; transcripts show it
        added = [e for e in evs if e["type"] == "response.output_item.added"]
        assert {e["item"]["id"]: e["output_index"] for e in added} == {filler["id"]: 0, answer["id"]: 1}
        assert FILLER in ScriptedTTS.calls
        # the LLM does not see the filler on the next turn
        ScriptedLLM.token_delay = 0.0
        await c.send({"type": "response.create"})
        await c.until("response.done")
        said = [m["content"] for m in ScriptedLLM.calls[-1].messages if m["role"] == "assistant"]
        assert said == [ScriptedLLM.reply]
    finally:
        await c.close()


async def test_no_filler_when_the_answer_is_on_time(server: ServerThread) -> None:
    c = await session(server, interim_response={**STATIC, "latency_threshold_ms": 2000})
    try:
        await c.send({"type": "response.create"})
        evs = await c.until("response.done")
        assert len(evs[-1]["response"]["output"]) == 1
        assert FILLER not in ScriptedTTS.calls
    finally:
        await c.close()


async def test_response_create_sets_its_own_interim_response(server: ServerThread) -> None:
    late_answer()
    c = await session(server)
    try:
        await c.send({"type": "response.create", "response": {"interim-response": {
            "type": "static-interim-response", "texts": [FILLER], "latency_threshold_ms": 100}}})
        evs = await c.until("response.done")
        assert evs[-1]["response"]["output"][0]["content"][0]["transcript"] == FILLER
        # the session's setting (none) is unchanged
        await c.send({"type": "response.create"})
        evs = await c.until("response.done")
        assert len(evs[-1]["response"]["output"]) == 1
    finally:
        await c.close()


async def test_tool_trigger_speaks_while_the_call_is_pending(server: ServerThread) -> None:
    ScriptedLLM.tool_call = ScriptedToolCall("get_weather", {"city": "Paris"}, when="weather")
    c = await session(server, tools=[TOOL], interim_response={**STATIC, "triggers": ["tool"]})
    try:
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]}})
        await c.send({"type": "response.create"})
        evs = await c.until("response.done")
        out = evs[-1]["response"]["output"]
        kinds = sorted(o["type"] for o in out)
        assert kinds == ["function_call", "message"], out
        msg = next(o for o in out if o["type"] == "message")
        assert msg["content"][0]["transcript"] == FILLER  # spoken in full: nothing cuts a tool wait
        assert "response.audio.delta" in types(evs)
    finally:
        await c.close()


async def test_llm_filler_is_written_by_the_llm_engine(server: ServerThread) -> None:
    late_answer()
    cfg = {"type": "llm_interim_response", "latency_threshold_ms": 100, "max_completion_tokens": 3,
           "instructions": "Say a short filler."}
    c = await session(server, interim_response=cfg)
    try:
        await c.send({"type": "response.create"})
        evs = await c.until("response.done")
        filler, answer = evs[-1]["response"]["output"]
        req = next(r for r in ScriptedLLM.calls if r.messages[0]["content"] == "Say a short filler.")
        assert req.max_tokens == 3 and not req.tools
        # the stand-in LLM answers every request with its reply: the filler is its first 3 tokens
        assert filler["content"][0]["transcript"] == "Paris is the"
        assert answer["content"][0]["transcript"] == ScriptedLLM.reply
    finally:
        await c.close()


async def test_cancel_cuts_the_filler_like_any_audio(server: ServerThread) -> None:
    ScriptedLLM.reply = "Paris is the capital of France."
    ScriptedLLM.token_delay = 1.0
    long_filler = " ".join(["wait"] * 60) + "."  # 3.6 s of stand-in speech, paced at real time
    c = await session(server, interim_response={**STATIC, "texts": [long_filler], "latency_threshold_ms": 50})
    try:
        await c.send({"type": "response.create"})
        await c.until("response.audio.delta")
        await c.send({"type": "response.cancel"})
        evs = await c.until("response.done")
        done = evs[-1]["response"]
        assert done["status"] == "cancelled"
        filler = done["output"][0]
        assert filler["status"] == "incomplete"
        assert len(filler["content"][0]["transcript"].split()) < 60
        after = [e for e in await c.quiet(0.5) if e["type"] == "response.audio.delta"]
        assert not after
    finally:
        await c.close()


@pytest.mark.parametrize(("cfg", "param"), [
    ({"type": "canned"}, "session.interim_response.type"),
    ({"type": "static_interim_response", "triggers": ["slow"]}, "session.interim_response.triggers"),
    ({"type": "static_interim_response", "latency_threshold_ms": -1}, "session.interim_response.latency_threshold_ms"),
    ({"type": "static_interim_response", "texts": []}, "session.interim_response.texts"),
    ({"type": "static_interim_response", "instructions": "x"}, "session.interim_response.instructions"),
    ({"type": "llm_interim_response", "max_completion_tokens": 0}, "session.interim_response.max_completion_tokens"),
    ("yes", "session.interim_response"),
])
async def test_bad_interim_response_names_its_param(server: ServerThread, cfg: Any, param: str) -> None:
    c = await session(server)
    try:
        await c.send({"type": "session.update", "event_id": "evt_ir", "session": {"interim_response": cfg}})
        err = await c.error()
        assert err["param"] == param and err["event_id"] == "evt_ir", err
        view = await c.update({"interim_response": {"type": "llm-interim-response"}})  # session goes on
        assert view["interim_response"]["type"] == "llm_interim_response"
        assert view["interim_response"]["max_completion_tokens"] == 50
    finally:
        await c.close()


# ------------------------------------------------------------------ a real voice: word boundaries


async def test_filler_ends_at_a_word_boundary_when_the_answer_is_ready(piper_server: ServerThread) -> None:
    ScriptedLLM.reply = "Paris is the capital of France."
    ScriptedLLM.token_delay = 0.15  # the answer's first audio is ready ~1.2 s after the filler began
    words = "Please hold on for a moment while I look into that request of yours right now for you."
    c = await session(piper_server, interim_response={**STATIC, "texts": [words], "latency_threshold_ms": 0},
                      output_audio_timestamp_types=["word"])
    try:
        await c.send({"type": "response.create"})
        evs = await c.until("response.done", timeout=30)
        filler, answer = evs[-1]["response"]["output"]
        spoken = filler["content"][0]["transcript"]
        assert spoken and words.startswith(spoken) and len(spoken) < len(words), spoken  # cut, on a word
        assert answer["content"][0]["transcript"] == ScriptedLLM.reply
        got_ms = sum(len(base64.b64decode(e["delta"])) // 2 for e in evs
                     if e["type"] == "response.audio.delta" and e["item_id"] == filler["id"]) / 24
        # The filler's audio ends where the voice's own word marks (its word timestamps) put the
        # end of the last word it spoke.
        marks = [e for e in evs if e["type"] == "response.audio_timestamp.delta" and e["item_id"] == filler["id"]]
        assert [m["text"] for m in marks] == spoken.split(), (marks, spoken)
        assert abs(got_ms - (marks[-1]["audio_offset_ms"] + marks[-1]["audio_duration_ms"])) <= 2, (got_ms, marks)
    finally:
        await c.close()


# ------------------------------------------------------------------ unmodified clients, WebRTC


async def test_filler_through_the_voicelive_sdk(server: ServerThread) -> None:
    from azure.ai.voicelive.aio import connect
    from azure.ai.voicelive.models import RequestSession, StaticInterimResponseConfig
    from azure.core.credentials import AzureKeyCredential

    late_answer()
    async with connect(endpoint=server.http, credential=AzureKeyCredential("k"), model="gpt-realtime") as conn:
        await conn.session.update(session=RequestSession(turn_detection=None, interim_response=(
            StaticInterimResponseConfig(texts=[FILLER], latency_threshold_ms=150, triggers=["latency"]))))
        await conn.response.create()
        transcripts: dict[str, str] = {}
        async for ev in conn:
            if ev.type == "session.updated":
                echoed = ev.session.interim_response  # the SDK leaves this union a mapping
                assert echoed["texts"] == [FILLER] and echoed["type"] == "static_interim_response"
            elif ev.type == "response.audio_transcript.done":
                transcripts[ev.item_id] = ev.transcript
            elif ev.type == "response.done":
                output = [o.id for o in ev.response.output]
                break
    assert [transcripts[i] for i in output] == [FILLER, ScriptedLLM.reply]


async def test_filler_over_webrtc_is_one_stretch_of_agent_audio(server: ServerThread) -> None:
    from rtcclient import RtcClient

    late_answer()
    c = RtcClient(server.http, door="voicelive")
    try:
        await c.start(session={"turn_detection": None, "interim_response": STATIC})
        await c.send_ws({"type": "response.create"})
        done = (await c.wait_for("response.done", timeout=15))["response"]
        await c.wait_for("output_audio_buffer.stopped", timeout=10)
        filler, answer = done["output"]
        assert filler["content"][0]["transcript"] == FILLER
        assert answer["content"][0]["transcript"] == ScriptedLLM.reply
        # one started/stopped pair for the response: the filler and the answer play as one
        assert len(c.find("output_audio_buffer.started")) == len(c.find("output_audio_buffer.stopped")) == 1
        words = len(FILLER.split()) + len(ScriptedLLM.reply.split())
        heard_ms = len(c.loud_frames()) * 20
        assert heard_ms >= words * ScriptedTTS.MS_PER_WORD - 100, heard_ms  # both were heard, in full
    finally:
        await c.close()


async def test_a_filler_played_in_full_is_its_text_word_for_word(piper_server: ServerThread) -> None:
    """With a real voice the words come from the voice's marks, which drop punctuation; the
    transcript of a filler played to its end is still the client's text."""
    ScriptedLLM.reply = "Fine."
    ScriptedLLM.token_delay = 2.5  # far later than the filler
    c = await session(piper_server, interim_response={**STATIC, "texts": ["One moment, please."],
                                                      "latency_threshold_ms": 0})
    try:
        await c.send({"type": "response.create"})
        evs = await c.until("response.done", timeout=30)
        filler = evs[-1]["response"]["output"][0]
        assert filler["content"][0]["transcript"] == "One moment, please."
        deltas = "".join(e["delta"] for e in evs if e["type"] == "response.audio_transcript.delta"
                         and e["item_id"] == filler["id"])
        assert deltas == "One moment, please."
    finally:
        await c.close()
