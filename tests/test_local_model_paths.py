"""Local engines from user-configured model paths (any CTranslate2 Whisper folder, any GGUF file,
any Piper voice), with the STT settings (language, beam size, compute type, threads) honoured.

The "user's" models here are the embedded carriers' files linked under other names in a
temporary folder: real models, loaded through the user-path code, not the carrier path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from livevox.engines import model_files
from livevox.engines.base import ChatRequest, SynthesisOptions, TextDelta, TranscribeOptions
from livevox.engines.registry import Engines, build_engines
from livevox.settings import Settings, load_settings
from support_audio import fixture_f32


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engines(tmp_path_factory: Any) -> AsyncIterator[Engines]:
    root: Path = tmp_path_factory.mktemp("models")
    whisper = root / "my-whisper"
    whisper.mkdir()
    for f in model_files.whisper_model_dir(None).iterdir():
        (whisper / f.name).symlink_to(f)
    gguf = root / "my-chat-model.gguf"
    gguf.symlink_to(model_files.smollm2_gguf(None))
    onnx, config = model_files.piper_voice(None)
    voice = root / "en_US-custom-medium.onnx"
    voice.symlink_to(onnx)
    (root / "en_US-custom-medium.onnx.json").symlink_to(config)
    settings: Settings = load_settings(
        None, vad={"engine": "scripted"},
        stt={"model_dir": str(whisper), "language": "en", "beam_size": 2, "compute_type": "float32", "threads": 1},
        llm={"gguf_path": str(gguf), "n_ctx": 1024, "threads": 1},
        tts={"voice_path": str(voice)})
    e = await build_engines(settings)
    yield e
    await e.close()


class _Spy:
    """Records the keyword arguments faster-whisper's transcribe() gets, and delegates."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.model = model.model
        self.calls: list[dict[str, Any]] = []

    def transcribe(self, audio: Any, **kw: Any) -> Any:
        self.calls.append(kw)
        return self._model.transcribe(audio, **kw)


async def test_whisper_from_a_folder_with_its_settings(engines: Engines) -> None:
    stt: Any = engines.stt
    assert stt.model_file.endswith("my-whisper")
    assert stt._model.model.compute_type == "float32"
    spy = _Spy(stt._model)
    stt._model = spy
    try:
        audio = fixture_f32("question_capital.wav")
        text = "".join([p async for p in stt.transcribe(audio, TranscribeOptions(), "t")])
    finally:
        stt._model = spy._model
    assert "capital" in text.lower() and "france" in text.lower(), text
    assert spy.calls[0]["beam_size"] == 2 and spy.calls[0]["language"] == "en"


async def test_gguf_from_any_path(engines: Engines) -> None:
    llm: Any = engines.llm
    assert llm.model_file == "my-chat-model.gguf" and llm.embedded is False
    req = ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0)
    text = "".join([e.text async for e in llm.stream(req, "t") if isinstance(e, TextDelta)])
    assert text.strip()


async def test_piper_voice_from_any_path(engines: Engines) -> None:
    assert engines.tts.voices() == ["en_US-custom-medium"]
    assert engines.voices.resolve("alloy") == "en_US-custom-medium"  # the default map: the engine's voice
    chunks = [c async for c in engines.tts.synthesize("Hello there.", SynthesisOptions(), "t")]
    assert sum(len(c) for c in chunks) > engines.tts.sample_rate * 0.3
