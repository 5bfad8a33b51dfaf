"""Remote engines: a gateway livevox whose STT, LLM and TTS are OpenAI-compatible HTTP clients.

- A gateway and an engine livevox (embedded models) on loopback hold a full spoken turn through
  the azure-ai-voicelive SDK, every model stage remote.
- Function calling end to end: gateway -> OpenAI-compatible client -> engine livevox whose LLM is
  the scripted stand-in making a tool call.
- Fault injection: an engine livevox killed mid-response (a real process, SIGKILL), and a
  stand-in HTTP engine (tests/engine_standin.py) that stalls, drops, answers garbage or errors.
  Each failure ends the response `failed` with the stage's code; the next turn works.
- The client pieces: Azure form, secrets from the environment, retries only before the first
  token, tool-call delta assembly, closing the HTTP stream on cancel, fallback chains, start-up
  failures that name the engine and exit non-zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from engine_standin import EngineStandIn
from livevox.engine_settings import OpenAILLMSettings, SecretMissing
from livevox.engines.base import ChatRequest, EngineError, Finish, TextDelta, ToolCallDelta
from livevox.engines.openai_llm import OpenAILLM
from livevox.engines.registry import Engines, build_engines
from livevox.engines.scripted import ScriptedLLM, ScriptedToolCall, reset_scripted
from livevox.settings import load_settings
from server_harness import ServerThread, embedded_settings, free_port, scripted_settings
from support_audio import fixture
from support_sdk import check_turn, voicelive_sdk_turn
from wsclient import RealtimeClient, tone, types

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME_TOOL = {"type": "function", "name": "get_time", "description": "Time in a zone",
             "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}


def remote(base_url: str, **kw: Any) -> dict[str, Any]:
    return {"engine": "openai", "openai": {"base_url": base_url, **kw}}


async def text_turn(c: RealtimeClient, text: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    await c.send({"type": "response.create"})
    return await c.until("response.done", timeout)


def failure(evs: list[dict[str, Any]]) -> tuple[str, str]:
    """(code, message) of a failed response; also checks the `error` event that precedes it."""
    done = evs[-1]["response"]
    assert done["status"] == "failed", done
    err = done["status_details"]["error"]
    errors = [e["error"] for e in evs if e["type"] == "error"]
    assert errors and errors[-1]["code"] == err["code"], evs
    return err["code"], err["message"]


def readyz(srv: ServerThread) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(srv.http + "/readyz", timeout=5).json()
    return body


# ================================================================ every stage remote, real models


@pytest.fixture(scope="module")
def engine_server() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(role="engine", api_keys=["engine-key"])).start(timeout=300)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gateway(engine_server: ServerThread) -> Iterator[ServerThread]:
    url = engine_server.http + "/v1"
    settings = load_settings(None, port=free_port(), role="gateway", api_keys=["gw-key"],
                             stt=remote(url, api_key="engine-key", model="whisper-1"),
                             # A short cap keeps SmolLM2's answer (and so the test) short.
                             llm=remote(url, api_key="engine-key", model="smollm2") | {"max_tokens": 60},
                             tts=remote(url, api_key="engine-key", model="tts-1", voice="alloy"))
    srv = ServerThread(settings).start(timeout=120)
    yield srv
    srv.stop()


async def test_voicelive_sdk_spoken_turn_every_stage_remote(engine_server: ServerThread, gateway: ServerThread
                                                            ) -> None:
    before = readyz(gateway)["engines"]
    assert {s: before[s]["engine"] for s in ("stt", "llm", "tts")} == \
        {"stt": "openai-stt", "llm": "openai-llm", "tts": "openai-tts"}
    question = np.concatenate([np.zeros(7200, np.int16), fixture("question_capital.wav", 24000),
                               np.zeros(36000, np.int16)])
    seq, user, transcript, audio, response = await voicelive_sdk_turn(gateway.http, "gw-key", question)
    # SmolLM2 may talk until the gateway's cap (llm.max_tokens): that is "incomplete".
    assert response.status == "completed" or (response.status == "incomplete" and response.status_details.reason
                                              == "max_output_tokens"), response
    # check_turn transcribes the answer with the gateway's STT: the remote engine once more.
    check_turn(gateway, seq, user, audio, transcript)
    after = readyz(gateway)["engines"]
    for stage in ("stt", "llm", "tts"):  # the turn's work went over HTTP, and nothing failed
        assert after[stage]["runtime"]["ok"] > before[stage]["runtime"]["ok"], (stage, after[stage])
        assert after[stage]["runtime"]["failed"] == 0, after[stage]
    engine_ready = readyz(engine_server)
    assert engine_ready["role"] == "engine" and engine_ready["ready"]


# ================================================================ function calling end to end


@pytest.fixture(scope="module")
def scripted_engine() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(role="engine", api_keys=["engine-key"])).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tool_gateway(scripted_engine: ServerThread) -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(role="gateway", llm=remote(scripted_engine.http + "/v1",
                                                                    api_key="engine-key"))).start()
    yield srv
    srv.stop()


async def test_function_calling_through_the_openai_client(tool_gateway: ServerThread) -> None:
    reset_scripted()
    ScriptedLLM.tool_call = ScriptedToolCall("get_weather", {"city": "Paris"}, when="weather")
    try:
        c = await RealtimeClient.connect(tool_gateway.ws)
        await c.update({"tools": [WEATHER_TOOL], "tool_choice": "auto", "modalities": ["text"]})
        evs = await text_turn(c, "What's the weather in Paris?")
        assert evs[-1]["response"]["status"] == "completed", evs[-1]
        deltas = [e["delta"] for e in evs if e["type"] == "response.function_call_arguments.delta"]
        assert len(deltas) == 3  # the stand-in's three pieces crossed HTTP as three deltas
        done = next(e for e in evs if e["type"] == "response.function_call_arguments.done")
        assert done["name"] == "get_weather" and done["call_id"] == "call_scripted_1"
        assert done["arguments"] == '{"city": "Paris"}'
        # The engine server's LLM got the tools, in Chat Completions shape.
        req = ScriptedLLM.calls[-1]
        assert [t["function"]["name"] for t in req.tools] == ["get_weather"]
        await c.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_scripted_1", "output": '{"temp_c": 21}'}})
        await c.send({"type": "response.create"})
        evs = await c.until("response.done")
        assert evs[-1]["response"]["status"] == "completed"
        text = next(e["text"] for e in evs if e["type"] == "response.text.done")
        assert text == ScriptedLLM.reply
        msgs = ScriptedLLM.calls[-1].messages
        assert msgs[-1] == {"role": "tool", "tool_call_id": "call_scripted_1", "content": '{"temp_c": 21}'}
        assert msgs[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        await c.close()
    finally:
        reset_scripted()


# ================================================================ kill the engine server mid-response

LAUNCH = ("import sys; from livevox.engines.scripted import ScriptedLLM; ScriptedLLM.token_delay = 0.1; "
          "ScriptedLLM.reply = ' '.join(['word'] * 15) + '.'; "
          "from livevox.cli import main; sys.exit(main(sys.argv[1:]))")


def start_engine_process(port: int) -> subprocess.Popen[bytes]:
    """A real `livevox serve --role engine` process, scripted stand-in engines, a slow LLM."""
    env = {**os.environ, "LIVEVOX_VAD__ENGINE": "scripted", "LIVEVOX_STT__ENGINE": "scripted",
           "LIVEVOX_LLM__ENGINE": "scripted", "LIVEVOX_TTS__ENGINE": "scripted"}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--role", "engine", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("engine process did not become ready")


async def test_engine_killed_mid_response_then_recovers() -> None:
    port = free_port()
    proc = start_engine_process(port)
    gw: ServerThread | None = None
    try:
        gw = ServerThread(scripted_settings(llm=remote(f"http://127.0.0.1:{port}/v1", first_token_timeout=3.0,
                                                       connect_timeout=1.0))).start()
        c = await RealtimeClient.connect(gw.ws)
        await c.update({"modalities": ["text"]})
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "first question"}]}})
        await c.send({"type": "response.create"})
        evs = await c.until("response.text.delta")  # the answer is streaming
        user_item = next(e["item"]["id"] for e in evs if e["type"] == "conversation.item.created")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        evs = await c.until("response.done", 10)
        assert time.monotonic() - t0 < 5
        code, message = failure(evs)
        assert code == "llm_unavailable" and message.startswith("llm engine failed"), message
        partial = evs[-1]["response"]["output"][0]
        assert partial["status"] == "incomplete"

        # While the engine is down a turn fails fast (connection refused), and does not hang.
        t0 = time.monotonic()
        code, _ = failure(await text_turn(c, "second question", 10))
        assert code == "llm_unavailable" and time.monotonic() - t0 < 5

        proc = start_engine_process(port)  # the engine is back
        evs = await text_turn(c, "third question")
        assert evs[-1]["response"]["status"] == "completed"
        assert "word word" in next(e["text"] for e in evs if e["type"] == "response.text.done")
        # Nothing committed was lost: the user items and the partial answer are still there.
        for item_id in (user_item, partial["id"]):
            await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
            got = (await c.until("conversation.item.retrieved"))[-1]["item"]
            assert got["id"] == item_id
        await c.close()
    finally:
        if gw is not None:
            gw.stop()
        proc.kill()
        proc.wait(10)


# ================================================================ stand-in engine: stall, garbage, errors


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def faulty_gateway(standin: EngineStandIn) -> AsyncIterator[ServerThread]:
    fast = {"first_token_timeout": 1.0, "idle_timeout": 1.0, "total_timeout": 10.0, "connect_timeout": 1.0,
            "max_retries": 1, "warmup": False}
    settings = scripted_settings(stt=remote(standin.base_url, **fast), llm=remote(standin.base_url, **fast),
                                 tts=remote(standin.base_url, **fast))
    srv = await asyncio.to_thread(ServerThread(settings).start)
    yield srv
    await asyncio.to_thread(srv.stop)


@pytest_asyncio.fixture(loop_scope="session")
async def client(faulty_gateway: ServerThread, standin: EngineStandIn) -> AsyncIterator[RealtimeClient]:
    standin.reset()
    c = await RealtimeClient.connect(faulty_gateway.ws)
    await c.update({"turn_detection": None})
    yield c
    await c.close()
    standin.reset()


async def test_llm_stall_past_the_timeout_then_recovery(client: RealtimeClient, standin: EngineStandIn) -> None:
    standin.llm_mode = "stall"
    t0 = time.monotonic()
    code, message = failure(await text_turn(client, "first question", 10))
    assert code == "llm_timeout" and "first_token_timeout=1s" in message, message
    assert time.monotonic() - t0 < 4
    standin.llm_mode = "ok"
    evs = await text_turn(client, "second question")
    assert evs[-1]["response"]["status"] == "completed"
    assert "response.audio.delta" in types(evs)  # TTS over HTTP too
    # The history reached the engine: the failed turn's question is in the next request too.
    chat = [r for r in standin.requests if r.path.endswith("chat/completions")][-1]
    users = " ".join(m["content"] for m in chat.body["messages"] if m["role"] == "user")
    assert "first question" in users and "second question" in users, chat.body


async def test_llm_stall_mid_stream_hits_the_idle_timeout(client: RealtimeClient, standin: EngineStandIn) -> None:
    standin.llm_mode = "stall_after_first"
    code, message = failure(await text_turn(client, "hello", 10))
    assert code == "llm_timeout" and "idle_timeout" in message, message
    standin.llm_mode = "ok"
    assert (await text_turn(client, "again"))[-1]["response"]["status"] == "completed"


@pytest.mark.parametrize("mode", ["garbage", "not_sse", "tool_no_name"])
async def test_llm_malformed_stream(client: RealtimeClient, standin: EngineStandIn, mode: str) -> None:
    standin.llm_mode = mode
    if mode == "tool_no_name":
        await client.update({"tools": [WEATHER_TOOL, TIME_TOOL]})
    code, message = failure(await text_turn(client, "hello", 10))
    assert code == "llm_bad_response" and "malformed answer" in message, message
    standin.llm_mode = "ok"
    assert (await text_turn(client, "again"))[-1]["response"]["status"] == "completed"


async def test_llm_http_errors_and_retries(client: RealtimeClient, standin: EngineStandIn) -> None:
    standin.fail_first = 1  # one 503, then an answer: retried before the first token
    assert (await text_turn(client, "one"))[-1]["response"]["status"] == "completed"
    chats = [r for r in standin.requests if r.path.endswith("chat/completions")]
    assert len(chats) == 2
    standin.requests.clear()
    standin.llm_mode = "http_500"  # retried once (max_retries = 1), then failed
    code, message = failure(await text_turn(client, "two"))
    assert code == "llm_unavailable" and "HTTP 500" in message and "stand-in overloaded" in message
    assert len([r for r in standin.requests if r.path.endswith("chat/completions")]) == 2
    standin.requests.clear()
    standin.llm_mode = "http_401"  # not retried
    code, _ = failure(await text_turn(client, "three"))
    assert code == "llm_auth_failed"
    assert len([r for r in standin.requests if r.path.endswith("chat/completions")]) == 1


async def test_llm_dropped_mid_stream_is_not_retried(client: RealtimeClient, standin: EngineStandIn) -> None:
    standin.llm_mode = "drop"
    code, message = failure(await text_turn(client, "hello"))
    assert code == "llm_unavailable" and "lost mid-stream" in message, message
    assert len([r for r in standin.requests if r.path.endswith("chat/completions")]) == 1


async def test_parallel_tool_call_deltas_are_assembled(client: RealtimeClient, standin: EngineStandIn) -> None:
    standin.llm_mode = "tools"
    await client.update({"tools": [WEATHER_TOOL, TIME_TOOL], "modalities": ["text"]})
    evs = await text_turn(client, "weather and time please")
    assert evs[-1]["response"]["status"] == "completed", evs[-1]
    done = {e["call_id"]: e for e in evs if e["type"] == "response.function_call_arguments.done"}
    assert done["call_a"]["name"] == "get_weather" and done["call_a"]["arguments"] == '{"city": "Paris"}'
    assert done["call_b"]["name"] == "get_time" and done["call_b"]["arguments"] == '{"tz": "UTC"}'
    body = standin.requests[-1].body
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tool_choice"] == "auto" and body["stream"] is True


async def test_stt_faults_fail_the_transcription_and_recover(client: RealtimeClient, standin: EngineStandIn) -> None:
    for mode, code in (("stall", "stt_timeout"), ("garbage", "stt_bad_response"), ("http_503", "stt_unavailable")):
        standin.stt_mode = mode
        await client.append(tone(0.5))
        await client.send({"type": "input_audio_buffer.commit"})
        evs = await client.until("conversation.item.input_audio_transcription.failed", 10)
        assert evs[-1]["error"]["code"] == code, evs[-1]
    standin.stt_mode = "ok"
    await client.append(tone(0.5))
    await client.send({"type": "input_audio_buffer.commit"})
    evs = await client.until("conversation.item.input_audio_transcription.completed")
    assert evs[-1]["transcript"] == "stand-in transcript"
    await client.send({"type": "response.create"})
    assert (await client.until("response.done"))[-1]["response"]["status"] == "completed"


@pytest.mark.parametrize(("mode", "code"), [("json", "tts_bad_response"), ("stall", "tts_timeout"),
                                            ("drop", "tts_unavailable")])
async def test_tts_faults(client: RealtimeClient, standin: EngineStandIn, mode: str, code: str) -> None:
    standin.tts_mode = mode
    got, message = failure(await text_turn(client, "speak", 10))
    assert got == code and message.startswith("tts engine failed"), message
    standin.tts_mode = "ok"
    evs = await text_turn(client, "speak again")
    assert evs[-1]["response"]["status"] == "completed" and "response.audio.delta" in types(evs)


async def test_cancel_closes_the_http_stream(client: RealtimeClient, standin: EngineStandIn) -> None:
    standin.token_delay = 0.2
    standin.reply = " ".join(["slow"] * 40)
    try:
        await client.update({"modalities": ["text"]})
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "talk"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.text.delta")
        t0 = time.monotonic()
        await client.send({"type": "response.cancel"})
        evs = await client.until("response.done")
        assert evs[-1]["response"]["status"] == "cancelled"
        gone = await standin.first_disconnect(timeout=2.0)
        assert gone is not None, "the engine never saw the client go away"
        # The engine notices at its next write: within one token interval of the cancel.
        assert gone - t0 < 0.2 + 0.3
    finally:
        standin.reply = EngineStandIn.reply


# ================================================================ the client pieces


async def test_azure_form_and_secrets_from_the_environment(standin: EngineStandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    standin.reset()
    root = standin.base_url.removesuffix("/v1")
    s = OpenAILLMSettings(base_url=root, api_key_env="LIVEVOX_TEST_AZURE_KEY", api_version="2024-10-21",
                          deployment="gpt-4o-mini", headers={"X-Extra": "yes"},
                          headers_env={"X-Tenant": "LIVEVOX_TEST_TENANT"})
    llm = OpenAILLM(s)
    with pytest.raises(SecretMissing, match="LIVEVOX_TEST_AZURE_KEY"):
        await llm.load()
    monkeypatch.setenv("LIVEVOX_TEST_AZURE_KEY", "azure-secret")
    monkeypatch.setenv("LIVEVOX_TEST_TENANT", "t-42")
    await llm.load()
    try:
        req = ChatRequest(messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object"}}}], tool_choice="required", max_tokens=7)
        events = [ev async for ev in llm.stream(req, "t")]
    finally:
        await llm.close()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == standin.reply
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    seen = standin.requests[-1]
    assert seen.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers["api-key"] == "azure-secret" and "authorization" not in headers
    assert headers["x-extra"] == "yes" and headers["x-tenant"] == "t-42"
    assert seen.body["tool_choice"] == "required" and seen.body["max_tokens"] == 7
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}


async def stream_from(standin: EngineStandIn) -> list[Any]:
    """Every event the OpenAI-compatible client yields for one request to the stand-in."""
    llm = OpenAILLM(OpenAILLMSettings(base_url=standin.base_url, api_key="k", model="m"))
    await llm.load()
    try:
        return [ev async for ev in llm.stream(ChatRequest(messages=[{"role": "user", "content": "x"}]), "t")]
    finally:
        await llm.close()


async def test_tool_call_deltas_are_emitted_as_they_arrive(standin: EngineStandIn) -> None:
    standin.reset()
    standin.llm_mode = "tools"
    events = await stream_from(standin)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.call_id, c.name) for c in calls[:2]] == [(0, "call_a", "get_weather"),
                                                                 (1, "call_b", "get_time")]
    assert len(calls) == 5 and all(c.call_id is None for c in calls[2:])
    assert "".join(c.arguments for c in calls if c.index == 0) == '{"city": "Paris"}'
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
    headers = {k.lower(): v for k, v in standin.requests[-1].headers.items()}
    assert headers["authorization"] == "Bearer k"
    standin.reset()


async def test_prefill_sends_the_prompt_with_one_token_to_generate(standin: EngineStandIn) -> None:
    standin.reset()
    llm = OpenAILLM(OpenAILLMSettings(base_url=standin.base_url, api_key="k", model="m"))
    await llm.load()
    try:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the words so far"}]
        await llm.prefill(ChatRequest(messages=messages, max_tokens=200, temperature=0.3), "t")
        body = standin.requests[-1].body
        assert body["messages"] == messages and body["max_tokens"] == 1 and body["temperature"] == 0.3
        standin.llm_mode = "http_500"
        await llm.prefill(ChatRequest(messages=messages), "t")  # a failure is swallowed
        assert len(standin.requests) >= 2 and llm.endpoint.health.failed == 0
    finally:
        await llm.close()
        standin.reset()


async def test_fallback_chain_at_run_time(standin: EngineStandIn) -> None:
    standin.reset()
    settings = scripted_settings(llm=remote(standin.base_url, max_retries=0, first_token_timeout=1.0)
                                 | {"fallback": [{"engine": "scripted"}]})
    engines = await build_engines(settings)
    try:
        assert engines.llm.name == "openai-llm -> scripted-llm"
        req = ChatRequest(messages=[{"role": "user", "content": "x"}])
        text = "".join([e.text async for e in engines.llm.stream(req, "t") if isinstance(e, TextDelta)])
        assert text == standin.reply  # the primary answers while it is up
        standin.llm_mode = "http_500"  # down before its first token: the scripted stand-in answers
        text = "".join([e.text async for e in engines.llm.stream(req, "t") if isinstance(e, TextDelta)])
        assert text == ScriptedLLM.reply
        standin.llm_mode = "drop"  # failed after its first token: that is the response's failure
        with pytest.raises(EngineError) as info:
            async for _ in engines.llm.stream(req, "t"):
                pass
        assert info.value.code == "llm_unavailable"
        chain = engines.status()["llm"]["chain"]
        assert [m["engine"] for m in chain] == ["openai-llm", "scripted-llm"]
        assert chain[0]["runtime"]["state"] == "failing" and chain[0]["runtime"]["failed"] == 2
    finally:
        await engines.close()
        standin.reset()


async def test_fallback_chain_at_load_time() -> None:
    settings = scripted_settings(llm={"engine": "llamacpp", "gguf_path": "/nonexistent/model.gguf",
                                      "fallback": [{"engine": "scripted"}]})
    engines = await build_engines(settings)
    try:
        st = engines.status()["llm"]
        assert st["state"] == "ready"
        assert st["chain"][0]["engine"] == "llamacpp" and st["chain"][0]["state"] == "failed"
        assert "/nonexistent/model.gguf" in st["chain"][0]["error"]
        assert st["chain"][1] == {"engine": "scripted-llm", "state": "ready"}
    finally:
        await engines.close()
    # A remote primary that is down at start stays in the chain ("degraded"): it may come back.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engines = Engines.create(scripted_settings(llm=remote(dead, connect_timeout=0.5, max_retries=0)
                                               | {"fallback": [{"engine": "scripted"}]}))
    await engines.load()
    try:
        chain = engines.status()["llm"]["chain"]
        assert chain[0]["state"] == "degraded" and "llm_unavailable" in chain[0]["error"]
    finally:
        await engines.close()


@pytest.mark.parametrize("case", ["missing_model", "engine_down"])
def test_start_up_failure_names_the_engine_and_exits_non_zero(case: str) -> None:
    env = {**os.environ, "LIVEVOX_VAD__ENGINE": "scripted", "LIVEVOX_STT__ENGINE": "scripted",
           "LIVEVOX_LLM__ENGINE": "scripted", "LIVEVOX_TTS__ENGINE": "scripted"}
    if case == "missing_model":
        env |= {"LIVEVOX_LLM__ENGINE": "llamacpp", "LIVEVOX_LLM__GGUF_PATH": "/nonexistent/model.gguf"}
        expect = ["stage=llm engine=llamacpp failed to load", "/nonexistent/model.gguf"]
    else:
        # Only with startup.remote_wait_seconds = 0: by default the server waits for its engine
        # (tests/test_readiness.py).
        env |= {"LIVEVOX_TTS__ENGINE": "openai",
                "LIVEVOX_TTS__OPENAI__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
                "LIVEVOX_TTS__OPENAI__MAX_RETRIES": "0", "LIVEVOX_STARTUP__REMOTE_WAIT_SECONDS": "0"}
        expect = ["stage=tts engine=openai-tts failed to load", "tts_unavailable"]
    proc = subprocess.run([sys.executable, "-m", "livevox", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    for text in expect:
        assert text in proc.stderr, proc.stderr


# ================================================================ stream shapes of real servers
# The stand-in replays streams shaped as each server sends them (from their documentation and
# issue trackers); vLLM, Ollama and OpenAI cannot run on this machine (no GPU, no network).


def _c(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def _tc(name: str | None, args: Any, **kw: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": args} if name is None else {"name": name, "arguments": args}
    return {"type": "function", **kw, "function": fn}


USAGE = {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}
WEATHER = ("get_weather", {"city": "Paris"})
TIME = ("get_time", {"tz": "UTC"})
SERVER_STREAMS: dict[str, tuple[list[Any], list[tuple[str, dict[str, Any]]], str, int]] = {
    # OpenAI: id and name first, arguments in fragments, usage in a last chunk with no choices.
    "openai": ([_c({"role": "assistant", "content": None,
                    "tool_calls": [_tc("get_weather", "", index=0, id="call_a")]}),
                _c({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
                _c({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
                _c({}, "tool_calls"), {"id": "chatcmpl-1", "choices": [], "usage": USAGE}, "[DONE]"],
               [WEATHER], "tool_calls", 9),
    # gpt-4o has been seen to finish a tool call with "stop".
    "openai-finish-stop": ([_c({"tool_calls": [_tc("get_weather", '{"city": "Paris"}', index=0, id="call_a")]}),
                            _c({}, "stop"), "[DONE]"], [WEATHER], "tool_calls", 0),
    # vLLM: an empty first content, a name chunk with no arguments key, usage after the finish.
    "vllm": ([_c({"role": "assistant", "content": ""}),
              _c({"tool_calls": [{"id": "chatcmpl-tool-1", "type": "function", "index": 0,
                                  "function": {"name": "get_weather"}}]}),
              _c({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
              _c({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
              _c({"content": ""}, "tool_calls"), {"id": "chatcmpl-1", "choices": [], "usage": USAGE}, "[DONE]"],
             [WEATHER], "tool_calls", 9),
    # Ollama before 0.5: whole calls in one chunk, no index, finish "stop".
    "ollama-no-index": ([_c({"role": "assistant", "content": "", "tool_calls": [
                            _tc("get_weather", '{"city":"Paris"}', id="call_1"),
                            _tc("get_time", '{"tz":"UTC"}', id="call_2")]}),
                         _c({"role": "assistant", "content": ""}, "stop"), "[DONE]"], [WEATHER, TIME], "tool_calls", 0),
    # Arguments as a JSON object rather than a string; every parallel call numbered 0.
    "object-arguments-index-0": ([_c({"tool_calls": [_tc("get_weather", {"city": "Paris"}, index=0, id="call_1")]}),
                                  _c({"tool_calls": [_tc("get_time", {"tz": "UTC"}, index=0, id="call_2")]}),
                                  _c({}, "tool_calls"), "[DONE]"], [WEATHER, TIME], "tool_calls", 0),
    # llama.cpp's server: `timings` on chunks, usage on the finishing chunk itself.
    "llama.cpp": ([_c({"role": "assistant", "content": None}), _c({"content": "Hello"}),
                   _c({"content": " there."}, timings={"predicted_n": 2}),
                   _c({}, "stop", usage=USAGE, timings={"predicted_n": 3}), "[DONE]"], [], "stop", 9),
    # No [DONE] at all, only a finish_reason (some proxies).
    "no-done-marker": ([_c({"content": "Hi."}), _c({}, "stop")], [], "stop", 0),
}


@pytest.mark.parametrize("server", list(SERVER_STREAMS))
async def test_stream_shapes_of_real_servers(standin: EngineStandIn, server: str) -> None:
    replay, calls, finish, out_tokens = SERVER_STREAMS[server]
    standin.reset()
    standin.llm_mode = "replay"
    standin.replay = replay
    try:
        events = await stream_from(standin)
    finally:
        standin.reset()
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    got: dict[int, list[Any]] = {}
    for d in deltas:
        entry = got.setdefault(d.index, [d.name, "", d.call_id])
        entry[0] = entry[0] or d.name
        entry[1] += d.arguments
    assert [(name, json.loads(args)) for name, args, _ in got.values()] == calls, (server, deltas)
    assert all(cid for _, _, cid in got.values()), "every call has an id"
    assert isinstance(events[-1], Finish) and events[-1].reason == finish
    if out_tokens:
        assert events[-1].output_tokens == out_tokens
    if not calls:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) in ("Hello there.", "Hi.")
