"""Engine tests on the REAL embedded models (no mocks), plus the scripted stand-ins.

The real engines load once for the module through `build_engines`, which also exercises the
registry's load + warm-up path. Fixture audio comes from tests/fixtures/make_fixtures.sh.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

import support_audio
from livevox.core.executor import stage_executor
from livevox.engines import model_files
from livevox.engines.base import (
    ChatRequest,
    EngineError,
    Finish,
    SynthesisOptions,
    TextDelta,
    ToolCallDelta,
    TranscribeOptions,
)
from livevox.engines.registry import EngineLoadError, Engines, build_engines
from livevox.engines.scripted import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedToolCall,
    ScriptedTTS,
    ScriptedVAD,
)
from livevox.settings import LLMSettings, Settings, STTSettings, TTSSettings, VADSettings
from support_audio import FIXTURES, to_float

# What faster-whisper tiny.en must hear in each fixture (see make_fixtures.sh).
KEY_WORDS = {
    "question_capital.wav": ["capital", "france"],
    "question_weather.wav": ["weather", "paris"],
    "question_story.wav": ["story", "robot", "moon"],
    "backchannel_yeah.wav": ["yeah"],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def read_wav(name: str) -> np.ndarray:
    pcm, rate = support_audio.read_wav(FIXTURES / name)  # which also insists on 16-bit samples
    assert rate == 16000 and pcm.ndim == 1  # the fixtures are what make_fixtures.sh says
    return to_float(pcm)


def whole_frames(audio: np.ndarray, frame: int = 512) -> np.ndarray:
    return audio[: len(audio) // frame * frame]


def real_settings() -> Settings:
    # Explicit stage settings so LIVEVOX_* variables in the environment cannot swap in stand-ins.
    return Settings(vad=VADSettings(), stt=STTSettings(), llm=LLMSettings(), tts=TTSSettings())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engines() -> AsyncIterator[Engines]:
    e = await build_engines(real_settings())
    yield e
    await e.close()


async def collect(agen: AsyncIterator[object]) -> list[object]:
    return [x async for x in agen]


# ---------------------------------------------------------------- carriers


def test_pinned_carrier_files_verify() -> None:
    for item in model_files.CARRIED:
        path = model_files.carried_file(item)
        assert path.is_file()
    assert (model_files.whisper_model_dir(None) / "model.bin").is_file()
    _onnx, config = model_files.piper_voice(None)
    assert config.name == "en_US-joe-medium.onnx.json" and config.is_file()


def test_sha256_mismatch_is_detected(tmp_path: Path) -> None:
    src = model_files.carried_file(model_files.SILERO_VAD)
    copy = tmp_path / "silero_vad.onnx"
    shutil.copyfile(src, copy)
    assert model_files.verify_sha256(copy, model_files.SILERO_VAD.sha256) == copy
    with open(copy, "r+b") as f:  # flip one byte in the middle
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(model_files.ModelFileError) as err:
        model_files.verify_sha256(copy, model_files.SILERO_VAD.sha256)
    msg = str(err.value)
    assert str(copy) in msg
    assert model_files.SILERO_VAD.sha256 in msg
    assert model_files.sha256_file(copy) in msg


def test_missing_carrier_and_user_paths(tmp_path: Path) -> None:
    missing = model_files.Carried("no_such_livevox_carrier", "x.bin", "0" * 64, "pip install no-such==1.0")
    with pytest.raises(model_files.ModelFileError, match=r"pip install no-such==1\.0"):
        model_files.carried_file(missing)
    with pytest.raises(model_files.ModelFileError, match=r"llm\.gguf_path"):
        model_files.smollm2_gguf(str(tmp_path / "nope.gguf"))
    with pytest.raises(model_files.ModelFileError, match=r"stt\.model_dir"):
        model_files.whisper_model_dir(str(tmp_path / "nodir"))
    # A user path is used as given (no hash check), as long as it exists.
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"not checked")
    assert model_files.smollm2_gguf(str(own)) == own


# ---------------------------------------------------------------- registry


async def test_registry_status(engines: Engines) -> None:
    assert engines.ready
    status = engines.status()
    assert set(status) == {"vad", "turn", "stt", "llm", "tts"}
    assert {s: v["engine"] for s, v in status.items()} == {
        "vad": "silero",
        "turn": "smart_turn",
        "stt": "faster-whisper",
        "llm": "llamacpp",
        "tts": "piper",
    }
    for v in status.values():
        assert v["state"] == "ready" and v["load_ms"] > 0 and "error" not in v


async def test_registry_load_failure_names_stage(tmp_path: Path) -> None:
    s = Settings(
        vad=VADSettings(engine="silero", model_path=str(tmp_path / "missing.onnx")),
        stt=STTSettings(engine="scripted"),
        llm=LLMSettings(engine="scripted"),
        tts=TTSSettings(engine="scripted"),
    )
    e = Engines.create(s)
    assert not e.ready and e.status()["vad"]["state"] == "loading"
    with pytest.raises(EngineLoadError) as err:
        await e.load()
    assert err.value.stage == "vad" and err.value.engine == "silero"
    assert "stage=vad engine=silero" in str(err.value) and "missing.onnx" in str(err.value)
    st = e.status()
    assert st["vad"]["state"] == "failed" and "missing.onnx" in st["vad"]["error"]
    assert st["llm"]["state"] == "ready" and not e.ready


# ---------------------------------------------------------------- Silero VAD


async def test_silero_speech_and_silence(engines: Engines) -> None:
    speech = whole_frames(read_wav("question_capital.wav"))
    probs = await engines.vad.stream().probabilities(speech, "t-vad")
    assert len(probs) == len(speech) // 512
    assert sum(p > 0.5 for p in probs) >= len(probs) // 2  # ~2.3 s of 2.7 s is speech
    # The 200 ms lead-in is silence.
    assert max(probs[:4]) < 0.5

    silence = whole_frames(read_wav("silence_1s.wav"))
    probs = await engines.vad.stream().probabilities(silence, "t-vad")
    assert probs and max(probs) < 0.5


async def test_silero_streams_are_independent(engines: Engines) -> None:
    speech = whole_frames(read_wav("question_weather.wav"))
    a, b = engines.vad.stream(), engines.vad.stream()
    # Feeding in 3-frame pieces gives the same answer as one call: the state carries over.
    whole = await a.probabilities(speech, "t-a")
    pieces: list[float] = []
    for i in range(0, len(speech), 1536):
        pieces += await b.probabilities(speech[i : i + 1536], "t-b")
    assert np.allclose(whole, pieces, atol=1e-5)
    a.reset()
    assert np.allclose(await a.probabilities(speech, "t-a"), whole, atol=1e-5)
    with pytest.raises(ValueError):
        await a.probabilities(speech[:100], "t-a")


# ---------------------------------------------------------------- faster-whisper


@pytest.mark.parametrize("name", sorted(KEY_WORDS))
async def test_whisper_key_words(engines: Engines, name: str) -> None:
    parts = await collect(engines.stt.transcribe(read_wav(name), TranscribeOptions(), "t-stt"))
    text = "".join(str(p) for p in parts).lower()
    for word in KEY_WORDS[name]:
        assert word in text, f"{name}: {word!r} not in {text!r}"
    assert engines.stt.streams


async def test_whisper_empty_audio_is_quick(engines: Engines) -> None:
    for audio in (
        np.zeros(0, np.float32),
        np.zeros(400, np.float32),
        read_wav("silence_1s.wav"),
        np.full(800, 0.3, np.float32),  # 50 ms: too short to be a word
    ):
        t = time.perf_counter()
        parts = await collect(engines.stt.transcribe(audio, TranscribeOptions(), "t-stt"))
        assert "".join(str(p) for p in parts) == ""
        assert time.perf_counter() - t < 0.05


# ---------------------------------------------------------------- llama.cpp


async def test_llamacpp_streams_text(engines: Engines) -> None:
    req = ChatRequest(
        messages=[
            {"role": "system", "content": "You are a helpful voice assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=32,
        temperature=0.0,
    )
    events = await collect(engines.llm.stream(req, "t-llm"))
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert len(texts) >= 2 and "".join(t.text for t in texts).strip()
    fin = events[-1]
    assert isinstance(fin, Finish) and fin.reason in ("stop", "length")
    assert fin.input_tokens > 5 and fin.output_tokens >= 1
    assert not any(isinstance(e, Finish) for e in events[:-1])


async def test_llamacpp_max_tokens_gives_length(engines: Engines) -> None:
    req = ChatRequest(messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=3)
    events = await collect(engines.llm.stream(req, "t-llm"))
    fin = events[-1]
    assert isinstance(fin, Finish) and fin.reason == "length" and fin.output_tokens == 3


async def test_llamacpp_aclose_stops_generation(engines: Engines) -> None:
    req = ChatRequest(
        messages=[{"role": "user", "content": "Tell me a very long story about a robot on the moon."}],
        max_tokens=256,
        temperature=0.0,
    )
    gen = engines.llm.stream(req, "t-llm")
    n = 0
    async for ev in gen:
        n += isinstance(ev, TextDelta)
        if n == 5:
            break
    t = time.perf_counter()
    await gen.aclose()
    # The llm executor has one worker: this no-op runs only once the generation job has returned.
    await stage_executor("llm").run("t-probe", lambda: None)
    idle_s = time.perf_counter() - t
    # 250 more tokens at ~160 tok/s would take ~1.5 s; stopping takes one token (~5-10 ms).
    assert idle_s < 0.25, f"worker busy {idle_s * 1000:.0f} ms after aclose"


async def test_llamacpp_cancel_stops_generation(engines: Engines) -> None:
    req = ChatRequest(
        messages=[{"role": "user", "content": "Write a long essay about Rome."}], max_tokens=256
    )
    got_first = asyncio.Event()

    async def consume() -> None:
        async for ev in engines.llm.stream(req, "t-llm"):
            if isinstance(ev, TextDelta):
                got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    t = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stage_executor("llm").run("t-probe", lambda: None)
    assert time.perf_counter() - t < 0.25


async def test_llamacpp_tools_pass_through(engines: Engines) -> None:
    req = ChatRequest(
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        max_tokens=48,
        temperature=0.0,
    )
    events = await collect(engines.llm.stream(req, "t-llm"))
    assert isinstance(events[-1], Finish)
    # SmolLM2-135M rarely calls tools; either shape is valid, but the stream must be well formed.
    if any(isinstance(e, ToolCallDelta) for e in events):
        assert events[-1].reason == "tool_calls"
    else:
        assert any(isinstance(e, TextDelta) for e in events)


async def test_llamacpp_rejected_tools_retry_without(
    engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    # llama.cpp refuses a tool with no function ("Failed to parse tools"): answered without tools.
    req = ChatRequest(
        messages=[{"role": "user", "content": "Say hello."}],
        tools=[{"type": "function"}],
        max_tokens=8,
    )
    with caplog.at_level(logging.WARNING, logger="livevox.engines.llamacpp"):
        events = await collect(engines.llm.stream(req, "t-llm"))
    assert any(isinstance(e, TextDelta) for e in events) and isinstance(events[-1], Finish)
    assert "retrying without tools" in caplog.text


async def test_llamacpp_error_is_engine_error(engines: Engines) -> None:
    huge = "word " * 6000  # > n_ctx 4096 tokens: llama.cpp refuses before generating
    req = ChatRequest(messages=[{"role": "user", "content": huge}], max_tokens=4)
    with pytest.raises(EngineError) as err:
        await collect(engines.llm.stream(req, "t-llm"))
    # an overflow is recognised as such (the session then retries with a shorter history)
    assert err.value.stage == "llm" and err.value.code == "context_length_exceeded"
    assert "context" in err.value.message


# ---------------------------------------------------------------- Piper


async def synth_seconds(engines: Engines, text: str, speed: float = 1.0) -> float:
    chunks = await collect(engines.tts.synthesize(text, SynthesisOptions(speed=speed), "t-tts"))
    audio = np.concatenate([np.asarray(c) for c in chunks])
    assert audio.dtype == np.int16
    assert np.abs(audio.astype(np.int32)).max() > 3000  # normalised speech, not silence
    return len(audio) / engines.tts.sample_rate


async def test_piper_audio(engines: Engines) -> None:
    assert engines.tts.sample_rate == 22050
    assert engines.tts.voices() == ["en_US-joe-medium"]
    short = await synth_seconds(engines, "Hello there.")
    long = await synth_seconds(engines, "Hello there. The weather in Paris is sunny and warm today.")
    assert 0.4 < short < long
    # Piper's durations are sampled (noise_w), so compare speeds far enough apart to beat the noise.
    fast = await synth_seconds(engines, "The weather in Paris is sunny and warm today.", speed=2.0)
    normal = await synth_seconds(engines, "The weather in Paris is sunny and warm today.")
    assert fast < normal * 0.8, (fast, normal)


async def test_piper_chunk_per_sentence(engines: Engines) -> None:
    chunks = await collect(
        engines.tts.synthesize("First sentence here. Second one follows.", SynthesisOptions(), "t-tts")
    )
    assert len(chunks) == 2


async def test_piper_empty_text_yields_nothing(engines: Engines) -> None:
    for text in ("", "   ", "...", " , ! ?", "-"):
        assert await collect(engines.tts.synthesize(text, SynthesisOptions(), "t-tts")) == []


# ---------------------------------------------------------------- scripted stand-ins


def tone(seconds: float, amplitude: float) -> np.ndarray:
    """The shared tone as the engines' float32 at 16 kHz, `amplitude` a fraction of full scale."""
    return to_float(support_audio.tone(seconds, 16000, round(amplitude * 32768), freq=300))


async def test_scripted_vad(fresh_scripts: None) -> None:
    vad = ScriptedVAD()
    assert vad.name == "scripted-vad"
    audio = np.concatenate([np.zeros(1024, np.float32), tone(1024 / 16000, 0.1), tone(512 / 16000, 0.01)])
    assert await vad.stream().probabilities(audio, "s") == [0.0, 0.0, 1.0, 1.0, 0.0]


async def test_scripted_stt(fresh_scripts: None) -> None:
    stt = ScriptedSTT()
    assert stt.name == "scripted-stt"
    opts = TranscribeOptions()
    assert "".join(await collect(stt.transcribe(tone(0.5, 0.1), opts, "s"))) == "scripted transcript"
    assert await collect(stt.transcribe(np.zeros(8000, np.float32), opts, "s")) == []
    ScriptedSTT.script(["first one", "second"])
    assert await collect(stt.transcribe(np.zeros(10, np.float32), opts, "s")) == ["first", " one"]
    assert "".join(await collect(stt.transcribe(tone(0.5, 0.1), opts, "s"))) == "second"
    ScriptedSTT.fail_next = True
    with pytest.raises(EngineError) as err:
        await collect(stt.transcribe(tone(0.5, 0.1), opts, "s"))
    assert err.value.code == "stt_error"
    assert "".join(await collect(stt.transcribe(tone(0.5, 0.1), opts, "s"))) == "scripted transcript"


async def test_scripted_llm_text_and_length(fresh_scripts: None) -> None:
    llm = ScriptedLLM()
    assert llm.name == "scripted-llm"
    events = await collect(llm.stream(ChatRequest(messages=[{"role": "user", "content": "hi"}]), "s"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ScriptedLLM.reply
    assert events[-1] == Finish("stop", input_tokens=1, output_tokens=9)
    cut = await collect(llm.stream(ChatRequest(messages=[], max_tokens=3), "s"))
    assert "".join(e.text for e in cut if isinstance(e, TextDelta)) == "This is a"
    assert isinstance(cut[-1], Finish) and cut[-1].reason == "length" and cut[-1].output_tokens == 3


async def test_scripted_llm_tool_call(fresh_scripts: None) -> None:
    ScriptedLLM.tool_call = ScriptedToolCall("get_weather", {"city": "Paris"}, when="weather")
    llm = ScriptedLLM()
    ask = [{"role": "user", "content": "What's the weather?"}]
    events = await collect(llm.stream(ChatRequest(messages=ask, tools=[WEATHER_TOOL]), "s"))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "get_weather" and calls[0].call_id == "call_scripted_1"
    assert len(calls) == 4 and "".join(c.arguments for c in calls) == '{"city": "Paris"}'
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
    # No tools offered, or no match: plain text.
    for req in (ChatRequest(messages=ask), ChatRequest(messages=[{"role": "user", "content": "hi"}])):
        events = await collect(llm.stream(req, "s"))
        assert not any(isinstance(e, ToolCallDelta) for e in events)
    assert len(ScriptedLLM.calls) == 3


async def test_scripted_llm_fail_and_slow(fresh_scripts: None) -> None:
    llm = ScriptedLLM()
    ScriptedLLM.fail_next = True
    with pytest.raises(EngineError) as err:
        await collect(llm.stream(ChatRequest(messages=[]), "s"))
    assert err.value.code == "llm_error"
    assert isinstance((await collect(llm.stream(ChatRequest(messages=[]), "s")))[-1], Finish)
    ScriptedLLM.token_delay = 0.05
    gen = llm.stream(ChatRequest(messages=[]), "s")
    t = time.perf_counter()
    first = await gen.__anext__()
    await gen.aclose()
    assert isinstance(first, TextDelta) and 0.04 < time.perf_counter() - t < 0.5


async def test_scripted_tts(fresh_scripts: None) -> None:
    tts = ScriptedTTS()
    assert tts.name == "scripted-tts" and tts.sample_rate == 24000
    chunks = await collect(tts.synthesize("one two three", SynthesisOptions(), "s"))
    assert len(chunks) == 1
    audio = np.asarray(chunks[0])
    assert audio.dtype == np.int16 and len(audio) == 3 * 1440 and 0 < np.abs(audio).max() < 4000
    assert await collect(tts.synthesize(" ... ", SynthesisOptions(), "s")) == []
    assert ScriptedTTS.calls == ["one two three", " ... "]


async def test_scripted_registry() -> None:
    s = Settings(
        vad=VADSettings(engine="scripted"),
        stt=STTSettings(engine="scripted"),
        llm=LLMSettings(engine="scripted"),
        tts=TTSSettings(engine="scripted"),
    )
    e = await build_engines(s)
    assert e.ready
    assert {k: v["engine"] for k, v in e.status().items()} == {
        "vad": "scripted-vad",
        "turn": "smart_turn",
        "stt": "scripted-stt",
        "llm": "scripted-llm",
        "tts": "scripted-tts",
    }
