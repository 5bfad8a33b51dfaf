"""livevox as an engine server: the `openai` SDK's own chat.completions, audio.transcriptions and
audio.speech calls against `--role engine` endpoints backed by the embedded models; error shapes
and status codes; roles; a client going away closes the engine's upstream stream."""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio
import websockets
from openai import AsyncOpenAI

from engine_standin import EngineStandIn
from livevox.engines.base import SynthesisOptions
from livevox.engines.scripted import ScriptedLLM, reset_scripted
from livevox.engines.voices import EngineVoice
from server_harness import ServerThread, embedded_settings, scripted_settings

FIXTURES = Path(__file__).parent / "fixtures"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def engine() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(role="engine", api_keys=["k"])).start(timeout=300)
    yield srv
    srv.stop()


def sdk(srv: ServerThread, key: str = "k") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=srv.http + "/v1", max_retries=0, timeout=60)


def wav24k(pcm: bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm)
    return buf.getvalue()


async def test_models(engine: ServerThread) -> None:
    models = await sdk(engine).models.list()
    stages = {m.model_extra["livevox"]["stage"]: m.model_extra["livevox"]["engine"]  # type: ignore[index]
              for m in models.data}
    assert stages == {"llm": "llamacpp", "stt": "faster-whisper", "tts": "piper"}


async def test_chat_completions_sdk(engine: ServerThread) -> None:
    client = sdk(engine)
    messages: Any = [{"role": "system", "content": "Answer in one short sentence."},
                     {"role": "user", "content": "What is the capital of France?"}]
    r = await client.chat.completions.create(model="anything", messages=messages, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    pieces: list[str] = []
    usage = None
    stream = await client.chat.completions.create(model="anything", messages=messages, max_tokens=24,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(pieces) > 1 and "".join(pieces).strip()  # streamed token by token
    assert usage is not None and usage.completion_tokens > 0


async def test_transcriptions_sdk(engine: ServerThread) -> None:
    client = sdk(engine)
    data = (FIXTURES / "question_capital.wav").read_bytes()
    t = await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", data, "audio/wav"), language="en")
    assert "capital" in t.text.lower() and "france" in t.text.lower(), t.text
    text = await client.audio.transcriptions.create(model="whisper-1", file=("q.wav", data, "audio/wav"),
                                                    response_format="text", prompt="Geography quiz.")
    assert "france" in str(text).lower()


async def test_speech_sdk_streams_pcm(engine: ServerThread) -> None:
    client = sdk(engine)
    text = "Hello there. This is the second sentence of the answer."
    pcm = b""
    async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="pcm") as r:
        assert r.headers["content-type"] == "audio/pcm"
        async for chunk in r.iter_bytes():
            pcm += chunk
    samples = np.frombuffer(pcm, "<i2")
    assert len(samples) > 24000 * 1.5 and np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300
    # It is speech: the engine's own STT hears the words back.
    heard = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav24k(pcm), "audio/wav"))
    assert "second" in heard.text.lower() or "sentence" in heard.text.lower(), heard.text
    # It streams: the first sentence's audio arrives well before the second's.
    arrivals: list[float] = []
    async with httpx.AsyncClient(timeout=60) as http:
        t0 = time.monotonic()
        async with http.stream("POST", engine.http + "/v1/audio/speech", headers={"api-key": "k"},
                               json={"model": "tts-1", "voice": "alloy", "input": text,
                                     "response_format": "pcm"}) as resp:
            assert resp.status_code == 200
            async for _ in resp.aiter_raw():
                arrivals.append(time.monotonic() - t0)
    assert len(arrivals) >= 2 and arrivals[-1] - arrivals[0] > 0.02, arrivals


async def test_speech_speed_wav_and_voice_rate(engine: ServerThread) -> None:
    client = sdk(engine)
    text = "The quick brown fox jumps over the lazy dog."

    async def seconds(speed: float) -> float:
        r = await client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav",
                                             speed=speed)
        with wave.open(io.BytesIO(r.content)) as w:
            assert w.getframerate() == 24000 and w.getnchannels() == 1 and w.getsampwidth() == 2
            return w.getnframes() / 24000

    normal, fast = await seconds(1.0), await seconds(1.5)
    assert fast < normal * 0.8, (normal, fast)

    # A Voice Live `rate` travels as the resolved voice's rate into Piper's length scale.
    async def rate_seconds(rate: float) -> float:
        tts = engine.app.state.livevox.engines.tts
        opts = SynthesisOptions(voice=EngineVoice("en_US-joe-medium", rate))
        chunks = [c async for c in tts.synthesize(text, opts, "test")]
        return sum(len(c) for c in chunks) / tts.sample_rate

    slow_s: float = engine.run_coro(rate_seconds(0.5))
    base_s: float = engine.run_coro(rate_seconds(1.0))
    assert slow_s > base_s * 1.5, (slow_s, base_s)


async def test_error_shapes_and_status(engine: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=engine.http, timeout=30) as http:
        async def err(method: str, path: str, status: int, **kw: Any) -> dict[str, Any]:
            headers = kw.pop("headers", {"Authorization": "Bearer k"})
            r = await http.request(method, path, headers=headers, **kw)
            assert r.status_code == status, (path, r.status_code, r.text)
            body: dict[str, Any] = r.json()["error"]
            assert set(body) == {"message", "type", "param", "code"}, body
            return body

        assert (await err("GET", "/v1/models", 401, headers={}))["code"] == "invalid_api_key"
        assert (await err("GET", "/v1/models", 401, headers={"api-key": "wrong"}))["code"] == "invalid_api_key"
        assert (await err("POST", "/v1/chat/completions", 400, content=b"{nope"))["code"] == "invalid_json"
        assert (await err("POST", "/v1/chat/completions", 400, json={"model": "m"}))["param"] == "messages"
        assert (await err("POST", "/v1/chat/completions", 400,
                          json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}))["param"] \
            == "max_tokens"
        e = await err("POST", "/v1/audio/speech", 400, json={"input": "hi", "voice": "alloy"})  # mp3 default
        assert e["param"] == "response_format" and "pcm" in e["message"]
        e = await err("POST", "/v1/audio/transcriptions", 400, files={"file": ("a.mp3", b"ID3\x04garbage")},
                      data={"model": "whisper-1"})
        assert e["param"] == "file" and "WAV" in e["message"]
        e = await err("POST", "/v1/audio/transcriptions", 400, data={"model": "whisper-1"},
                      files={"other": ("a.txt", b"x")})
        assert e["param"] == "file"
    with pytest.raises(openai.AuthenticationError):
        await sdk(engine, "wrong").models.list()
    with pytest.raises(openai.BadRequestError):
        await sdk(engine).audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="mp3")


# ---------------------------------------------------------------- engine failures, roles, disconnects


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def proxy_engine(standin: EngineStandIn) -> AsyncIterator[ServerThread]:
    """An engine livevox whose own LLM is remote (the stand-in): livevox in front of vLLM, say."""
    settings = scripted_settings(role="engine", llm={"engine": "openai", "openai": {
        "base_url": standin.base_url, "warmup": False, "max_retries": 0, "first_token_timeout": 1.0}})
    srv = await asyncio.to_thread(ServerThread(settings).start)
    yield srv
    await asyncio.to_thread(srv.stop)


async def test_engine_failures_map_to_status_codes(proxy_engine: ServerThread, standin: EngineStandIn) -> None:
    standin.reset()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with httpx.AsyncClient(base_url=proxy_engine.http, timeout=30) as http:
        for mode, status, code in (("http_500", 503, "llm_unavailable"), ("stall", 504, "llm_timeout"),
                                   ("not_sse", 502, "llm_bad_response")):
            standin.llm_mode = mode
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == status, (mode, r.text)
            assert r.json()["error"]["code"] == code
        # Garbage after a good first token: the status line is gone, the stream ends with an error event.
        standin.llm_mode = "garbage"
        r = await http.post("/v1/chat/completions", json=body)
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert r.status_code == 200 and events[1]["choices"][0]["delta"] == {"content": "Hi"}
        assert events[-1]["error"]["code"] == "llm_bad_response" and "[DONE]" not in r.text
        standin.llm_mode = "ok"
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        # Tools pass through two hops: livevox engine server -> stand-in.
        standin.llm_mode = "tools"
        r = await http.post("/v1/chat/completions", json={**body, "stream": False, "tools": [WEATHER]})
        calls = r.json()["choices"][0]["message"]["tool_calls"]
        assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
            [("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_time", {"tz": "UTC"})]
        assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    standin.reset()


async def test_client_going_away_closes_the_upstream_stream(proxy_engine: ServerThread,
                                                            standin: EngineStandIn) -> None:
    standin.reset()
    standin.token_delay = 0.2
    standin.reply = " ".join(["slow"] * 40)
    try:
        async with httpx.AsyncClient(base_url=proxy_engine.http, timeout=30) as http:
            async with http.stream("POST", "/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
                lines = r.aiter_lines()
                got = 0
                async for line in lines:
                    got += line.startswith("data:")
                    if got >= 3:
                        break
            t0 = time.monotonic()
        gone = await standin.first_disconnect(timeout=2.0)
        assert gone is not None, "the upstream engine kept generating for a client that left"
        assert gone - t0 < 0.2 + 0.5
    finally:
        standin.reset()
        standin.reply = EngineStandIn.reply


async def test_scripted_llm_failure_is_a_500(proxy_engine: ServerThread) -> None:
    srv = await asyncio.to_thread(ServerThread(scripted_settings(role="engine")).start)
    try:
        reset_scripted()
        ScriptedLLM.fail_next = True
        async with httpx.AsyncClient(base_url=srv.http, timeout=30) as http:
            r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 500 and r.json()["error"]["code"] == "llm_error"
            assert r.json()["error"]["type"] == "server_error"
    finally:
        reset_scripted()
        await asyncio.to_thread(srv.stop)


def test_roles_serve_only_their_endpoints() -> None:
    eng = ServerThread(scripted_settings(role="engine")).start()
    gw = ServerThread(scripted_settings(role="gateway")).start()
    try:
        async def check() -> None:
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(eng.ws + "/voice-live/realtime?model=x")
            ws = await websockets.connect(gw.ws + "/voice-live/realtime?model=x")
            assert "session.created" in str(await ws.recv())
            await ws.close()

        asyncio.run(check())
        body = {"messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(gw.http + "/v1/chat/completions", json=body).status_code == 404
        assert httpx.post(eng.http + "/v1/chat/completions", json=body).status_code == 200
        for srv in (eng, gw):  # both roles: health, readiness and the voice list
            assert httpx.get(srv.http + "/v1/voices").json()["data"][0]["id"] == "scripted"
            assert httpx.get(srv.http + "/readyz").json()["ready"] is True
        assert httpx.get(eng.http + "/").status_code == 404
    finally:
        eng.stop()
        gw.stop()

