"""`input_audio_buffer.append` / `commit` / `clear`, audio from any transport, and committing a turn:
its user item, its transcription, and the response it starts."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ...core import audio as audio_codec
from ...core.audio import SESSION_RATE
from ...core.errors import ProtocolError
from ...engines.base import EngineError
from ..conversation import ConversationItem
from ..filler import BACKCHANNEL_PROMPT
from ..metrics import TurnTimings
from ..response_request import response_params
from ..transcription_options import transcribe_options
from ..turn_taking import Speculation, discard
from .base import SessionParts


class InputAudioEvents(SessionParts):
    async def _on_append(self, event: dict[str, Any]) -> None:
        if not self.transport.audio_in_events:
            raise ProtocolError("unsupported_event", "This is a WebRTC call: the microphone audio is the RTP "
                                "track, so input_audio_buffer.append is not accepted.", param="type")
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("invalid_type", "'audio' must be a base64 string.", param="audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_base64", "'audio' is not valid base64.", param="audio") from None
        codec = self.config["input_audio_format"]
        samples = audio_codec.decode(data, codec)
        # A WAV header at the start of an append (SDK tests send whole files) is stripped.
        if codec == "pcm16" and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            samples = _strip_wav(data)
        await self.feed_audio(samples)

    async def feed_audio(self, samples: npt.NDArray[np.int16], rate: int | None = None) -> None:
        """Audio from any transport, at the session's input rate (or `rate`)."""
        self._last_activity = time.monotonic()
        pcm = await self.audio.clean(samples, rate)
        if pcm.size == 0:
            return
        detecting = self.config["turn_detection"] is not None
        start = self.audio.append(pcm, bounded=not detecting)
        if detecting:
            await self.turns.heard(pcm, start)

    async def commit_turn(self, item_id: str, spec: Speculation | None, timings: TurnTimings,
                          stt_end: int) -> None:
        await self._commit(item_id, spec=spec, timings=timings, from_vad=True, stt_end=stt_end)

    async def commit_idle(self, item_id: str) -> None:
        """`turn_detection.idle_timeout_ms` fired: the silence so far is the user's turn."""
        await self.turns.drop_speculation()
        await self._commit(item_id, spec=None, timings=TurnTimings(), from_vad=True, allow_short=True)

    async def _on_commit(self, event: dict[str, Any]) -> None:
        item_id, timings = await self.turns.manual_commit()
        await self._commit(item_id, spec=None, timings=timings, from_vad=False)

    async def _commit(self, item_id: str, *, spec: Speculation | None, timings: TurnTimings,
                      from_vad: bool, stt_end: int | None = None, allow_short: bool = False) -> None:
        start = self.audio.start
        audio = self.audio.take(start)
        # Transcribed: the speech and its tail, not the rest of the silence window (a VAD turn:
        # what its speculation heard; a manual commit: up to where its sound ended + the tail).
        stt_audio = self.audio.take(start, stt_end)
        stt_audio = stt_audio[: self.turns.stt_cut(stt_audio)]
        if spec is not None and spec.heard != (start, stt_audio.size):
            await discard(spec)
            spec = None
        if audio.size < SESSION_RATE // 10 and not allow_short:
            await discard(spec)
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                f"audio, but buffer only has {audio.size * 1000 / SESSION_RATE:.2f}ms of audio.")
        self.audio.clear()
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        loop = asyncio.get_running_loop()
        entry = ConversationItem(item, transcript=loop.create_future(), input_audio=audio)
        prev = self.conversation.insert(entry)
        await self.emit({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})
        await self.emit({"type": "conversation.item.created", "previous_item_id": prev, "item": dict(item)})
        await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": dict(item)})
        if spec is not None:
            stt = spec.stt
        else:
            with timings.recording():  # the STT job is the turn's
                stt = asyncio.ensure_future(self.turns.transcription(start, stt_audio))
        if stt.done():  # speculative transcription finished in the silence window: report it first
            await self._finish_transcription(entry, stt, timings)
        else:
            self._spawn(self._finish_transcription(entry, stt, timings))
        td = self.config["turn_detection"] or {}
        if not from_vad or not td.get("create_response", True):
            if spec is not None and spec.response is not None:
                await spec.response.discard()
            return
        if self.response is not None and self.response.active:
            if spec is not None and spec.response is not None:
                await spec.response.discard()
            return  # interrupt_response false: the current answer goes on; no second response
        if spec is not None and spec.response is not None:
            run = spec.response
            run.timings.adopt(timings)  # end of speech and decision, and the STT job, from the turn
            self.response = run
            await run.open_gate()
            self._watch_response(run)
        else:
            await self._start_response(response_params(self.config, {}), None, timings)

    async def transcribe_text(self, audio: npt.NDArray[np.int16], *, over_answer: bool = False,
                              background: bool = False) -> str:
        opts = transcribe_options(self.config.get("input_audio_transcription"), self.settings.stt.language)
        if background:
            opts = replace(opts, background=True)
        if over_answer:  # a short sound while the agent talks: no sampled retry; the client's prompt wins
            opts = replace(opts, prompt=opts.prompt or BACKCHANNEL_PROMPT, greedy=True)
        pieces = []
        async for piece in self.engines.stt.transcribe(audio_codec.to_float(audio), opts, self.id):
            pieces.append(piece)
        return "".join(pieces).strip()

    def _transcription_events(self) -> bool:
        return self.dialect.transcribes_by_default or self.config.get("input_audio_transcription") is not None

    async def _finish_transcription(self, entry: ConversationItem, stt: asyncio.Future[str],
                                    timings: TurnTimings) -> None:
        part = entry.item["content"][0]
        try:
            text = await stt
        except asyncio.CancelledError:
            if entry.transcript is not None and not entry.transcript.done():
                entry.transcript.set_result("")
            raise
        except Exception as exc:
            part["transcript"] = ""
            assert entry.transcript is not None
            entry.transcript.set_result("")
            if self._transcription_events():
                code = exc.code if isinstance(exc, EngineError) else "transcription_failed"
                await self.emit({"type": "conversation.item.input_audio_transcription.failed",
                                 "item_id": entry.id, "content_index": 0,
                                 "error": {"type": "server_error", "code": code, "message": str(exc),
                                           "param": None}})
            return
        timings.mark("transcript_final")
        part["transcript"] = text
        assert entry.transcript is not None
        if not entry.transcript.done():
            entry.transcript.set_result(text)
        if self._transcription_events():
            if text and self.engines.stt.streams:
                await self.emit({"type": "conversation.item.input_audio_transcription.delta",
                                 "item_id": entry.id, "content_index": 0, "delta": text})
            await self.emit({"type": "conversation.item.input_audio_transcription.completed",
                             "item_id": entry.id, "content_index": 0, "transcript": text})

    async def _on_clear(self, event: dict[str, Any]) -> None:
        await self.turns.clear()
        self.audio.clear()
        await self.emit({"type": "input_audio_buffer.cleared"})


def _strip_wav(data: bytes) -> npt.NDArray[np.int16]:
    import io
    import wave

    try:
        with wave.open(io.BytesIO(data)) as w:
            frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.int16)
    except (wave.Error, EOFError):
        return audio_codec.decode(data, "pcm16")

