"""Whisper's encoder window (stt.encoder_window_s) on the embedded tiny.en model: a short turn is
encoded in the short window with the same words; a turn longer than the window is encoded in
Whisper's own 30 s and keeps its end. Speech made here with espeak-ng, not the fixtures."""

from __future__ import annotations

import re

import numpy as np
import pytest

from livevox.engines.base import TranscribeOptions
from livevox.engines.whisper import FasterWhisperSTT
from support_audio import espeak, to_float


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


async def transcribe(engine: FasterWhisperSTT, audio: np.ndarray) -> str:
    return "".join([p async for p in engine.transcribe(audio, TranscribeOptions(language="en"), "t")])


@pytest.fixture(scope="module")
async def engines() -> dict[float, FasterWhisperSTT]:
    out = {}
    for window in (30.0, 15.0):
        e = FasterWhisperSTT(encoder_window_s=window)
        await e.load()
        out[window] = e
    return out


async def test_short_window_short_turn(engines: dict[float, FasterWhisperSTT]) -> None:
    audio = to_float(espeak("Please set an alarm for six thirty tomorrow morning.", "en-gb"))
    short, full = await transcribe(engines[15.0], audio), await transcribe(engines[30.0], audio)
    assert {"alarm", "tomorrow", "morning"} <= set(words(short)), short
    assert {"alarm", "tomorrow", "morning"} <= set(words(full)), full


async def test_turn_longer_than_the_window_keeps_its_end(engines: dict[float, FasterWhisperSTT]) -> None:
    text = ("I would like to plan a trip next month with my whole family, we want to visit the "
            "mountains, see a few lakes, and stay somewhere quiet near a small village. At the end "
            "of the trip we will fly home from Geneva on a Sunday evening.")
    audio = to_float(espeak(text, wpm=130))
    assert audio.size / 16000 > 16  # longer than the 15 s window
    got = words(await transcribe(engines[15.0], audio))
    assert "geneva" in got and "sunday" in got, got


async def test_a_transcription_among_other_callers_uses_the_busy_window() -> None:
    """`stt.busy_encoder_window_s`: alone, a turn gets the configured window (30 s); started while
    another session's transcription runs, the busy one (15 s), with the same key words."""
    import asyncio
    import threading

    from held_worker import eventually
    from livevox.core.executor import stage_executor

    engine = FasterWhisperSTT(busy_encoder_window_s=15.0)
    await engine.load()
    try:
        audio = to_float(espeak("What is the weather like in Paris today?", "en-gb"))
        alone = await transcribe(engine, audio)
        assert engine.last_window == 3000 and {"weather", "paris"} <= set(words(alone)), alone
        ex = stage_executor("stt")
        # The worker counts the job above done just after its caller has the result.
        assert await eventually(lambda: ex.others_in_flight("other-session") == 0)
        gate, running = threading.Event(), threading.Event()

        def other_caller() -> None:  # another session's transcription, on the other worker
            running.set()
            gate.wait(30)

        held = asyncio.ensure_future(ex.run("other-session", other_caller))
        assert await asyncio.to_thread(running.wait, 30)
        try:
            assert ex.others_in_flight("t") == 1 and ex.others_in_flight("other-session") == 0
            busy = await transcribe(engine, audio)
        finally:
            gate.set()
            await held
        assert engine.last_window == 1500 and {"weather", "paris"} <= set(words(busy)), busy
        # The worker counts a job done just after its caller has the result.
        assert await eventually(lambda: ex.others_in_flight("t") == 0)
    finally:
        await engine.close()
