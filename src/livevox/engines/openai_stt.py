"""Speech-to-text over an OpenAI-compatible `/audio/transcriptions` endpoint (OpenAI, Azure
OpenAI, faster-whisper servers, another livevox with `--role engine`).

The turn's 16 kHz audio is uploaded as a WAV file (multipart, with `model`, `language`,
`prompt`: the session's transcription prompt and phrase list); the answer is one JSON
`{"text": ...}`, so the transcript comes as one piece.
"""

from __future__ import annotations

import io
import json
import logging
import wave
from collections.abc import AsyncIterator

import numpy as np

from ..core.audio import SESSION_RATE, Float32Array
from ..engine_settings import OpenAISTTSettings
from .base import EngineError, TranscribeOptions
from .openai_http import Deadlines, OpenAIEndpoint, OpenAIEngine

log = logging.getLogger(__name__)


def wav_bytes(audio: Float32Array, rate: int = SESSION_RATE) -> bytes:
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def iso_language(language: str | None) -> str | None:
    """"en-US" -> "en" (the transcription API takes ISO-639-1)."""
    if not language:
        return None
    return language.split(",")[0].strip().split("-")[0].lower() or None


class OpenAISTT(OpenAIEngine):
    name = "openai-stt"
    streams = False

    def __init__(self, settings: OpenAISTTSettings, *, language: str | None = None) -> None:
        self.settings = settings
        self.language = settings.language or language
        self.endpoint = OpenAIEndpoint("stt", settings, "audio/transcriptions")

    @property
    def model_file(self) -> str:
        return f"{self.settings.deployment or self.settings.model} @ {self.endpoint.where}"

    async def warmup(self) -> None:
        if not self.settings.warmup:
            return
        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(SESSION_RATE // 2) * 0.01).astype(np.float32)
        async for _ in self.transcribe(audio, TranscribeOptions(), "_warmup"):
            pass

    async def transcribe(
        self, audio: Float32Array, options: TranscribeOptions, session_id: str
    ) -> AsyncIterator[str]:
        if len(audio) == 0:
            return
        try:
            text = await self._transcribe(audio, options)
        except EngineError as exc:
            self.endpoint.health.failure(exc)
            raise
        self.endpoint.health.success()
        if text:
            yield text

    async def _transcribe(self, audio: Float32Array, options: TranscribeOptions) -> str:
        s = self.settings
        ep = self.endpoint
        form: dict[str, str] = {"response_format": "json"}
        if s.model:
            form["model"] = s.model
        # A comma list of candidates: the endpoint takes one code, so it detects the language itself.
        language = None if options.languages else iso_language(options.language or self.language)
        if language:
            form["language"] = language
        prompt = options.hint_text() or s.prompt
        if prompt:
            form["prompt"] = prompt
        files = {"file": ("audio.wav", wav_bytes(audio), "audio/wav")}
        deadlines = Deadlines("stt", s)
        async with ep.request(deadlines, data=form, files=files) as response:
            chunks: list[bytes] = []
            it = response.aiter_bytes()
            while True:
                try:
                    chunks.append(await ep.read(deadlines, it))
                except StopAsyncIteration:
                    break
                deadlines.got_first = True
            raw = b"".join(chunks)
            ctype = response.headers.get("content-type", "")
        return self._text(raw, ctype)

    def _text(self, raw: bytes, ctype: str) -> str:
        if ctype.startswith("text/plain"):
            return raw.decode("utf-8", "replace").strip()
        try:
            data = json.loads(raw)
        except ValueError:
            raise EngineError("stt", "stt_bad_response", f"malformed answer from {self.endpoint.where}: "
                              f"not JSON: {raw[:80]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise EngineError("stt", "stt_bad_response", f"malformed answer from {self.endpoint.where}: "
                              f"no 'text' string in {raw[:80]!r}")
        text: str = data["text"]
        return text.strip()
