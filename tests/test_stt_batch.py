"""STT batching (`stt.max_batch`): several sessions' waiting utterances share one Whisper encoder
call, and each session still gets exactly its own transcript.

On the REAL embedded Whisper tiny.en and the fixture speech (tests/fixtures): through the engine
(batched against the same engine transcribing alone, with different prompts and phrase lists in
one batch), and through the real server with two WebSocket sessions committing together.

The batches are made deterministic, not by timing: the one STT worker is held by a blocking job
while the utterances queue, and released once they all wait (`pending()`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from pydantic import ValidationError

from held_worker import record_batches, while_held
from livevox.core.executor import stage_executor
from livevox.engines.base import TranscribeOptions
from livevox.engines.registry import _one_stt
from livevox.engines.whisper import FasterWhisperSTT
from livevox.settings import STTSettings, load_settings
from server_harness import ServerThread, embedded_settings
from support_audio import fixture, fixture_f32
from wsclient import RealtimeClient

SPEECH = ["question_capital.wav", "question_weather.wav", "question_story.wav", "backchannel_yeah.wav"]
# What tiny.en hears in each (as test_engines.py's KEY_WORDS, in full).
HEARD = {
    "question_capital.wav": "What is the capital of France?",
    "question_weather.wav": "What is the weather like in Paris today?",
}


async def while_stt_is_held(queued: int, start: Callable[[], list[Awaitable[Any]]]) -> list[Any]:
    return (await while_held(stage_executor("stt"), queued, start))[0]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stt() -> AsyncIterator[FasterWhisperSTT]:
    engine = FasterWhisperSTT(max_batch=4)
    await engine.load()
    yield engine
    await engine.close()


async def text(stt: FasterWhisperSTT, name: str, options: TranscribeOptions, session: str) -> str:
    return "".join([t async for t in stt.transcribe(fixture_f32(name), options, session)])


async def alone(stt: FasterWhisperSTT, name: str, options: TranscribeOptions) -> str:
    """Through the engine's ordinary (unbatched, streamed) path."""
    stt.max_batch = 1
    try:
        return await text(stt, name, options, "alone")
    finally:
        stt.max_batch = 4


async def test_a_batch_gives_each_session_the_transcript_it_gets_alone(stt: FasterWhisperSTT) -> None:
    # Two prompt groups share the batch with two utterances of their own prompts.
    options = {
        "question_capital.wav": TranscribeOptions(),
        "question_weather.wav": TranscribeOptions(),
        "question_story.wav": TranscribeOptions(prompt="A bedtime story."),
        "backchannel_yeah.wav": TranscribeOptions(phrases=["Yeah", "Contoso"]),
    }
    expected = [await alone(stt, name, options[name]) for name in SPEECH]
    assert expected[:2] == [HEARD[n] for n in SPEECH[:2]]
    sizes = record_batches(stt)
    try:
        got = await while_stt_is_held(4, lambda: [text(stt, n, options[n], f"s{i}") for i, n in enumerate(SPEECH)])
    finally:
        del stt._batch
    assert sizes == [4]
    assert got == expected


async def test_max_batch_caps_a_batch_and_a_lone_utterance_runs_alone(stt: FasterWhisperSTT) -> None:
    sizes = record_batches(stt)
    try:
        stt.max_batch = 3
        got = await while_stt_is_held(4, lambda: [text(stt, n, TranscribeOptions(), f"s{i}")
                                                  for i, n in enumerate(SPEECH)])
        assert sizes == [3, 1]
        assert got[:2] == [HEARD[n] for n in SPEECH[:2]]
        # Nothing else waiting: a batch of one, at once.
        assert await text(stt, SPEECH[0], TranscribeOptions(), "lone") == HEARD[SPEECH[0]]
        assert sizes == [3, 1, 1]
    finally:
        stt.max_batch = 4
        del stt._batch


async def test_an_utterance_transcribe_would_retry_hotter_is_decoded_alone(stt: FasterWhisperSTT) -> None:
    # Twelve "yeah"s in a row: tiny.en's greedy decode repeats itself past transcribe's
    # compression-ratio threshold, so transcribe retries at higher temperatures (sampling, so
    # its text is not reproducible, alone or batched). In a batch, that one utterance goes
    # through faster-whisper's own generate_segments; its batch mate keeps its greedy result.
    yeahs = np.tile(fixture_f32("backchannel_yeah.wav"), 12)
    model = stt._model
    fallbacks: list[int] = []
    generate_segments = model.generate_segments

    def recording(features: Any, *args: Any) -> Any:
        fallbacks.append(features.shape[-1])
        return generate_segments(features, *args)

    model.generate_segments = recording
    try:
        async def one(audio: np.ndarray, session: str) -> str:
            return "".join([t async for t in stt.transcribe(audio, TranscribeOptions(), session)])

        got = await while_stt_is_held(2, lambda: [one(fixture_f32(SPEECH[0]), "a"), one(yeahs, "b")])
    finally:
        del model.generate_segments
    assert got[0] == HEARD[SPEECH[0]]
    # got[1] is sampled (the retry runs hot), so its words vary run to run, and may be none:
    # only its routing is checked, below (CI once heard "" where this test had always seen "yeah").
    # transcribe_batch asks `transcribe` for each utterance's options (a call on a 3-frame blip
    # that decodes nothing), then the one fallback: the twelve yeahs' features alone
    assert fallbacks == [3, 3, len(yeahs) // 160 + 1]


async def test_a_greedy_utterance_is_never_retried_hotter(stt: FasterWhisperSTT) -> None:
    # Speech over the agent's answer is transcribed greedy (TranscribeOptions.greedy): the twelve
    # yeahs that transcribe would retry at higher temperatures keep their temperature-0 result,
    # alone and in a batch, so the same audio always gives the same words.
    yeahs = np.tile(fixture_f32("backchannel_yeah.wav"), 12)
    model = stt._model
    temperatures: list[tuple[float, ...]] = []
    generate_with_fallback = model.generate_with_fallback

    def recording(encoder_output: Any, prompt: Any, tokenizer: Any, options: Any) -> Any:
        temperatures.append(tuple(options.temperatures))
        return generate_with_fallback(encoder_output, prompt, tokenizer, options)

    model.generate_with_fallback = recording
    greedy = TranscribeOptions(greedy=True)
    try:
        async def one(audio: np.ndarray, options: TranscribeOptions, session: str) -> str:
            return "".join([t async for t in stt.transcribe(audio, options, session)])

        stt.max_batch = 1
        try:
            first = await one(yeahs, greedy, "alone")
            again = await one(yeahs, greedy, "alone")
            await one(yeahs, TranscribeOptions(), "alone")  # the ordinary path may go hotter
        finally:
            stt.max_batch = 4
        batched = await while_stt_is_held(2, lambda: [one(fixture_f32(SPEECH[0]), greedy, "a"),
                                                      one(yeahs, greedy, "b")])
    finally:
        del model.generate_with_fallback
    assert first == again == batched[1]
    assert batched[0] == HEARD[SPEECH[0]]
    assert temperatures[:2] == [(0.0,), (0.0,)]
    assert len(temperatures[2]) > 1  # faster-whisper's fallback temperatures
    assert all(t == (0.0,) for t in temperatures[3:])


# ------------------------------------------------------------------ through the server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(stt={"max_batch": 2}, llm={"engine": "scripted"},
                                         tts={"engine": "scripted"})).start(timeout=300)
    yield srv
    srv.stop()


async def test_two_sessions_ending_together_each_get_their_own_transcript(server: ServerThread) -> None:
    stt = server.app.state.livevox.engines.stt
    assert isinstance(stt, FasterWhisperSTT) and stt.max_batch == 2
    names = SPEECH[:2]
    clients = [await RealtimeClient.connect(server.ws) for _ in names]
    try:
        for c, name in zip(clients, names, strict=True):
            await c.update({"turn_detection": None, "input_audio_transcription": {"model": "whisper-1"}})
            await c.append(fixture(name, 24000))
        sizes = record_batches(stt)

        async def commit(c: RealtimeClient) -> str:
            await c.send({"type": "input_audio_buffer.commit"})
            evs = await c.until("conversation.item.input_audio_transcription.completed", timeout=120)
            return str(evs[-1]["transcript"])

        got = await while_stt_is_held(2, lambda: [commit(c) for c in clients])
        assert sizes == [2]
        assert got == [HEARD[n] for n in names]
    finally:
        for c in clients:
            await c.close()


def test_the_setting_reaches_the_engine_within_its_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEVOX_STT__MAX_BATCH", "3")
    settings = load_settings(None)
    assert settings.stt.max_batch == 3
    engine = _one_stt(settings.stt)
    assert isinstance(engine, FasterWhisperSTT) and engine.max_batch == 3
    assert STTSettings().max_batch == 1  # off by default (docs/benchmarks.md, "STT batching")
    for bad in (0, 33):
        with pytest.raises(ValidationError):
            STTSettings(max_batch=bad)
