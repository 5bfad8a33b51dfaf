"""`livevox config check FILE`: checks beyond the settings' types, each naming the exact key.

Errors: a model file or folder that does not exist; a voice-map target the TTS engine does not
have (where the config alone tells its voices). Warnings: an environment variable named by
`api_key_env` / `headers_env` that is not set here (the server may run with another environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .settings import LLMSettings, Settings, STTSettings, TTSSettings


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    message: str
    severity: Literal["error", "warning"] = "error"


def _chain(stage: str, s: Any) -> list[tuple[str, Any]]:
    return [(stage, s)] + [(f"{stage}.fallback.{i}", f) for i, f in enumerate(s.fallback)]


def _path(key: str, value: str | None, folder: bool = False) -> list[Problem]:
    if not value:
        return []
    p = Path(value).expanduser()
    if folder and not p.is_dir():
        return [Problem(key, f"folder not found: {value}")]
    if not folder and not p.is_file():
        return [Problem(key, f"file not found: {value}")]
    return []


def _tts_voices(s: TTSSettings) -> list[str] | None:
    """The voices the primary TTS engine will have, when the config alone tells."""
    if s.engine == "openai" and s.openai is not None:
        return list(s.openai.voices)
    if s.engine == "scripted":
        return ["scripted"]
    if s.engine == "piper":
        return [Path(s.voice_path).stem] if s.voice_path else ["en_US-joe-medium"]
    return None


def problems(settings: Settings) -> list[Problem]:
    out: list[Problem] = []
    for key, s in _chain("stt", settings.stt):
        assert isinstance(s, STTSettings)
        if s.engine == "faster-whisper":
            out += _path(f"{key}.model_dir", s.model_dir, folder=True)
    for key, s in _chain("llm", settings.llm):
        assert isinstance(s, LLMSettings)
        if s.engine == "llamacpp":
            out += _path(f"{key}.gguf_path", s.gguf_path)
    for key, s in _chain("tts", settings.tts):
        assert isinstance(s, TTSSettings)
        if s.engine == "piper":
            out += _path(f"{key}.voice_path", s.voice_path)
    for stage in ("stt", "llm", "tts"):
        for key, s in _chain(stage, getattr(settings, stage)):
            if s.engine == "openai" and s.openai is not None:
                out += [Problem(f"{key}.openai.{k}", why, "warning") for k, why in s.openai.missing_secrets()]
    voices = _tts_voices(settings.tts)
    vm = settings.tts.voice_map
    if voices is not None:
        for name, target in vm.map.items():
            if target not in voices:
                out.append(Problem(f"tts.voice_map.map.{name}", f"the TTS engine has no voice {target!r} "
                                   f"(it has {voices})"))
        if vm.default and vm.default not in voices:
            out.append(Problem("tts.voice_map.default",
                               f"the TTS engine has no voice {vm.default!r} (it has {voices})"))
    return out


def describe(s: Any) -> str:
    names = [s.engine] + [f.engine for f in s.fallback]
    return " -> ".join(names)
