"""The voice map: the voice names clients send, translated into the TTS engine's voices.

Clients send OpenAI names (`"alloy"`, or `{"type": "openai", "name": "alloy"}`) or Voice Live
objects (`{"type": "azure-standard", "name": "en-US-AvaNeural", "rate": "1.2"}`). The map
(`[tts.voice_map]`) resolves a name in this order:

1. `map[name]`, when listed;
2. the name itself, when the engine has a voice of that name;
3. when `strict`: an `invalid_value` error (param `session.voice`) listing the available voices;
   otherwise `default`, or the engine's own default voice.

A Voice Live `rate` (0.5–1.5 as a number or numeric string, `+20%`/`-10%`, or `x-slow` ...
`x-fast`) becomes the resolved voice's `rate`, which multiplies the session's `speed`: Piper
turns it into its length scale, the OpenAI-compatible client sends it as `speed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..core.errors import ProtocolError
from ..engine_settings import VoiceMapSettings
from .base import SynthesisOptions

MIN_RATE, MAX_RATE = 0.5, 1.5
_NAMED_RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}


class EngineVoice(str):
    """An engine voice name, carrying the speaking rate the client asked for with it."""

    rate: float

    def __new__(cls, name: str, rate: float = 1.0) -> EngineVoice:
        obj = super().__new__(cls, name)
        obj.rate = rate
        return obj


def effective_speed(options: SynthesisOptions) -> float:
    """The speed to synthesise at: the session's `speed` times the voice's `rate`."""
    rate = options.voice.rate if isinstance(options.voice, EngineVoice) else 1.0
    return float(options.speed or 1.0) * rate


def parse_rate(value: Any, param: str = "session.voice.rate") -> float:
    """A Voice Live `rate` as a multiplier in 0.5–1.5."""
    rate: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        v = value.strip().lower()
        if v in _NAMED_RATES:
            rate = _NAMED_RATES[v]
        elif m := re.fullmatch(r"([+-]?\d+(?:\.\d+)?)%", v):
            rate = 1.0 + float(m.group(1)) / 100.0
        else:
            try:
                rate = float(v)
            except ValueError:
                rate = None
    if rate is None or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError("invalid_value", f"Invalid voice rate {value!r}: use a multiplier from {MIN_RATE} "
                            f"to {MAX_RATE} (e.g. \"1.2\"), a percentage (\"+20%\") or x-slow/slow/medium/fast/"
                            "x-fast.", param=param)
    return rate


def voice_name(voice: Any) -> str | None:
    if isinstance(voice, str):
        return voice
    if isinstance(voice, dict):
        name = voice.get("name", voice.get("id"))
        return name if isinstance(name, str) else None
    return None


class VoiceMap:
    def __init__(self, settings: VoiceMapSettings, engine_voices: Callable[[], list[str]]) -> None:
        self.settings = settings
        self._engine_voices = engine_voices

    @property
    def engine_voices(self) -> list[str]:
        return list(self._engine_voices())

    @property
    def default(self) -> str | None:
        if self.settings.default:
            return self.settings.default
        voices = self.engine_voices
        return voices[0] if voices else None

    def available(self) -> list[str]:
        """The names a client may send (in strict mode, the only ones)."""
        names = list(self.settings.map)
        names += [v for v in self.engine_voices if v not in names]
        return names

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for map targets and a default the engine does not have."""
        voices = self.engine_voices
        out: list[tuple[str, str]] = []
        for name, target in self.settings.map.items():
            if target not in voices:
                out.append((f"tts.voice_map.map.{name}", f"the TTS engine has no voice {target!r} (it has {voices})"))
        if self.settings.default and self.settings.default not in voices:
            out.append(("tts.voice_map.default",
                        f"the TTS engine has no voice {self.settings.default!r} (it has {voices})"))
        return out

    def resolve(self, voice: Any, param: str = "session.voice", *, lenient: bool = False) -> EngineVoice:
        """The engine voice for a client's voice. Raises `ProtocolError` (`invalid_value`) for an
        unknown name in strict mode or a bad `rate`, unless `lenient` (then: the default voice)."""
        rate = 1.0
        if isinstance(voice, dict) and voice.get("rate") is not None:
            try:
                rate = parse_rate(voice["rate"], f"{param}.rate")
            except ProtocolError:
                if not lenient:
                    raise
        name = voice_name(voice)
        target: str | None = None
        if name is not None and name in self.settings.map:
            target = self.settings.map[name]
        elif name is not None and name in self.engine_voices:
            target = name
        elif self.settings.strict and not lenient:
            raise ProtocolError(
                "invalid_value",
                f"Unknown voice {name!r}. Available voices: {', '.join(self.available())}.",
                param=param,
            )
        if target is None:
            target = self.default or ""
        return EngineVoice(target, rate)

    def check(self, voice: Any, param: str = "session.voice") -> None:
        self.resolve(voice, param)

    def listing(self) -> dict[str, Any]:
        """The body of `GET /v1/voices`."""
        voices = self.engine_voices
        default = self.default
        data: list[dict[str, Any]] = []
        for name, target in self.settings.map.items():
            data.append({"id": name, "object": "voice", "engine_voice": target, "default": False})
        for v in voices:
            if v not in self.settings.map:
                data.append({"id": v, "object": "voice", "engine_voice": v, "default": v == default})
        return {"object": "list", "data": data, "strict": self.settings.strict, "default_engine_voice": default}
