"""Full spoken turns through the unmodified azure-ai-voicelive and openai SDKs, against a real
server running the embedded offline pipeline (Silero, Whisper tiny.en, SmolLM2, Piper).

The question is espeak-ng speech (a different voice from the agent's Piper voice)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI

from server_harness import ServerThread, embedded_settings
from support_audio import fixture
from support_sdk import check_turn, chunks, voicelive_sdk_turn


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(api_keys=["test-key"])).start(timeout=300)
    yield srv
    srv.stop()


def assert_finished(response: Any) -> None:
    """Completed, or incomplete only because the demo LLM's sampled answer reached
    max_output_tokens (llm.max_tokens, 256): either way the spoken turn worked."""
    if response.status == "incomplete":
        assert response.status_details.reason == "max_output_tokens", response.status_details
    else:
        assert response.status == "completed", response.status


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    pcm = fixture("question_capital.wav", 24000)
    return np.concatenate([np.zeros(7200, np.int16), pcm, np.zeros(36000, np.int16)])


async def test_voicelive_sdk_spoken_turn(server: ServerThread, question: np.ndarray) -> None:
    seq, user, transcript, audio, response = await voicelive_sdk_turn(server.http, "test-key", question)
    assert_finished(response)
    assert seq[:2] == ["session.created", "session.updated"]
    check_turn(server, seq, user, audio, transcript)


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
async def test_openai_sdk_spoken_turn(server: ServerThread, question: np.ndarray, beta: bool) -> None:
    client = AsyncOpenAI(api_key="test-key", base_url=server.http + "/v1", websocket_base_url=server.ws + "/v1")
    seq: list[str] = []
    user, transcript, audio = "", "", b""
    cm: Any = client.beta.realtime.connect(model="gpt-realtime") if beta else \
        client.realtime.connect(model="gpt-realtime")
    async with cm as conn:
        if beta:
            await conn.session.update(session={"modalities": ["text", "audio"],
                                               "input_audio_transcription": {"model": "whisper-1"},
                                               "turn_detection": {"type": "server_vad"}})
        else:
            await conn.session.update(session={
                "type": "realtime", "output_modalities": ["audio"],
                "audio": {"input": {"transcription": {"model": "whisper-1"},
                                    "turn_detection": {"type": "server_vad"}},
                          "output": {"voice": "alloy"}}})
        for piece in chunks(question):
            await conn.input_audio_buffer.append(audio=piece)
        async for ev in conn:
            t = ev.type
            seq.append(t)
            if t == "conversation.item.input_audio_transcription.completed":
                user = ev.transcript
            elif t in ("response.audio.delta", "response.output_audio.delta"):
                audio += base64.b64decode(ev.delta)
            elif t in ("response.audio_transcript.done", "response.output_audio_transcript.done"):
                transcript = ev.transcript
            elif t == "response.done":
                assert_finished(ev.response)
                break
    if not beta:
        ga = {"response.audio.delta": "response.output_audio.delta",
              "response.audio.done": "response.output_audio.done",
              "response.audio_transcript.delta": "response.output_audio_transcript.delta",
              "response.audio_transcript.done": "response.output_audio_transcript.done",
              "conversation.item.created": "conversation.item.added"}
        seq = [next((k for k, v in ga.items() if v == t), t) for t in seq]
    check_turn(server, seq, user, audio, transcript)


async def test_auth_rejects_missing_and_wrong_keys(server: ServerThread) -> None:
    import httpx
    import websockets

    for headers, query in (({}, ""), ({"api-key": "wrong"}, ""), ({"Authorization": "Bearer wrong"}, "")):
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(server.ws + "/voice-live/realtime?model=x" + query, additional_headers=headers)
        assert info.value.response.status_code == 401
        assert b"invalid_api_key" in info.value.response.body
    for headers, query in (({"api-key": "test-key"}, ""), ({"Authorization": "Bearer test-key"}, ""),
                           ({}, "&api-key=test-key"), ({}, "&Authorization=Bearer%20test-key")):
        ws = await websockets.connect(server.ws + "/voice-live/realtime?model=x" + query,
                                      additional_headers=headers)
        assert '"session.created"' in str(await ws.recv())
        await ws.close()
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/healthz")).status_code == 200


async def test_browser_style_subprotocol_auth(server: ServerThread) -> None:
    # OpenAI's browser client cannot set headers: it offers `realtime`, the key as
    # `openai-insecure-api-key.<key>`, and `openai-beta.realtime-v1` for the beta dialect. The
    # server must select `realtime`, or browsers fail the handshake.
    import json

    import websockets
    from websockets.typing import Subprotocol

    def offer(*protos: str) -> list[Subprotocol]:
        return [Subprotocol(p) for p in protos]

    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(server.ws + "/v1/realtime?model=x",
                                 subprotocols=offer("realtime", "openai-insecure-api-key.wrong"))
    assert info.value.response.status_code == 401
    for beta, session_shape in ((False, "audio"), (True, "input_audio_format")):
        protos = offer("realtime", "openai-insecure-api-key.test-key", *(["openai-beta.realtime-v1"] if beta else []))
        ws = await websockets.connect(server.ws + "/v1/realtime?model=x", subprotocols=protos)
        assert ws.subprotocol == "realtime"
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created" and session_shape in first["session"], first
        await ws.close()
