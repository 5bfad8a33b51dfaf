"""The start-up rehearsal: a turn's work at a turn's real sizes, before `/readyz` says ready.

Each engine's own warm-up proves it answers (and primes the LLM's prompt cache with the default
instructions). A first call at a new size is still slow: CTranslate2 and onnxruntime grow their
buffers, native libraries load on first use. So once every stage is ready, the registry runs what
a turn runs: the TTS speaks a question, that speech goes through the paths a session's audio takes
(TTS rate -> 24 kHz answer, 24 kHz -> 48 kHz WebRTC answer, 24 kHz WebSocket and 48 kHz WebRTC
input -> 16 kHz), the VAD and the STT take it as a user utterance, and the per-session models a
client may switch on (Smart Turn, echo cancellation, noise suppression) load and run on it in
20 ms appends. The LLM is not called again: its warm-up request must stay the last one, so the
first turn finds the default instructions in its prompt cache.

The report (`/readyz` "warmup") says what ran, on how much audio, and how long each step took.
Scripted stand-ins (`rehearse = False`) have nothing to warm and are skipped.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from ..core.audio import ITEM_RATE, SESSION_RATE, Int16Array, StreamResampler, to_float
from .base import (
    WARMUP_QUESTION,
    EngineSet,
    RehearsalStep,
    SynthesisOptions,
    TranscribeOptions,
)

log = logging.getLogger(__name__)

RTC_RATE = 48000  # Opus
APPEND_MS = 20  # what clients append per event (and a WebRTC frame)
TAIL_S = 0.15  # quiet after the speech: the STT's input ends `stt.tail_ms` after it


def _through(resampler: StreamResampler, audio: Int16Array, rate: int) -> Int16Array:
    """`audio` (at `rate`) fed to `resampler` in 20 ms pieces, as a session feeds it, then flushed."""
    step = rate * APPEND_MS // 1000
    parts = [resampler.process(audio[i:i + step]) for i in range(0, audio.size, step)]
    parts.append(resampler.flush())
    return np.concatenate(parts).astype(np.int16, copy=False)


async def _collect(chunks: AsyncIterator[Int16Array]) -> Int16Array:
    parts = [np.asarray(c, np.int16) async for c in chunks]
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


async def _timed(report: dict[str, Any], step: str, fn: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    t0 = time.perf_counter()
    try:
        report[step] = await fn()
    except Exception as exc:  # a rehearsal step that fails costs the first turn speed, not service
        report[step] = {"error": f"{type(exc).__name__}: {exc}"}
        log.warning("warm-up %s failed: %s", step, exc)
        return
    report[step]["ms"] = round((time.perf_counter() - t0) * 1000, 1)


async def rehearse(engines: EngineSet, *, session_models: bool,
                   session_steps: tuple[RehearsalStep, ...] = ()) -> dict[str, Any]:
    """Run a turn's work once at its real sizes; `session_models`: also Smart Turn, echo
    cancellation and noise suppression (which sessions load only when a client asks)."""
    report: dict[str, Any] = {}
    speech: dict[str, Int16Array] = {}
    tts = engines.tts

    async def speak() -> dict[str, Any]:
        audio = await _collect(tts.synthesize(WARMUP_QUESTION, SynthesisOptions(), "_warmup"))
        speech["tts"] = audio
        return {"text": WARMUP_QUESTION, "audio_s": round(audio.size / tts.sample_rate, 2)}

    async def resample() -> dict[str, Any]:
        # The answer's paths, then the same speech as a user's input over both transports.
        wire = _through(StreamResampler(tts.sample_rate, ITEM_RATE), speech["tts"], tts.sample_rate)
        wire = np.concatenate([wire, np.zeros(int(TAIL_S * ITEM_RATE), np.int16)])
        rtc = _through(StreamResampler(ITEM_RATE, RTC_RATE), wire, ITEM_RATE)
        speech["input"] = _through(StreamResampler(ITEM_RATE, SESSION_RATE), wire, ITEM_RATE)
        _through(StreamResampler(RTC_RATE, SESSION_RATE), rtc, RTC_RATE)
        paths = [f"{tts.sample_rate}->{ITEM_RATE}", f"{ITEM_RATE}->{RTC_RATE}", f"{ITEM_RATE}->{SESSION_RATE}",
                 f"{RTC_RATE}->{SESSION_RATE}"]
        return {"paths": paths, "append_ms": APPEND_MS}

    async def vad() -> dict[str, Any]:
        stream = engines.vad.stream()
        audio = to_float(speech["input"])
        n = audio.size // stream.frame_samples * stream.frame_samples
        probs = await stream.probabilities(audio[:n], "_warmup")
        return {"frames": len(probs), "frame_samples": stream.frame_samples}

    async def stt() -> dict[str, Any]:
        audio = to_float(speech["input"])
        pieces = [p async for p in engines.stt.transcribe(audio, TranscribeOptions(), "_warmup")]
        return {"audio_s": round(audio.size / SESSION_RATE, 2), "transcript": "".join(pieces)}

    def wanted(engine: object) -> bool:
        return bool(getattr(engine, "rehearse", True))

    if wanted(tts):
        await _timed(report, "tts", speak)
    if "tts" not in speech or speech["tts"].size == 0:
        # No speech to rehearse with: a second of quiet noise stands in (the STT still runs once).
        rng = np.random.default_rng(0)
        speech["tts"] = (rng.standard_normal(tts.sample_rate) * 300).astype(np.int16)
    await _timed(report, "resample", resample)
    if "input" not in speech:
        return report
    if wanted(engines.vad):
        await _timed(report, "vad", vad)
    if wanted(engines.stt):
        await _timed(report, "stt", stt)
    if session_models:
        await _session_models(report, engines, speech["input"], session_steps)
    return report


async def _session_models(report: dict[str, Any], engines: EngineSet, audio: Int16Array,
                          steps: tuple[RehearsalStep, ...]) -> None:
    """The models a session uses only when a client asks: the end-of-turn model, then the steps
    the realtime layer adds (echo cancellation, noise suppression)."""
    if engines.turn.available:  # Smart Turn is warmed at load; this runs it on real speech
        async def smart_turn() -> dict[str, Any]:
            await engines.turn.score(to_float(audio), "_warmup")
            return {"audio_s": round(audio.size / SESSION_RATE, 2)}

        await _timed(report, "smart_turn", smart_turn)
    for name, step in steps:
        await _timed(report, name, functools.partial(step, audio))
