"""Voice Live conversation features, component by component, with the real models (no mocks):
Smart Turn v3.2, the end-of-turn policy, filler words, noise suppression, echo cancellation,
word timestamps and visemes. Audio comes from the fixtures and from espeak-ng / Piper at run time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livevox.engines.model_files import carried_file
from livevox.engines.piper.alignment import (
    Timeline,
    alignment_model_bytes,
    load_piper_voice_with_alignment,
    proportional_spans,
    spans_from_alignment,
    text_words,
    viseme_of,
)
from livevox.engines.silero import FRAME_SAMPLES, SileroVAD
from livevox.engines.smart_turn import (
    SMART_TURN_V32,
    WINDOW_SAMPLES,
    SmartTurn,
    fit_window,
    log_mel_features,
    mel_filterbank,
)
from livevox.realtime.config import turn_defaults
from livevox.realtime.echo import LATENCY_SAMPLES, DelayEstimator, EchoCanceller
from livevox.realtime.end_of_turn import (
    EndOfTurnPolicy,
    combined_score,
    dangling,
    policy_config,
    wants_text,
    wordless,
)
from livevox.realtime.filler import VOICE_LIVE_FILLERS, is_backchannel, is_filler_only
from livevox.realtime.noise import NoiseSuppressor, level_for
from livevox.realtime.speech_segmenter import SpeechSegmenter, SpeechStarted
from support_audio import espeak, fixture_f32, to_float

RATE = 16000


@functools.cache
def silero() -> SileroVAD:
    vad = SileroVAD()
    vad._load()
    return vad


def speech_starts(x: np.ndarray[Any, Any]) -> list[int]:
    n = len(x) // FRAME_SAMPLES * FRAME_SAMPLES
    probs = silero().stream()._run_frames(x[:n].astype(np.float32))
    det = SpeechSegmenter(turn_defaults({"type": "server_vad"}, "2026-07-15"), FRAME_SAMPLES)
    return [ev.start_sample for ev in det.process(probs, 0) if isinstance(ev, SpeechStarted)]


# ================================================================ Smart Turn


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    st = SmartTurn()
    st.load_sync()
    return st


def test_smart_turn_file_is_pinned() -> None:
    path = carried_file(SMART_TURN_V32)  # verifies the sha256
    assert path.name == "smart-turn-v3.2-cpu.onnx"


def test_whisper_features_shape_and_padding() -> None:
    short = np.ones(RATE, np.float32)
    win = fit_window(short)
    assert win.shape == (WINDOW_SAMPLES,)
    assert not win[:-RATE].any() and win[-RATE:].all()  # left-padded with zeros
    long = np.arange(WINDOW_SAMPLES + 5, dtype=np.float32)
    assert fit_window(long)[0] == 5  # the last 8 s are kept
    feats = log_mel_features(fit_window(fixture_f32("question_capital.wav")))
    assert feats.shape == (80, 800) and feats.dtype == np.float32
    assert feats.max() - feats.min() <= 2.0 + 1e-6  # floored 8 decades under the peak, / 4
    fb = mel_filterbank()
    assert fb.shape == (80, 201) and (fb >= 0).all() and (fb.sum(axis=1) > 0).all()


async def test_smart_turn_hears_complete_and_unfinished(smart_turn: SmartTurn) -> None:
    tail = np.zeros(RATE // 5, np.float32)  # the 200 ms of silence the first score sees
    complete = np.concatenate([fixture_f32("question_capital.wav"), tail])
    unfinished = np.concatenate([to_float(espeak("What is the weather like in", rate=RATE)), tail])
    p_complete = await smart_turn.score(complete, "test")
    p_unfinished = await smart_turn.score(unfinished, "test")
    assert 0.0 <= p_unfinished < 0.5 < p_complete <= 1.0
    assert smart_turn.last_ms < 1000


def test_whisper_features_match_pipecats_reference() -> None:
    # pipecat's own numpy port of the Whisper extractor is a file in the carrier wheel; it is
    # loaded by path as an oracle (the pipecat package itself is never imported).
    import importlib.util

    from livevox.engines.model_files import package_dir

    ref_path = package_dir("pipecat", SMART_TURN_V32.pip_install) / "audio/turn/smart_turn/_whisper_features.py"
    spec = importlib.util.spec_from_file_location("_pipecat_whisper_features", ref_path)
    assert spec is not None and spec.loader is not None
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    rng = np.random.default_rng(5)
    for audio in (fixture_f32("question_story.wav"), rng.standard_normal(3 * RATE).astype(np.float32) * 0.1):
        win = fit_window(audio)
        np.testing.assert_allclose(log_mel_features(win), ref.compute_whisper_log_mel_features(win), atol=1e-5)


# ================================================================ end-of-turn policy


def run(policy: EndOfTurnPolicy, scores: dict[int, float]) -> int:
    """Silence length (ms) at which `policy` ends a silence that never ends, with scores by checkpoint."""
    d = policy.start()
    now = 0
    while not d.end_turn:
        if d.rescore_after_ms is not None and (d.end_at_ms is None or d.rescore_after_ms < d.end_at_ms):
            now = d.rescore_after_ms
            d = policy.on_silence(now, scores.get(now, scores.get(-1, 0.0)))
        else:
            assert d.end_at_ms is not None
            now = d.end_at_ms
            d = policy.on_silence(now, None)
    return now


def test_server_vad_ends_after_silence_duration() -> None:
    p = EndOfTurnPolicy(turn_defaults({"type": "server_vad", "silence_duration_ms": 700}, None))
    assert not p.uses_model
    assert run(p, {}) == 700


def test_azure_semantic_complete_ends_at_silence_duration() -> None:
    td = turn_defaults({"type": "azure_semantic_vad"}, "2026-07-15")
    p = EndOfTurnPolicy(td)
    assert p.uses_model and p.cfg.complete_ms == 500 and p.cfg.cap_ms == 1500
    assert run(p, {200: 0.9}) == 500
    # Incomplete: rescored every 300 ms; a later "complete" ends it at once.
    assert run(p, {200: 0.1, 500: 0.2, 800: 0.7}) == 800
    # Never complete: the cap.
    assert run(p, {-1: 0.05}) == 1500


def test_eagerness_and_end_of_utterance_settings() -> None:
    levels = ("low", "medium", "high", "auto")
    caps = {e: policy_config({"type": "semantic_vad", "eagerness": e}).cap_ms for e in levels}
    assert caps == {"low": 8000, "medium": 4000, "high": 2000, "auto": 4000}
    high = EndOfTurnPolicy({"type": "semantic_vad", "eagerness": "high"})
    assert run(high, {200: 0.35}) == 300  # high: threshold 0.3, 300 ms
    low = EndOfTurnPolicy({"type": "semantic_vad", "eagerness": "low"})
    assert run(low, {-1: 0.6}) == 8000  # low: 0.6 is not enough
    eou = {"type": "server_vad", "silence_duration_ms": 400,
           "end_of_utterance_detection": {"model": "semantic_detection_v1", "threshold_level": "high",
                                          "timeout_ms": 2000}}
    cfg = policy_config(eou)
    assert cfg.uses_model and cfg.threshold == 0.7 and cfg.complete_ms == 400 and cfg.cap_ms == 2400
    preview = policy_config({"model": "smart_end_of_turn_detection", "threshold_level": "low", "timeout_ms": 500})
    assert preview.uses_model and preview.threshold == 0.3 and preview.cap_ms == 1000


def test_a_new_pause_starts_over() -> None:
    p = EndOfTurnPolicy({"type": "azure_semantic_vad", "silence_duration_ms": 500})
    p.start()
    p.on_silence(200, 0.1)
    p.reset()  # the user spoke again
    assert p.last_score is None
    assert run(p, {200: 0.95}) == 500


def test_lexical_veto_holds_unfinished_words() -> None:
    assert dangling("I'd like to book a table for")
    assert dangling("Can you remind me to call my...")
    assert dangling("I want to fly to London and then")
    assert not dangling("I'd like to book a table for four.")
    assert not dangling("Please set an alarm for 6.30")  # numbers are words
    assert not dangling("What are you looking for?")  # a wh-question may end on a preposition
    assert not dangling("Where's it from?") and not dangling("Who did you go with?")
    assert dangling("Is there a direct train from Paris to?")  # a yes/no question does not
    assert dangling("Could you play some music by?")
    assert dangling("Can you call my?") and dangling("Could you play some music by the?")
    assert not dangling("Um.")  # a lone filler is a backchannel, not a hesitation
    # Whisper's ellipsis where the voice trails off; an ellipsis inside is only a hesitation
    assert dangling("I think the best option would be...") and dangling("Find me a hotel in Lisbon…")
    assert not dangling("So... what time is it?") and not dangling("Um...")
    p = EndOfTurnPolicy({"type": "azure_semantic_vad", "silence_duration_ms": 500})
    p.start()
    p.expect_transcript()
    d = p.on_silence(200, 0.95)
    assert d.end_at_ms == 500
    d = p.on_silence(500, None)
    assert not d.end_turn and d.end_at_ms == 600  # waits a little for the words
    d = p.on_silence(560, None, "I'd like to book a table for")
    assert not d.end_turn and d.end_at_ms == 1500 and d.rescore_after_ms is None
    # The words never arrive: the audio decides after the short wait.
    q = EndOfTurnPolicy({"type": "azure_semantic_vad", "silence_duration_ms": 500})
    q.start()
    q.expect_transcript()
    q.on_silence(200, 0.95)
    assert q.on_silence(600, None).end_turn
    # Known to hold no words: held like a dangling word. A failed transcription: the audio decides.
    w = EndOfTurnPolicy({"type": "azure_semantic_vad", "silence_duration_ms": 500})
    w.start()
    w.expect_transcript()
    w.on_silence(200, 0.95)
    d = w.on_silence(520, None, " ")
    assert not d.end_turn and d.end_at_ms == 1500 and wordless(" ") and not wordless(None)
    f = EndOfTurnPolicy({"type": "azure_semantic_vad", "silence_duration_ms": 500})
    f.start()
    f.expect_transcript()
    f.on_silence(200, 0.95)
    f.no_transcript()
    assert f.on_silence(520, None).end_turn
    # Multilingual: no English word list.
    m = EndOfTurnPolicy({"type": "azure_semantic_vad_multilingual", "silence_duration_ms": 500})
    m.start()
    m.on_silence(200, 0.9, "Quiero reservar una mesa para")
    assert m.on_silence(500, None).end_turn


def test_the_text_signal_is_combined_with_the_audio_score() -> None:
    assert combined_score(None, None) is None
    assert combined_score(0.8, None) == 0.8 and combined_score(None, 0.3) == 0.3
    assert combined_score(0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert combined_score(0.9, 0.1, 1.0) == pytest.approx(0.9)  # weight 1: Smart Turn alone
    td = {"type": "azure_semantic_vad", "silence_duration_ms": 500}
    cfg = policy_config(td)
    assert cfg.text and cfg.lexical
    assert not policy_config({"type": "azure_semantic_vad_multilingual"}).text  # an English model
    assert not policy_config({"type": "server_vad"}).text
    # The audio says finished, the words (by the LLM) say not: the turn waits to the cap.
    p = EndOfTurnPolicy(td)
    p.start()
    p.expect_transcript()
    p.expect_text()
    assert p.on_silence(200, 0.95).end_at_ms == 500  # complete so far, on the audio alone
    d = p.on_silence(350, None, "My account number is four five.")
    assert not d.end_turn and p.awaiting_text
    d = p.on_silence(500, None)
    assert not d.end_turn and d.end_at_ms == 600  # waits a little for the LLM, as for the words
    d = p.on_text(520, 0.0)
    assert not d.end_turn and p.score is not None and p.score < cfg.threshold
    assert d.rescore_after_ms is not None  # still listening: a rescore may change the verdict
    # Both say finished: ends at the short silence.
    q = EndOfTurnPolicy(td)
    q.start()
    q.expect_transcript()
    q.expect_text()
    q.on_silence(200, 0.95)
    q.on_silence(350, None, "What is the weather like in Paris today?")
    assert q.on_text(380, 0.9).end_at_ms == 500
    assert q.on_silence(500, None).end_turn
    # The audio is unsure, the words are clearly finished: the text can tip it to complete.
    r = EndOfTurnPolicy(td)
    r.start()
    r.on_silence(200, cfg.threshold - 0.05, "Tell me a joke about penguins.")
    assert r.on_text(300, 1.0).end_at_ms == 500
    # The LLM gave nothing (a remote engine without logprobs, a skipped probe): audio and rules.
    u = EndOfTurnPolicy(td)
    u.start()
    u.expect_transcript()
    u.expect_text()
    u.on_silence(200, 0.95, "Tell me a joke about penguins.")
    u.on_text(300, None)
    assert u.on_silence(500, None).end_turn


def test_the_llm_probe_is_skipped_when_the_words_tell_already() -> None:
    assert wants_text("My account number is four five.")
    assert not wants_text("I'd like to book a table for")  # dangling: the rules said incomplete
    assert not wants_text("Um.") and not wants_text("") and not wants_text(None)
    assert not wants_text("...")  # no words: the rules hold it already


async def test_turn_taking_asks_the_llm_only_for_words_it_cannot_judge() -> None:
    import asyncio

    from livevox.realtime.turn_taking import TurnTaking

    asked: list[str] = []

    async def probe(text: str, sid: str) -> float | None:
        asked.append(text)
        return 0.25

    class Host:
        id = "sess"

    class Vad:
        frame_samples = 512

    for td in ({"type": "server_vad"}, {"type": "azure_semantic_vad"}):
        tt = TurnTaking(Host(), None, Vad(), None, td, 100, probe)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        futs = {}
        for text in ("Set a timer for ten", "Book a table for", "Um."):
            stt: asyncio.Future[str] = loop.create_future()
            futs[text] = (stt, tt._text_signal(stt))
            stt.set_result(text)
        if td["type"] == "server_vad":
            assert all(f is None for _, f in futs.values())
            continue
        got = {t: await f for t, (_, f) in futs.items() if f is not None}
        assert got == {"Set a timer for ten": 0.25, "Book a table for": None, "Um.": None}
    assert asked == ["Set a timer for ten"]
    # Dropped before the transcript came: no probe at all.
    tt = TurnTaking(Host(), None, Vad(), None, {"type": "azure_semantic_vad"}, 100, probe)  # type: ignore[arg-type]
    stt = asyncio.get_running_loop().create_future()
    fut = tt._text_signal(stt)
    assert fut is not None
    fut.cancel()
    stt.set_result("What time is it?")
    await asyncio.sleep(0)
    assert asked == ["Set a timer for ten"]


def test_end_probability_reads_llama_cpp_top_logprobs() -> None:
    import math

    from livevox.engines.llamacpp import end_probability, eot_text

    top = [{"id": 2, "token": "", "logprob": math.log(0.5)}, {"id": 30, "token": ".", "logprob": math.log(0.2)},
           {"id": 253, "token": " a", "logprob": math.log(0.1)}, {"id": 47, "token": "?", "logprob": math.log(0.1)}]
    assert end_probability(top, frozenset({2})) == pytest.approx(0.8)
    assert end_probability(top[2:3], frozenset({2})) == 0.0
    assert eot_text("What is the weather like in Paris today?") == "What is the weather like in Paris today"
    assert eot_text(" I'd like to book a table for... ") == "I'd like to book a table for"
    assert eot_text("<|im_end|>hi.") == "im_endhi"


# ================================================================ filler words


@pytest.mark.parametrize("text", [
    *VOICE_LIVE_FILLERS, "Mm-hmm.", "Uh-huh?", "Ummm...", "Hmm, yeah.", "Yeah, yeah.", "MMM.", "Uh", "Oh!",
    "mhm", "Erm", "(sighs) Yeah.", "Mm-hm", "uh huh",
])
def test_fillers(text: str) -> None:
    assert is_filler_only(text)


@pytest.mark.parametrize("text", [
    "", "  ", "[BLANK_AUDIO]", "Yes.", "No.", "Okay.", "Stop.", "Wait.", "Yeah, book it.", "Um, what time is it?",
    "4", "Uh, 5.", "Hmm, the other one.", "Sure.",
])
def test_not_fillers(text: str) -> None:
    assert not is_filler_only(text)


@pytest.mark.parametrize("text", [
    "Mm-hmm.", "Okay.", "OK", "Oh, okay.", "I see.", "Right, right.", "Got it.", "All right.", "Alright!",
    "Uh-huh, sure.", "Wow.", "Yeah, I see.", "And Mm-hmm.", "So, okay.",
])
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", [
    "", "[BLANK_AUDIO]", "Yes.", "No.", "Stop.", "Wait.", "Okay, book it.", "Right, the other one.", "I",
    "See.", "Okay okay okay okay okay.", "Got 4.", "Hold on.", "Sure, at six.", "And?", "So.", "And stop.",
    "So, the other one.",
])
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_backchannels_are_configurable() -> None:
    assert not is_backchannel("Okay.", ())  # an empty list: fillers only, as Voice Live documents
    assert is_backchannel("Mm-hmm.", ())
    assert is_backchannel("Makes sense.", ("makes sense",))


# ================================================================ noise suppression


def test_noise_suppressor_removes_noise_keeps_speech() -> None:
    rng = np.random.default_rng(0)
    speech = fixture_f32("question_weather.wav")
    noise = (rng.standard_normal(len(speech) + RATE) * 0.01).astype(np.float32)  # ~-40 dBFS
    mix = np.concatenate([np.zeros(RATE, np.float32), speech]) + noise
    ns = NoiseSuppressor(3)
    chunks = [ns.process(mix[i : i + 333]) for i in range(0, len(mix), 333)]  # odd sizes on purpose
    out = np.concatenate(chunks)
    assert out.shape == mix.shape and out.dtype == np.float32
    out = out[LATENCY_SAMPLES:]
    lead = slice(RATE // 2, RATE)  # noise only, after adapting
    atten_db = 10 * np.log10(np.mean(mix[lead] ** 2) / np.mean(out[lead] ** 2))
    assert atten_db > 10
    sp = slice(RATE + 3200, RATE + len(speech) - 3200)
    kept_db = 10 * np.log10(np.mean(out[sp] ** 2) / np.mean(mix[sp] ** 2))
    assert kept_db > -6
    # int16 in, int16 out.
    pcm = (mix[:1600] * 32768).astype(np.int16)
    assert NoiseSuppressor(2).process(pcm).dtype == np.int16
    assert level_for(None) is None and level_for({"type": "near_field"}) == 2
    assert level_for({"type": "azure_deep_noise_suppression"}) == 3


# ================================================================ echo cancellation


def room_echo(far: np.ndarray[Any, Any], delay_ms: int, gain_db: float) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(1)
    t = np.arange(2000) / RATE
    h = rng.standard_normal(2000) * np.exp(-6.9 * t / 0.2) * 0.3
    h[0] = 1.0
    echo = np.convolve(far, h / np.sqrt(np.sum(h**2)))[: len(far)] * 10 ** (gain_db / 20)
    d = delay_ms * RATE // 1000
    out: np.ndarray[Any, Any] = np.concatenate([np.zeros(d), echo])[: len(far)].astype(np.float32)
    return out


def cancel(far: np.ndarray[Any, Any], mic: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    ec = EchoCanceller()
    ec.far(far, 0)
    out = np.concatenate([ec.near(mic[i : i + 320], i) for i in range(0, len(mic), 320)])
    res: np.ndarray[Any, Any] = np.concatenate([out[LATENCY_SAMPLES:], np.zeros(LATENCY_SAMPLES, np.float32)])
    return res


def test_delay_estimator_finds_the_echo_path() -> None:
    far = np.concatenate([np.zeros(RATE // 2, np.float32), fixture_f32("question_story.wav")])
    echo = room_echo(far, 700, -10)
    end = len(far)
    est = DelayEstimator(2 * RATE)
    # The microphone's last 2 s, and the reference over the same 2 s plus the 2 s searched before.
    delay, conf = est.estimate(echo[end - 2 * RATE : end], far[end - 4 * RATE : end])
    assert abs(delay - 700 * RATE // 1000) <= 16 * 5 and conf > 8


def test_echo_is_cancelled_and_interruption_still_heard() -> None:
    far = np.concatenate([np.zeros(RATE // 2, np.float32), fixture_f32("question_story.wav"),
                          np.zeros(RATE // 2, np.float32)]) * 2.0
    echo = room_echo(far, 150, -10)
    mic = (echo + np.random.default_rng(2).standard_normal(len(far)) * 3e-4).astype(np.float32)
    assert speech_starts(mic), "without AEC the echo alone must look like the user talking"
    out = cancel(far, mic)
    talk = slice(2 * RATE, len(far) - RATE)
    erle = 10 * np.log10(np.sum(mic[talk] ** 2) / np.sum(out[talk] ** 2))
    assert erle > 15
    assert speech_starts(out) == []
    # A different voice talking over the echo still starts a turn.
    user = to_float(espeak("Wait, stop, I need to change that.", "en-gb+f3", rate=RATE)) * 0.5
    at = 3 * RATE
    mic2 = mic.copy()
    mic2[at : at + len(user)] += user[: len(mic2) - at]
    starts = speech_starts(cancel(far, mic2))
    assert any(at - RATE // 2 <= s <= at + len(user) for s in starts)


def test_echo_canceller_keeps_the_clock() -> None:
    ec = EchoCanceller()
    pcm = (np.random.default_rng(3).standard_normal(1000) * 1000).astype(np.int16)
    out = ec.near(pcm[:333], 0)
    assert out.dtype == np.int16 and out.size == 333
    assert ec.near(pcm[333:], 333).size == 667
    ec.far(pcm, 5000)
    ec.clear_far(5500)
    assert not ec._far_slice(5400, 200)[100:].any()  # cleared from 5500 on


# ================================================================ word timestamps and visemes


@pytest.fixture(scope="module")
def piper_voice() -> Any:
    return load_piper_voice_with_alignment(None)


def test_alignment_patch_adds_the_duration_output(piper_voice: Any) -> None:
    outputs = [o.name for o in piper_voice.session.get_outputs()]
    assert len(outputs) == 2 and "Ceil" in outputs[1]
    data = Path(piper_voice_path()).read_bytes()
    patched, name = alignment_model_bytes(data)
    assert name is not None and len(patched) > len(data)
    assert alignment_model_bytes(patched)[1] is None  # already patched: left alone


def piper_voice_path() -> str:
    from livevox.engines.model_files import piper_voice

    return str(piper_voice(None)[0])


def test_word_timestamps_from_piper_durations(piper_voice: Any) -> None:
    text = "Sure, I have booked a table for four people in the U.S. at 7:30. See you then!"
    chunks = list(piper_voice.synthesize(text, include_alignments=True))
    assert len(chunks) == 2
    tl = Timeline(piper_voice.phonemize)
    words = []
    visemes = []
    total = 0
    for c in chunks:
        assert sum(a.num_samples for a in c.phoneme_alignments) == len(c.audio_float_array)
        ct = tl.add_piper_chunk(c, text)  # which chunk is the last is worked out
        assert ct.aligned
        words += ct.words
        visemes += ct.visemes
        total += len(c.audio_float_array)
    assert [w.text for w in words] == text_words(text)
    total_ms = total * 1000 / chunks[0].sample_rate
    starts = [w.audio_offset_ms for w in words]
    assert starts == sorted(starts) and starts[0] < 400
    assert all(w.audio_duration_ms > 0 for w in words)
    assert words[-1].audio_offset_ms + words[-1].audio_duration_ms <= total_ms + 1
    # The second sentence's words are offset by the first chunk's audio.
    first_ms = len(chunks[0].audio_float_array) * 1000 / chunks[0].sample_rate
    assert words[-3].audio_offset_ms >= first_ms - 1
    assert {v.viseme_id for v in visemes} <= set(range(22)) and len({v.viseme_id for v in visemes}) > 10
    assert visemes[0].viseme_id == 0 and visemes[0].audio_offset_ms == 0


def test_viseme_table() -> None:
    expect = {"p": 21, "b": 21, "m": 21, "f": 18, "v": 18, "ð": 17, "θ": 19, "s": 15, "ʃ": 16, "tʃ": 16, "k": 20,
              "ŋ": 20, "l": 14, "ɹ": 13, "h": 12, "aɪ": 11, "ɔɪ": 10, "aʊ": 9, "oʊ": 8, "u": 7, "w": 7, "i": 6,
              "j": 6, "ɚ": 5, "ɛ": 4, "eɪ": 4, "ɔ": 3, "ɑ": 2, "ə": 1, "æ": 1, " ": 0, ".": 0}
    assert {p: viseme_of(p) for p in expect} == expect
    assert viseme_of("ˈ") is None and viseme_of("ː") is None


def test_proportional_fallback_is_close(piper_voice: Any) -> None:
    text = "The weather in Paris today is sunny with a high of twenty two degrees."
    (c,) = list(piper_voice.synthesize(text, include_alignments=True))
    exact = spans_from_alignment(c.phonemes, c.phoneme_alignments)
    approx = proportional_spans(c.phonemes, c.audio_float_array, c.sample_rate)
    assert exact is not None and len(approx) == len(exact)
    tl = Timeline(piper_voice.phonemize)
    words = text_words(text)
    a = tl.aligner.align(words, exact)
    b = tl.aligner.align(words, approx)
    err_ms = [abs(x[1] - y[1]) * 1000 / c.sample_rate for x, y in zip(a, b, strict=True)]
    assert float(np.mean(err_ms)) < 150
    # Without durations the timeline still works (aligned=False).
    ct = Timeline(piper_voice.phonemize).add_chunk(c.phonemes, c.audio_float_array, c.sample_rate, text)
    assert not ct.aligned and [w.text for w in ct.words] == words
