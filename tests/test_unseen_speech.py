"""Speech the tests never heard (issue 9, point 1): the transcript a turn reports is never worse
than the transcript of that turn's committed audio.

The real server with the embedded engines hears voices and prompts of benchmarks/speech_set.py
(espeak-ng en-us at 150 wpm, en-gb+f2 at 130 wpm, Piper joe; new voice-agent prompts, among them
the issue's "What is the capital of France?") and human recordings from Debian's
pocketsphinx-testdata, over the WebSocket in both dialects at real-time pace. For every turn the
reported transcripts (`...input_audio_transcription.completed`) may have no more word errors than
the same server's Whisper engine on the whole committed audio (`conversation.item.retrieve`, then
`POST /v1/audio/transcriptions`), over the set (one phrase's flip of slack: see the test).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import speech_set
import transcripts
from server_harness import ServerThread, embedded_settings

VOICES = ["espeak-en-us-150", "espeak-en-gb+f2-130", "piper-joe"]
PROMPTS = ["capital", "table", "sister", "list"]
HUMAN = {"sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930", "005"}
PATHS = {"voicelive": transcripts.VL_PATH, "openai": transcripts.GA_PATH}
#: Word errors one run-to-run flip of a phrase can add (see the test).
FLIP_SLACK = 5
CONCURRENT = 4  # sessions at once; where a turn is cut is set by the audio clock, not the wall clock


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerThread]:
    """The embedded defaults but one: no busy window. With four sessions at once a turn's
    transcription often starts among others' and gets the 15 s window, while the full-buffer
    reference is transcribed alone with 30 s; each window flips its own words (tiny.en WER on
    benchmarks/speech_set.py's 118 utterances: 9.1 % at 30 s, 10.2 % at 15 s, words flipped both
    ways), so the sum no longer compares where speculation cut the audio, which is what this
    test is for. The busy window has its own test (test_whisper_window.py)."""
    srv = ServerThread(embedded_settings(stt={"busy_encoder_window_s": 30})).start(timeout=300)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def utterances(tmp_path_factory: pytest.TempPathFactory) -> list[speech_set.Utterance]:
    out = tmp_path_factory.mktemp("speech_set")
    synthetic = speech_set.build(out, VOICES, PROMPTS)
    human = [u for u in speech_set.build(out / "human", ["human-librivox", "human-cards"]) if u.prompt in HUMAN]
    assert len(synthetic) == len(VOICES) * len(PROMPTS) and len(human) == len(HUMAN)
    return synthetic + human


def _describe(t: transcripts.Turn) -> str:
    return (f"{t.voice}/{t.prompt}: expected {t.text!r}, reported {t.reported!r} "
            f"({transcripts.word_errors(t.text, t.reported or '')} errors), full buffer {t.full_buffer!r} "
            f"({transcripts.word_errors(t.text, t.full_buffer or '')} errors), committed {t.committed_ms} ms")


@pytest.mark.parametrize("dialect", ["voicelive", "openai"])
async def test_reported_transcript_never_worse_than_committed_audio(
        embedded: ServerThread, utterances: list[speech_set.Utterance], dialect: str) -> None:
    gate = asyncio.Semaphore(CONCURRENT)

    async def one(utt: speech_set.Utterance) -> transcripts.Turn:
        async with gate:
            return await transcripts.measure(embedded.ws, utt, {"type": "server_vad"}, path=PATHS[dialect],
                                             timeout=90)

    turns = await asyncio.gather(*(one(u) for u in utterances))
    for t in turns:
        print(_describe(t))
    broken = [f"{t.voice}/{t.prompt}: {t.errors}" for t in turns if t.errors or t.reported is None]
    assert not broken, broken
    for t in turns:
        assert t.committed is not None and t.committed.size > 0, _describe(t)
    # Whisper tiny.en flips words on marginal audio from one run to the next, even for a
    # committed buffer of the same length (the capital question as "...of France?" or "...on
    # France?"); with beam search (stt.beam_size 5, the default) a flip can change a whole phrase:
    # en-us 150 wpm's shopping list came out as "a loaf of bread" and "the loaf are bred" (4 words)
    # in runs of this test on the same audio, for the reported and the full-buffer transcript alike.
    # What must hold is that the reported transcripts are about as good as the whole committed
    # buffers': up to one such flip of slack. The check is coarse: with stt.tail_ms = 0 it passes
    # on this set too (measured 2026-12-02, greedy), so it catches a speculation that loses whole
    # words across the set, not the quiet end of one; the tail itself is pinned by test_protocol's
    # test of what the scripted STT heard.
    reported = sum(transcripts.word_errors(t.text, t.reported or "") for t in turns)
    full = sum(transcripts.word_errors(t.text, t.full_buffer or "") for t in turns)
    worse = [_describe(t) for t in turns if t.reported_worse]
    assert reported <= full + FLIP_SLACK, (f"{reported} word errors reported against {full} in the committed "
                                  "buffers:\n" + "\n".join(worse))
    capital = next(t for t in turns if t.voice == "espeak-en-us-150" and t.prompt == "capital")
    assert "capital" in transcripts.normalise(capital.reported or ""), _describe(capital)


def test_word_errors() -> None:
    assert transcripts.word_errors("set a timer for twelve minutes", "Set a timer for 12 minutes.") == 0
    assert transcripts.word_errors("What is the capital of France?", "What is the capital and friends?") == 2
    assert transcripts.word_errors("and mister john dashwood", "And Mr. John Dashwood") == 0
    assert transcripts.word_errors("he was not an ill disposed young man", "He was not an ill-disposed man") == 1
    assert transcripts.word_errors("call me at six", "") == 4
    assert transcripts.normalise("It's 105 o'clock") == ["it's", "one", "hundred", "five", "o'clock"]


NOISY = [("piper-joe", "capital"), ("espeak-en-gb-150", "timer"), ("piper-joe", "weather"),
         ("espeak-en-us+m3-190", "sister"), ("piper-joe", "table")]
NOISE_DBFS = -35.0  # a quiet room through a laptop microphone: never digital silence


async def test_one_session_with_microphone_noise_throughout(
        embedded: ServerThread, utterances: list[speech_set.Utterance], tmp_path: Path) -> None:
    """Noise within 35 dB of the speech hides its acoustic end, so the VAD's own end of speech
    decides (docs/configuration.md, stt.tail_ms): every turn of one long session still ends, is
    transcribed and answered, with the real models."""
    import numpy as np

    from livevox.client.call import RATE, RealtimeCall, load_wav, speech_bounds

    extra = speech_set.build(tmp_path, [v for v, _ in NOISY], [p for _, p in NOISY])
    by_key = {(u.voice, u.prompt): u for u in [*utterances, *extra]}
    human = next(u for u in utterances if u.prompt == "005")
    rng = np.random.default_rng(3)
    call = await RealtimeCall.open(embedded.ws + transcripts.VL_PATH)
    try:
        await call.configure({"type": "server_vad"})
        for utt in [by_key[k] for k in NOISY] + [human]:
            pcm = load_wav(utt.path)
            bounds = speech_bounds(pcm)
            audio = np.concatenate([pcm, np.zeros(2 * RATE, np.int16)]).astype(np.float32)
            audio += rng.standard_normal(audio.size) * 32768 * 10 ** (NOISE_DBFS / 20)
            noisy = np.clip(audio, -32768, 32767).astype(np.int16)
            r = await call.spoken_turn(noisy, speech_end_s=bounds[1] if bounds else None, tail_silence_s=0.0,
                                       timeout=90)
            said = f"{utt.voice}/{utt.prompt}: {r.user_transcript!r}"
            assert "input_audio_buffer.speech_stopped" in r.first, said
            assert (r.response or {}).get("status") in ("completed", "incomplete"), (said, r.response)
            if utt.voice == "piper-joe":  # the clearest voice: its words survive the noise, but for
                # a flip now and then ("in Madrid" heard as "in the grid" is two errors)
                assert transcripts.word_errors(utt.text, r.user_transcript or "") <= 2, said
            else:
                assert r.user_transcript, said
    finally:
        await call.close()
