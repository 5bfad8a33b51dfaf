"""Text-to-speech with Piper (VITS on onnxruntime), by default en_US-joe-medium from a pinned wheel.

Piper synthesises one chunk per sentence; callers get lower latency by sending clauses.
piper-tts is GPL-3.0-or-later: it is imported only when this engine loads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...core.audio import Int16Array
from ...core.executor import stage_executor, stream_job
from ..base import WARMUP_SENTENCE, EngineError, SynthesisOptions, speakable
from ..model_files import piper_voice
from ..voices import effective_speed
from .alignment import ChunkTimeline, Timeline, alignment_session

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_SPEED, MAX_SPEED = 0.25, 4.0



class PiperTTS:
    """One Piper voice, shared by all sessions. `sample_rate` is the voice's own (22050 for joe)."""

    name = "piper"

    def __init__(self, voice_path: str | None = None, *, threads: int = 1, workers: int = 1) -> None:
        self._voice_path = voice_path
        self.threads = threads
        self.workers = max(1, workers)
        self.path: Path | None = None
        self.sample_rate = 22050
        self._voice: Any = None
        self._length_scale = 1.0

    @property
    def model_file(self) -> str:
        return self.path.name if self.path else "voice.onnx"

    @property
    def voice_name(self) -> str:
        # "en_US-joe-medium.onnx" -> "en_US-joe-medium"
        return self.path.stem if self.path else "piper"

    def voices(self) -> list[str]:
        return [self.voice_name]

    def _load(self) -> None:
        import json

        import onnxruntime as ort
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        onnx, config_path = piper_voice(self._voice_path)
        with open(config_path, encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        # Built like PiperVoice.load(onnx, config_path=...), but with an explicit thread count:
        # load() uses onnxruntime's default (every core), which would starve the other stages.
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        # The model is patched in memory to also output phoneme durations (word timestamps, visemes).
        session = alignment_session(onnx, so)
        self._voice = PiperVoice(session=session, config=config)
        self.path = onnx
        self.sample_rate = int(config.sample_rate)
        self._length_scale = float(config.length_scale or 1.0)

    async def load(self) -> None:
        await stage_executor("tts", self.workers).run("_load", self._load)

    async def warmup(self) -> None:
        # A full sentence, not a word: onnxruntime's first run at a longer input is slow (it grows
        # its buffers), and would otherwise land on the first answer's first clause.
        async for _ in self.synthesize(WARMUP_SENTENCE, SynthesisOptions(), "_warmup"):
            pass

    async def close(self) -> None:
        self._voice = None

    def _config(self, options: SynthesisOptions) -> Any:
        from piper.config import SynthesisConfig

        # The session's speed times the client voice's rate (Voice Live `rate`, 0.5-1.5).
        speed = min(MAX_SPEED, max(MIN_SPEED, effective_speed(options)))
        # length_scale is phoneme duration: the voice's default divided by the speed-up.
        return SynthesisConfig(length_scale=self._length_scale / speed)

    def new_timeline(self) -> Timeline:
        """Per-response word/viseme timeline for `synthesize_aligned`."""
        if self._voice is None:
            raise EngineError("tts", "tts_unavailable", "Piper is not loaded")
        return Timeline(self._voice.phonemize)

    def synthesize_aligned(
        self, text: str, options: SynthesisOptions, session_id: str, timeline: Timeline
    ) -> AsyncIterator[tuple[Int16Array, ChunkTimeline]]:
        """Like `synthesize`, with each chunk's word timings and visemes (offsets in the response's audio)."""
        return self._stream(text, options, session_id,
                            lambda chunk, audio: (audio, timeline.add_piper_chunk(chunk, text)), aligned=True)

    def synthesize(self, text: str, options: SynthesisOptions, session_id: str) -> AsyncIterator[Int16Array]:
        return self._stream(text, options, session_id, lambda _chunk, audio: audio, aligned=False)

    async def _stream(
        self, text: str, options: SynthesisOptions, session_id: str, item: Callable[[Any, Int16Array], T],
        *, aligned: bool,
    ) -> AsyncIterator[T]:
        """Piper's chunks (one sentence per chunk, synthesized lazily off the event loop) as `item`s."""
        if not speakable(text):
            return
        voice = self._voice
        if voice is None:
            raise EngineError("tts", "tts_unavailable", "Piper is not loaded")
        config = self._config(options)

        def produce(emit: Callable[[T], None], stop: threading.Event) -> None:
            for chunk in voice.synthesize(text, config, include_alignments=aligned):
                if stop.is_set():
                    return
                audio = np.asarray(chunk.audio_int16_array, dtype=np.int16)
                if audio.size:
                    emit(item(chunk, audio))

        try:
            async for out in stream_job("tts", session_id, produce, options.priority):
                yield out
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("tts", "tts_error", f"Piper failed: {exc}") from exc
