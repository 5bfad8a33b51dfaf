"""Text-to-speech over an OpenAI-compatible `/audio/speech` endpoint with `response_format: pcm`
(raw 16-bit little-endian mono, 24 kHz for OpenAI), streamed: audio is yielded as it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ..core.audio import Int16Array
from ..engine_settings import OpenAITTSSettings
from .base import EngineError, SynthesisOptions, speakable
from .openai_http import Deadlines, OpenAIEndpoint, OpenAIEngine
from .voices import effective_speed

log = logging.getLogger(__name__)

#: Yield audio in pieces of at least this many bytes (20 ms at 24 kHz), except the last.
MIN_CHUNK_BYTES = 960



class OpenAITTS(OpenAIEngine):
    name = "openai-tts"

    def __init__(self, settings: OpenAITTSSettings) -> None:
        self.settings = settings
        self.sample_rate = settings.sample_rate
        self.endpoint = OpenAIEndpoint("tts", settings, "audio/speech")

    @property
    def model_file(self) -> str:
        return f"{self.settings.deployment or self.settings.model} @ {self.endpoint.where}"

    def voices(self) -> list[str]:
        # The default voice first: the voice map's fallback is the engine's first voice.
        s = self.settings
        return [s.voice, *(v for v in s.voices if v != s.voice)]

    async def warmup(self) -> None:
        if not self.settings.warmup:
            return
        async for _ in self.synthesize("Hello.", SynthesisOptions(), "_warmup"):
            pass

    def body(self, text: str, options: SynthesisOptions) -> dict[str, Any]:
        s = self.settings
        voice = options.voice if options.voice in s.voices else s.voice
        body: dict[str, Any] = {"input": text, "voice": str(voice), "response_format": "pcm"}
        if s.model:
            body["model"] = s.model
        speed = min(4.0, max(0.25, effective_speed(options)))
        if abs(speed - 1.0) > 1e-6:
            body["speed"] = round(speed, 3)
        return body

    async def synthesize(
        self, text: str, options: SynthesisOptions, session_id: str
    ) -> AsyncIterator[Int16Array]:
        if not speakable(text):
            return
        try:
            async for audio in self._synthesize(text, options):
                yield audio
        except EngineError as exc:
            self.endpoint.health.failure(exc)
            raise
        self.endpoint.health.success()

    def _bad(self, why: str) -> EngineError:
        return EngineError("tts", "tts_bad_response", f"malformed answer from {self.endpoint.where}: {why}")

    async def _synthesize(self, text: str, options: SynthesisOptions) -> AsyncIterator[Int16Array]:
        ep = self.endpoint
        deadlines = Deadlines("tts", self.settings)
        async with ep.request(deadlines, json=self.body(text, options)) as response:
            ctype = response.headers.get("content-type", "").split(";")[0].strip()
            if ctype.startswith(("application/json", "text/")):
                raw = await deadlines.wait(response.aread())
                raise self._bad(f"expected raw PCM audio, got {ctype}: {raw[:80]!r}")
            it = response.aiter_bytes()
            buf = b""
            first = True
            while True:
                try:
                    data = await ep.read(deadlines, it)
                except StopAsyncIteration:
                    break
                if not data:
                    continue
                deadlines.got_first = True
                buf += data
                if first:
                    if len(buf) < 4 or (buf[:4] == b"RIFF" and len(buf) < 64):
                        continue  # wait for enough bytes to tell raw PCM from a WAV header
                    first = False
                    if buf[:4] == b"RIFF":
                        buf = self._strip_wav(buf)
                if len(buf) >= MIN_CHUNK_BYTES:
                    n = len(buf) // 2 * 2
                    yield np.frombuffer(buf[:n], dtype="<i2").astype(np.int16)
                    buf = buf[n:]
            if first and buf[:4] == b"RIFF":
                buf = self._strip_wav(buf)
            if len(buf) >= 2:
                n = len(buf) // 2 * 2
                yield np.frombuffer(buf[:n], dtype="<i2").astype(np.int16)

    def _strip_wav(self, buf: bytes) -> bytes:
        """A server that answered WAV instead of raw PCM: accept it if the format matches."""
        if len(buf) < 44 or buf[8:12] != b"WAVE":
            raise self._bad("expected raw PCM audio, got a RIFF header that is not WAVE")
        channels = int.from_bytes(buf[22:24], "little")
        rate = int.from_bytes(buf[24:28], "little")
        bits = int.from_bytes(buf[34:36], "little")
        if (channels, rate, bits) != (1, self.sample_rate, 16):
            raise self._bad(f"expected raw PCM at {self.sample_rate} Hz, got WAV {rate} Hz, {channels} ch, {bits} bit")
        idx = buf.find(b"data", 12)
        if idx < 0 or idx + 8 > len(buf):
            raise self._bad("WAV answer without a data chunk in its first bytes")
        return buf[idx + 8:]
