"""Protocol tests over a real server on loopback, with the *scripted stand-in engines*
(energy VAD, canned STT/LLM, tone TTS), so each event sequence is deterministic."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest
import websockets

from livevox.engines.scripted import ScriptedLLM, ScriptedSTT, ScriptedToolCall, ScriptedTTS
from server_harness import ServerThread, scripted_settings
from wsclient import AUDIO_RESPONSE, AUDIO_TURN, RealtimeClient, ordered_subsequence, silence, tone, types

pytestmark = pytest.mark.usefixtures("fresh_scripts")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(limits={"max_outgoing_frame_bytes": 16384,
                                                 "max_frame_bytes": 2 * 1024 * 1024})).start()
    yield srv
    srv.stop()


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[RealtimeClient]:
    c = await RealtimeClient.connect(server.ws)
    yield c
    await c.close()


async def manual(client: RealtimeClient) -> None:
    await client.update({"turn_detection": None})


# ------------------------------------------------------------------ session


async def test_session_created_first_with_full_config(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, first="")
    ev = await c.recv()
    assert ev["type"] == "session.created"
    s = ev["session"]
    assert s["object"] == "realtime.session" and s["id"].startswith("sess_")
    assert s["model"] == "gpt-realtime"
    assert s["input_audio_sampling_rate"] == 24000
    assert s["turn_detection"]["type"] == "server_vad"
    assert s["turn_detection"]["prefix_padding_ms"] == 400  # api-version 2026-07-15 default
    assert s["turn_detection"]["silence_duration_ms"] == 500
    assert s["voice"] and s["modalities"] == ["text", "audio"]
    await c.close()


async def test_session_update_merges_and_rejects_invalid(client: RealtimeClient) -> None:
    s = await client.update({"instructions": "Be brief.", "voice": {"name": "en-US-AvaNeural",
                                                                      "type": "azure-standard"}})
    assert s["instructions"] == "Be brief."
    assert s["voice"]["name"] == "en-US-AvaNeural"
    s = await client.update({"output_audio_format": "pcm16_44100hz"})
    assert s["output_audio_format"] == "pcm16_44100hz" and s["instructions"] == "Be brief."
    # invalid: names the param, nothing of the update is applied
    await client.send({"type": "session.update", "event_id": "ev1",
                       "session": {"instructions": "changed", "turn_detection": {"type": "server_vad",
                                                                                 "threshold": 7}}})
    err = await client.error()
    assert err["param"] == "session.turn_detection.threshold"
    assert err["event_id"] == "ev1" and err["code"] == "invalid_value"
    await client.send({"type": "session.update", "session": {"bogus": 1}})
    err = await client.error()
    assert err["code"] == "unknown_parameter" and err["param"] == "session.bogus"
    s = await client.update({})
    assert s["instructions"] == "Be brief."
    assert s["turn_detection"]["threshold"] == 0.5


async def test_g711_rate_semantic_defaults_and_ec_combinations(client: RealtimeClient) -> None:
    s = await client.update({"input_audio_format": "g711_ulaw"})
    assert s["input_audio_sampling_rate"] == 8000
    await client.send({"type": "session.update",
                       "session": {"turn_detection": {"type": "azure_semantic_vad"}}})
    evs = await client.until("session.updated")
    assert "warning" not in types(evs)
    td = evs[-1]["session"]["turn_detection"]
    assert td["prefix_padding_ms"] == 420 and td["speech_duration_ms"] == 80
    for ec, code in (({"type": "server_echo_cancellation", "channels": 2}, "invalid_ec_channels_requires_client"),
                     ({"type": "server_echo_cancellation", "reference_source": "client", "channels": 1},
                      "invalid_ec_reference_channels")):
        await client.send({"type": "session.update", "session": {"input_audio_echo_cancellation": ec}})
        err = await client.error()
        assert err["code"] == code and err["param"] == "session.input_audio_echo_cancellation.channels"


async def test_agent_name_reported_and_unsupported(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, "/voice-live/realtime?api-version=2026-07-15"
                                     "&agent-name=helper&agent-project-name=p", first="")
    ev = await c.recv()
    assert ev["type"] == "session.created" and ev["session"]["model"] == "helper"
    err = await c.error()
    assert err["code"] == "unsupported_feature"
    s = await c.update({"instructions": "still works"})
    assert s["instructions"] == "still works"
    await c.close()


async def test_avatar_and_hosted_tools_unsupported(client: RealtimeClient) -> None:
    await client.send({"type": "session.update", "session": {"avatar": {"character": "lisa"}}})
    assert (await client.error())["code"] == "unsupported_feature"
    await client.send({"type": "session.update", "session": {"tools": [
        {"type": "file_search", "vector_store_ids": ["vs_1"]}]}})
    err = await client.error()
    assert err["code"] == "unsupported_feature" and err["param"] == "session.tools[0].type"
    await client.send({"type": "session.avatar.connect", "client_sdp": "eA=="})
    assert (await client.error())["code"] == "unsupported_feature"


# ------------------------------------------------------------------ turns


async def test_server_vad_turn_canonical_sequence(client: RealtimeClient) -> None:
    await client.update({"input_audio_transcription": {"model": "whisper-1"}})
    await client.append(np.concatenate([silence(0.3), tone(1.0), silence(1.0)]))
    evs = await client.until("response.done")
    seq = types(evs)
    assert ordered_subsequence(seq, AUDIO_TURN + AUDIO_RESPONSE), seq
    started = next(e for e in evs if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in evs if e["type"] == "input_audio_buffer.speech_stopped")
    # speech starts at 300 ms; the VAD confirms it after speech_duration_ms; prefix padding 400 ms
    assert started["audio_start_ms"] == 0
    assert 1300 + 500 <= stopped["audio_end_ms"] <= 1300 + 500 + 100
    assert started["item_id"] == stopped["item_id"]
    assert "conversation.item.input_audio_transcription.completed" in seq
    done = evs[-1]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["output_tokens"] > 0 and done["usage"]["total_tokens"] > 0
    assert done["output"][0]["content"][0]["transcript"] == ScriptedLLM.reply
    # transcript deltas and audio deltas interleave (one clause, then its audio)
    deltas = [t for t in seq if t in ("response.audio_transcript.delta", "response.audio.delta")]
    assert deltas.index("response.audio.delta") < len(deltas) - 1 - deltas[::-1].index(
        "response.audio_transcript.delta")


async def test_manual_turn(client: RealtimeClient) -> None:
    await manual(client)
    await client.append(tone(0.5))
    assert await client.quiet(0.3) == []  # append is silent
    await client.send({"type": "input_audio_buffer.commit"})
    evs = await client.until("conversation.item.created")
    assert types(evs)[-2:] == ["input_audio_buffer.committed", "conversation.item.created"]
    assert "response.created" not in types(await client.quiet(0.3))
    await client.send({"type": "response.create"})
    evs = await client.until("response.done")
    assert ordered_subsequence(types(evs), AUDIO_RESPONSE)
    # the LLM saw the transcribed user turn
    assert ScriptedLLM.calls[-1].messages[-1] == {"role": "user", "content": "scripted transcript"}


async def test_text_only_and_overrides(client: RealtimeClient) -> None:
    await manual(client)
    await client.send({"type": "response.create", "response": {
        "modalities": ["text"], "instructions": "Override.", "metadata": {"k": "v"},
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}})
    evs = await client.until("response.done")
    seq = types(evs)
    assert "response.text.delta" in seq and "response.text.done" in seq
    assert not any(t.startswith("response.audio") for t in seq)
    assert evs[-1]["response"]["metadata"] == {"k": "v"}
    req = ScriptedLLM.calls[-1]
    assert req.messages[0] == {"role": "system", "content": "Override."}
    assert req.messages[-1]["content"] == "hi"


async def test_out_of_band_response_leaves_conversation_alone(client: RealtimeClient) -> None:
    await manual(client)
    await client.send({"type": "response.create", "response": {"conversation": "none", "modalities": ["text"]}})
    evs = await client.until("response.done")
    assert "conversation.item.created" not in types(evs)
    assert evs[-1]["response"]["conversation_id"] is None
    await client.send({"type": "conversation.item.retrieve", "item_id": evs[-1]["response"]["output"][0]["id"]})
    assert (await client.error())["code"] == "item_not_found"


async def test_max_output_tokens_incomplete(client: RealtimeClient) -> None:
    await manual(client)
    await client.send({"type": "response.create", "response": {"max_output_tokens": 3, "modalities": ["text"]}})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"]["reason"] == "max_output_tokens"


async def test_function_calling_round_trip(client: RealtimeClient) -> None:
    ScriptedLLM.tool_call = ScriptedToolCall("get_weather", {"city": "Paris"}, when="weather")
    ScriptedSTT.script(["what is the weather in Paris"])
    await client.update({"turn_detection": None, "tools": [{
        "type": "function", "name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": "auto"})
    await client.append(tone(0.5))
    await client.send({"type": "input_audio_buffer.commit"})
    await client.send({"type": "response.create"})
    evs = await client.until("response.done")
    seq = types(evs)
    assert ordered_subsequence(seq, ["response.created", "response.output_item.added", "conversation.item.created",
                                     "response.function_call_arguments.delta",
                                     "response.function_call_arguments.done", "response.output_item.done",
                                     "response.done"]), seq
    done = next(e for e in evs if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "get_weather" and json.loads(done["arguments"]) == {"city": "Paris"}
    call_item = evs[-1]["response"]["output"][0]
    assert call_item["type"] == "function_call" and call_item["call_id"] == done["call_id"]
    await client.send({"type": "conversation.item.create", "previous_item_id": call_item["id"], "item": {
        "type": "function_call_output", "call_id": done["call_id"], "output": '{"temp_c": 21}'}})
    await client.until("conversation.item.created")
    await client.send({"type": "response.create"})
    evs = await client.until("response.done")
    assert evs[-1]["response"]["status"] == "completed"
    msgs = ScriptedLLM.calls[-1].messages
    assert msgs[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert msgs[-1] == {"role": "tool", "tool_call_id": done["call_id"], "content": '{"temp_c": 21}'}


async def test_barge_in_cancels_and_auto_truncates(client: RealtimeClient) -> None:
    ScriptedLLM.token_delay = 0.15
    ScriptedLLM.reply = "one two three four five six seven eight nine ten. " * 3
    await client.update({"turn_detection": {"type": "server_vad", "auto_truncate": True,
                                            "silence_duration_ms": 300}})
    await client.append(np.concatenate([tone(0.6), silence(0.5)]))
    evs = await client.until("response.audio.delta", timeout=20)
    item_id = next(e for e in evs if e["type"] == "response.output_item.added")["item"]["id"]
    await client.append(tone(0.6))  # the user speaks again while the answer streams
    evs = await client.until("response.done", timeout=20)
    seq = types(evs)
    assert seq.index("input_audio_buffer.speech_started") < seq.index("response.done")
    done = evs[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    rest = await client.until("conversation.item.truncated") if "conversation.item.truncated" not in seq else evs
    trunc = next(e for e in rest if e["type"] == "conversation.item.truncated")
    assert trunc["item_id"] == item_id
    # no audio of the cancelled response after its response.done
    later = await client.quiet(0.5)
    assert not any(e.get("response_id") == done["id"] and e["type"] == "response.audio.delta" for e in later)


async def test_truncate_retrieve_delete(client: RealtimeClient) -> None:
    await manual(client)
    await client.send({"type": "response.create"})
    evs = await client.until("response.done")
    item = evs[-1]["response"]["output"][0]
    await client.send({"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0,
                       "audio_end_ms": 100})
    ev = (await client.until("conversation.item.truncated"))[-1]
    assert ev["audio_end_ms"] == 100
    await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    got = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert len(got["content"][0]["transcript"]) < len(ScriptedLLM.reply)
    audio = base64.b64decode(got["content"][0]["audio"])
    assert len(audio) == 100 * 24 * 2
    await client.send({"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0,
                       "audio_end_ms": 99999})
    assert (await client.error())["param"] == "audio_end_ms"
    await client.send({"type": "conversation.item.delete", "item_id": item["id"]})
    assert (await client.until("conversation.item.deleted"))[-1]["item_id"] == item["id"]
    await client.send({"type": "conversation.item.delete", "item_id": item["id"], "event_id": "d2"})
    err = await client.error()
    assert err["code"] == "item_not_found" and err["event_id"] == "d2"


async def test_item_ordering_with_previous_item_id(client: RealtimeClient) -> None:
    def msg(text: str, iid: str) -> dict[str, object]:
        return {"id": iid, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}

    await manual(client)
    await client.send({"type": "conversation.item.create", "item": msg("first", "item_a")})
    await client.send({"type": "conversation.item.create", "item": msg("third", "item_c")})
    await client.send({"type": "conversation.item.create", "previous_item_id": "item_a",
                       "item": msg("second", "item_b")})
    evs = [e for e in await client.quiet(0.3) if e["type"] == "conversation.item.created"]
    assert evs[2]["previous_item_id"] == "item_a"
    await client.send({"type": "conversation.item.create", "previous_item_id": "nope", "item": msg("x", "item_x")})
    assert (await client.error())["param"] == "previous_item_id"
    await client.send({"type": "response.create", "response": {"modalities": ["text"]}})
    await client.until("response.done")
    users = [m["content"] for m in ScriptedLLM.calls[-1].messages if m["role"] == "user"]
    assert users == ["first second third"]


async def test_engine_failure_fails_response_then_recovers(client: RealtimeClient) -> None:
    await manual(client)
    ScriptedLLM.fail_next = True
    await client.send({"type": "response.create"})
    evs = await client.until("response.done")
    done = evs[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"]["code"] == "llm_error"
    await client.send({"type": "response.create"})
    assert (await client.until("response.done"))[-1]["response"]["status"] == "completed"


async def test_stt_failure_gives_failed_event(client: RealtimeClient) -> None:
    await manual(client)
    ScriptedSTT.fail_next = True
    await client.append(tone(0.5))
    await client.send({"type": "input_audio_buffer.commit"})
    evs = await client.until("conversation.item.input_audio_transcription.failed")
    committed = next(e for e in evs if e["type"] == "input_audio_buffer.committed")
    failed = evs[-1]
    assert failed["item_id"] == committed["item_id"], failed
    assert failed["error"]["code"] == "stt_error", failed  # the engine's code, passed through
    assert failed["error"]["message"]


async def test_output_format_g711_and_frame_split(client: RealtimeClient) -> None:
    await manual(client)
    await client.update({"output_audio_format": "g711_alaw"})
    ScriptedLLM.reply = "word " * 200  # long audio -> many split deltas
    await client.send({"type": "response.create"})
    evs = await client.until("response.done", timeout=30)
    deltas = [e for e in evs if e["type"] == "response.audio.delta"]
    total = sum(len(base64.b64decode(e["delta"])) for e in deltas)
    assert total == pytest.approx(200 * 0.06 * 8000, rel=0.05)  # 60 ms/word at 8 kHz, 1 byte/sample
    assert max(len(json.dumps(e)) for e in deltas) < 16384 + 1024


async def test_input_16k_and_ulaw(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    s = await c.update({"input_audio_sampling_rate": 16000})
    assert s["input_audio_sampling_rate"] == 16000
    await c.append(np.concatenate([tone(0.8, 16000), silence(1.0, 16000)]), rate=16000)
    stopped = next(e for e in await c.until("input_audio_buffer.speech_stopped")
                   if e["type"] == "input_audio_buffer.speech_stopped")
    assert 800 + 500 <= stopped["audio_end_ms"] <= 800 + 600
    await c.until("response.done")
    await c.close()
    from livevox.core.audio import encode

    c = await RealtimeClient.connect(server.ws)
    await c.update({"input_audio_format": "g711_ulaw", "turn_detection": None})
    data = encode(tone(0.5, 8000), "g711_ulaw")
    await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()})
    await c.send({"type": "input_audio_buffer.commit"})
    await c.until("input_audio_buffer.committed")
    await c.close()


# ------------------------------------------------------------------ bad input


async def test_bad_input_each_gets_error_and_session_survives(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    await manual(c)
    cases: list[tuple[object, str, str | None]] = [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_event", None),
        ({"type": "no.such.event", "event_id": "e1"}, "unknown_event_type", "type"),
        ({"event_id": "e2"}, "invalid_event", "type"),
        ({"type": "session.update", "event_id": "e3", "session": {"instructions": 5}}, "invalid_value",
         "session.instructions"),
        ({"type": "input_audio_buffer.append", "event_id": "e4", "audio": 123}, "invalid_type", "audio"),
        ({"type": "input_audio_buffer.append", "event_id": "e5", "audio": "@@@not-base64"}, "invalid_base64",
         "audio"),
        ({"type": "input_audio_buffer.append", "event_id": "e6", "audio": base64.b64encode(b"abc").decode()},
         "invalid_audio", "audio"),
        ({"type": "input_audio_buffer.commit", "event_id": "e7"}, "input_audio_buffer_commit_empty", None),
        ({"type": "response.cancel", "event_id": "e8"}, "response_cancel_not_active", None),
        ({"type": "conversation.item.truncate", "event_id": "e9", "item_id": "nope", "content_index": 0,
          "audio_end_ms": 0}, "item_not_found", "item_id"),
        ({"type": "conversation.item.delete", "event_id": "e10", "item_id": 42}, "invalid_type", "item_id"),
        ({"type": "conversation.item.create", "event_id": "e11", "item": "x"}, "invalid_type", "item"),
        ({"type": "response.create", "event_id": "e12", "response": {"modalities": "text"}}, "invalid_value",
         "response.modalities"),
        ("x" * (2 * 1024 * 1024 + 10), "frame_too_large", None),
    ]
    for frame, code, param in cases:
        await c.send(frame if isinstance(frame, str) else json.dumps(frame))
        err = await c.error()
        assert err["code"] == code, (frame if isinstance(frame, dict) else str(frame)[:40], err)
        assert err["param"] == param, err
        assert err["type"] == "invalid_request_error" and err["message"]
        if isinstance(frame, dict) and "event_id" in frame:
            assert err["event_id"] == frame["event_id"]
    # still usable
    s = await c.update({"instructions": "alive"})
    assert s["instructions"] == "alive"
    await c.close()


async def test_response_create_while_active(client: RealtimeClient) -> None:
    await manual(client)
    ScriptedLLM.token_delay = 0.05
    await client.send({"type": "response.create"})
    await client.until("response.created")
    await client.send({"type": "response.create", "event_id": "again"})
    err = await client.error()
    assert err["code"] == "conversation_already_has_active_response" and err["event_id"] == "again"
    await client.send({"type": "response.cancel"})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"


async def test_append_over_buffer_limit() -> None:
    srv = ServerThread(scripted_settings(limits={"max_input_buffer_seconds": 1.0})).start()
    try:
        c = await RealtimeClient.connect(srv.ws)
        await manual(c)
        await c.append(tone(0.9))
        await c.send({"type": "input_audio_buffer.append", "event_id": "big",
                      "audio": base64.b64encode(tone(0.5).tobytes()).decode()})
        err = await c.error()
        assert err["code"] == "input_audio_buffer_full" and err["event_id"] == "big"
        await c.send({"type": "input_audio_buffer.commit"})
        await c.until("input_audio_buffer.committed")
        await c.close()
    finally:
        srv.stop()


async def test_oversized_frame_beyond_transport_limit_closes_cleanly(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await c.send("x" * (5 * 1024 * 1024))  # beyond 2 x max_frame_bytes: the WebSocket layer closes (1009)
        await c.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/healthz")).status_code == 200


# ------------------------------------------------------------------ dialects


async def test_openai_ga_shapes(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, "/v1/realtime?model=gpt-realtime",
                                     headers={"Authorization": "Bearer sk"}, first="")
    s = (await c.recv())["session"]
    assert s["type"] == "realtime" and s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    await c.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                                          "audio": {"input": {"turn_detection": None}}}})
    s = (await c.until("session.updated"))[-1]["session"]
    assert s["output_modalities"] == ["text"] and s["audio"]["input"]["turn_detection"] is None
    await c.send({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm",
                                                                                        "rate": 16000}}}}})
    assert (await c.error())["param"] == "session.audio.input.format.rate"
    await c.send({"type": "response.create"})
    evs = await c.until("response.done")
    assert "response.output_text.delta" in types(evs) and "conversation.item.added" in types(evs)
    assert evs[-1]["response"]["output"][0]["content"][0]["type"] == "output_text"
    await c.close()


async def test_openai_beta_header(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, "/v1/realtime?model=gpt-realtime",
                                     headers={"OpenAI-Beta": "realtime=v1"}, first="")
    s = (await c.recv())["session"]
    assert s["input_audio_format"] == "pcm16" and "audio" not in s
    await c.close()


# ------------------------------------------------------------------ http


async def test_health_ready_metrics(server: ServerThread) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/healthz")).json()["status"] == "ok"
        r = await http.get(server.http + "/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True
        assert set(r.json()["engines"]) == {"vad", "turn", "stt", "llm", "tts"}
        m = (await http.get(server.http + "/metrics")).text
        assert "livevox_turn_stage_seconds_bucket" in m
        assert 'livevox_turn_stage_seconds_count{stage="first_audio_sent"}' in m


async def test_latency_event_opt_in(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, "/voice-live/realtime?model=x&livevox-latency-events=true")
    await c.append(np.concatenate([tone(0.6), silence(1.0)]))
    await c.until("response.done")
    ev = (await c.until("livevox.turn.metrics"))[-1]
    stages = ev["stages_ms"]
    for k in ("eot_decision", "transcript_final", "llm_first_token", "first_clause", "tts_first_audio",
              "first_audio_sent"):
        assert k in stages, stages
    assert stages["first_audio_sent"] >= stages["tts_first_audio"]
    await c.close()
    c = await RealtimeClient.connect(server.ws)  # default: never sent
    await manual(c)
    await c.send({"type": "response.create"})
    await c.until("response.done")
    assert not any(e["type"].startswith("livevox.") for e in await c.quiet(0.3))
    await c.close()


# ------------------------------------------------------------------ turn options and speculation


async def test_speculation_discarded_when_user_goes_on(client: RealtimeClient) -> None:
    # The pause (300 ms) is long enough to start speculative work but shorter than the 500 ms window.
    ScriptedSTT.script(["first half", "first half and the rest"])
    await client.append(np.concatenate([tone(0.6), silence(0.3)]))
    await asyncio.sleep(0.3)  # give the speculative transcription and LLM time to run
    await client.append(np.concatenate([tone(0.6), silence(1.0)]))
    evs = await client.until("response.done")
    evs += await client.quiet(0.3)
    seq = types(evs)
    assert seq.count("input_audio_buffer.speech_started") == 1
    assert seq.count("response.created") == 1 and seq.count("response.done") == 1
    done = [e for e in evs if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [e["transcript"] for e in done] == ["first half and the rest"]
    # the discarded speculative LLM call saw the first half; the answer that was sent saw it all
    assert ScriptedLLM.calls[-1].messages[-1]["content"] == "first half and the rest"
    assert any(c.messages[-1]["content"] == "first half" for c in ScriptedLLM.calls[:-1])


async def test_transcription_covers_the_tail_and_speculation_is_the_committed_one(
        server: ServerThread) -> None:
    # The quiet end of the last word lies after the VAD's end of speech: the speculative
    # transcription waits for stt.tail_ms of it, and the committed turn is transcribed from
    # exactly that audio, so it keeps the speculative result without a second pass.
    tail_ms = server.settings.stt.tail_ms
    assert tail_ms >= 100
    for silence_ms in (600, 1500):
        c = await RealtimeClient.connect(server.ws)
        await c.update({"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}})
        before = len(ScriptedSTT.heard)
        await c.append(np.concatenate([tone(0.6), silence(silence_ms / 1000 + 0.3)]))
        await c.until("response.done")
        heard = list(ScriptedSTT.heard)[before:]
        assert len(heard) == 1, heard  # the speculation was adopted, not redone
        # speech (600 ms, from the session's first sample, so no prefix padding) + the tail,
        # to within one VAD frame; not the whole silence window
        assert abs(heard[0] - (600 + tail_ms) * 16) <= 512, (heard, tail_ms)
        await c.close()


async def test_create_response_false_commits_without_response(client: RealtimeClient) -> None:
    await client.update({"turn_detection": {"type": "server_vad", "create_response": False}})
    await client.append(np.concatenate([tone(0.6), silence(0.8)]))
    await client.until("input_audio_buffer.committed")
    assert "response.created" not in types(await client.quiet(0.5))
    await client.send({"type": "response.create"})
    assert (await client.until("response.done"))[-1]["response"]["status"] == "completed"


async def test_interrupt_response_false_keeps_talking(client: RealtimeClient) -> None:
    ScriptedLLM.token_delay = 0.05
    await client.update({"turn_detection": {"type": "server_vad", "interrupt_response": False,
                                            "silence_duration_ms": 300}})
    await client.append(np.concatenate([tone(0.6), silence(0.5)]))
    await client.until("response.audio.delta")
    await client.append(np.concatenate([tone(0.6), silence(0.5)]))
    evs = await client.until("response.done")
    assert "input_audio_buffer.speech_started" in types(evs)
    assert evs[-1]["response"]["status"] == "completed"


async def test_speculative_answer_keeps_spaces_between_clauses(client: RealtimeClient) -> None:
    await client.append(np.concatenate([tone(0.6), silence(0.3)]))
    await asyncio.sleep(0.3)  # the speculative answer is computed, gated, during the silence
    # the LLM already ran, though the turn has not ended: that call is the speculation
    assert len(ScriptedLLM.calls) == 1, ScriptedLLM.calls
    await client.append(silence(0.7))
    done = (await client.until("response.done"))[-1]["response"]
    assert len(ScriptedLLM.calls) == 1, ScriptedLLM.calls  # the answer sent is the speculative one
    assert done["output"][0]["content"][0]["transcript"] == ScriptedLLM.reply


async def test_first_clause_is_cut_short_for_tts(client: RealtimeClient) -> None:
    # The first clause goes to TTS after 8 words (tts.first_clause_max_words) or at a comma after
    # two; later clauses wait for punctuation. The transcript is the whole answer all the same.
    ScriptedLLM.reply = ("Once upon a time there was a little robot who lived on the moon and dreamed of the "
                         "stars above, and every night it counted them one by one until morning came.")
    await manual(client)
    await client.send({"type": "response.create"})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["output"][0]["content"][0]["transcript"] == ScriptedLLM.reply
    assert ScriptedTTS.calls[:3] == [
        "Once upon a time there was a little",
        "robot who lived on the moon and dreamed of the stars above,",
        "and every night it counted them one by one until morning came.",
    ], ScriptedTTS.calls
    ScriptedTTS.calls.clear()
    ScriptedLLM.reply = "Well, that depends on the day. Mostly sunny."
    await client.send({"type": "response.create"})
    await client.until("response.done")
    assert ScriptedTTS.calls == ["Well, that depends on the day.", "Mostly sunny."], ScriptedTTS.calls


async def test_stage_timings_ignore_a_discarded_speculation(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, "/voice-live/realtime?model=x&livevox-latency-events=true")
    await c.append(np.concatenate([tone(1.0), silence(0.3)]))
    await asyncio.sleep(0.3)  # speculative work runs, then the user goes on
    await c.append(np.concatenate([tone(1.0), silence(1.0)]))
    stages = (await c.until("livevox.turn.metrics"))[-1]["stages_ms"]
    assert all(v >= 0 for v in stages.values()), stages
    assert "first_clause" in stages
    await c.close()
