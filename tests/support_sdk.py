"""A spoken turn through the unmodified azure-ai-voicelive SDK and its checks, shared by the SDK
tests on the embedded pipeline (test_sdk_embedded.py) and on remote engines (test_remote_engines.py)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import soxr
from azure.ai.voicelive.aio import connect
from azure.ai.voicelive.models import AudioInputTranscriptionOptions, RequestSession, ServerVad
from azure.core.credentials import AzureKeyCredential

from livevox.engines.base import TranscribeOptions
from server_harness import ServerThread
from wsclient import AUDIO_RESPONSE, AUDIO_TURN, ordered_subsequence


def chunks(pcm: np.ndarray, ms: int = 100) -> Iterator[str]:
    step = 24000 * ms // 1000
    for i in range(0, len(pcm), step):
        yield base64.b64encode(pcm[i:i + step].astype("<i2").tobytes()).decode()


def answer_text(server: ServerThread, audio24k: np.ndarray) -> str:
    """Transcribe the agent's answer with the server's own STT engine: is it speech?"""

    async def run() -> str:
        engines = server.app.state.livevox.engines
        pcm16k = soxr.resample(audio24k, 24000, 16000).astype(np.float32) / 32768.0
        parts = [p async for p in engines.stt.transcribe(pcm16k.astype(np.float32),
                                                          TranscribeOptions(language="en"), "test")]
        return "".join(parts).strip()

    text: str = server.run_coro(run())
    return text


def check_turn(server: ServerThread, seq: list[str], user: str, audio: bytes, transcript: str) -> None:
    assert ordered_subsequence(seq, AUDIO_TURN + AUDIO_RESPONSE), seq
    assert "capital" in user.lower() and "france" in user.lower(), user
    pcm = np.frombuffer(audio, dtype="<i2")
    assert pcm.size > 24000 * 0.5, "answer shorter than half a second"
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300, "answer audio is near silent"
    heard = answer_text(server, pcm)
    print(f"user={user!r} agent={transcript!r} heard={heard!r}")
    assert len(heard.split()) >= 2, f"answer audio does not transcribe to speech: {heard!r}"
    assert transcript.strip()


async def voicelive_sdk_turn(http_url: str, key: str, question: np.ndarray
                             ) -> tuple[list[str], str, str, bytes, Any]:
    """One server-VAD spoken turn through the unmodified azure-ai-voicelive SDK: the event types,
    the user's transcript, the agent's transcript and audio, and the final response."""
    seq: list[str] = []
    user, transcript, audio = "", "", b""
    response: Any = None
    async with connect(endpoint=http_url, credential=AzureKeyCredential(key), model="gpt-realtime") as conn:
        await conn.session.update(session=RequestSession(
            instructions="You are a helpful assistant. Answer in one short sentence.",
            turn_detection=ServerVad(threshold=0.5, silence_duration_ms=500),
            input_audio_transcription=AudioInputTranscriptionOptions(model="azure-speech")))
        for piece in chunks(question):
            await conn.input_audio_buffer.append(audio=piece)
        async for ev in conn:
            seq.append(ev.type)
            if ev.type == "conversation.item.input_audio_transcription.completed":
                user = ev.transcript
            elif ev.type == "response.audio.delta":
                audio += ev.delta  # the SDK decodes base64 to bytes
            elif ev.type == "response.audio_transcript.done":
                transcript = ev.transcript
            elif ev.type == "response.done":
                response = ev.response
                break
    return seq, user, transcript, audio, response
