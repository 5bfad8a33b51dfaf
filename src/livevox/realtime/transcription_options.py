"""`input_audio_transcription`: which model names are accepted, the language (one code or a comma
list for auto-detect), and the recognizer hints (`prompt`, Voice Live `phrase_list`).

Every model name a client may send runs the one configured STT engine; the session echoes the
name the client sent. The choices (docs/configuration.md, "Input transcription"):

- an unknown model name is rejected (`invalid_value`), so a typo is not silently accepted;
- `phrase_list` characters outside Azure's allowed set are removed (as Azure Speech does), phrases
  left empty are dropped; more than `MAX_PHRASES` phrases or a phrase over `MAX_PHRASE_CHARS` is
  rejected;
- OpenAI GA `keywords` is treated as a phrase list and `languages` as a candidate list;
- `custom_speech` is rejected (`unsupported_feature`): there are no custom models here.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.errors import ProtocolError, unsupported
from ..engines.base import TranscribeOptions

#: OpenAI GA (openai 3.54 `AudioTranscription.model`) and Voice Live names.
TRANSCRIPTION_MODELS = frozenset({
    "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize",
    "gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper",
    "azure-speech", "mai-transcribe", "mai-transcribe-1", "mai-transcribe-2",
})
#: Dated snapshots of the names above ("gpt-4o-mini-transcribe-2025-12-15").
_DATED = re.compile(r"^(?P<base>[a-z0-9-]+?)-\d{4}-\d{2}-\d{2}$")

#: Azure: "keep it under 500 phrases; beyond that, use custom speech".
MAX_PHRASES = 500
MAX_PHRASE_CHARS = 200
#: Azure's allowed punctuation besides letters, digits and whitespace.
_PHRASE_PUNCT = set("+-$:(){}_.?@\\’&#%^*`<>;/")

#: Whisper's language detection picks among at most this many candidates.
MAX_LANGUAGES = 10
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def known_model(name: str) -> bool:
    if name in TRANSCRIPTION_MODELS:
        return True
    m = _DATED.match(name)
    return m is not None and m.group("base") in TRANSCRIPTION_MODELS


def clean_phrase(phrase: str) -> str:
    kept = "".join(ch if ch.isalnum() or ch.isspace() or ch in _PHRASE_PUNCT else " " for ch in phrase)
    return " ".join(kept.split())


def languages(value: str | None) -> list[str]:
    """ISO-639-1 codes of a language field: "en-US" -> ["en"], "en,zh-CN" -> ["en", "zh"]."""
    if not value:
        return []
    out: list[str] = []
    for part in value.split(","):
        code = part.strip().split("-")[0].lower()
        if code and code not in out:
            out.append(code)
    return out


#: What `input_audio_transcription` may carry (Voice Live, beta, and GA's `audio.input.transcription`).
TRANSCRIPTION_FIELDS = frozenset({"model", "language", "prompt", "phrase_list", "custom_speech", "keywords",
                                  "languages", "delay"})


def validate(tr: Any, param: str) -> dict[str, Any] | None:
    """Check a canonical `input_audio_transcription` object; returns it with `phrase_list`
    cleaned. Raises ProtocolError naming the field at fault."""
    if tr is None:
        return None
    if not isinstance(tr, dict):
        raise ProtocolError("invalid_type", f"'{param}' must be an object or null", param=param)
    out = dict(tr)
    for key in out:
        if key not in TRANSCRIPTION_FIELDS:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    if out.get("delay") is not None:
        raise unsupported("A streaming recognizer's delay setting (gpt-realtime-whisper)", f"{param}.delay")
    model = out.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise ProtocolError("invalid_type", f"'{param}.model' must be a string", param=f"{param}.model")
        if not known_model(model):
            raise ProtocolError(
                "invalid_value",
                f"Invalid value for '{param}.model': {model[:64]!r}; expected one of "
                f"{', '.join(sorted(TRANSCRIPTION_MODELS))}",
                param=f"{param}.model")
    lang = out.get("language")
    if lang is not None:
        if not isinstance(lang, str):
            raise ProtocolError("invalid_type", f"'{param}.language' must be a string", param=f"{param}.language")
        parts = [p.strip() for p in lang.split(",")]
        if len(parts) > MAX_LANGUAGES or not all(_LANG.match(p) for p in parts):
            raise ProtocolError(
                "invalid_value",
                f"Invalid value for '{param}.language': expected a BCP-47 or ISO-639-1 code, or a comma "
                f"list of at most {MAX_LANGUAGES} (e.g. 'en' or 'en-US,de-DE')",
                param=f"{param}.language")
    prompt = out.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ProtocolError("invalid_type", f"'{param}.prompt' must be a string", param=f"{param}.prompt")
    if out.get("custom_speech") not in (None, {}):  # an empty mapping asks for nothing
        raise unsupported("Custom speech models", f"{param}.custom_speech")
    # `keywords` is OpenAI GA's own phrase list (gpt-transcribe); both bias the same way.
    for key in ("phrase_list", "keywords"):
        if out.get(key) is not None:
            out[key] = _phrase_list(out[key], f"{param}.{key}")
    langs = out.get("languages")
    if langs is not None:
        if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
            raise ProtocolError("invalid_type", f"'{param}.languages' must be an array of strings",
                                param=f"{param}.languages")
        if len(langs) > MAX_LANGUAGES or not all(_LANG.match(x.strip()) for x in langs):
            raise ProtocolError("invalid_value", f"Invalid value for '{param}.languages': at most "
                                f"{MAX_LANGUAGES} BCP-47 or ISO-639-1 codes", param=f"{param}.languages")
    return out


def _phrase_list(phrases: Any, param: str) -> list[str]:
    if not isinstance(phrases, list):
        raise ProtocolError("invalid_type", f"'{param}' must be an array of strings", param=param)
    if len(phrases) > MAX_PHRASES:
        raise ProtocolError("invalid_value", f"Invalid value for '{param}': at most {MAX_PHRASES} phrases "
                            f"(got {len(phrases)})", param=param)
    out: list[str] = []
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str):
            raise ProtocolError("invalid_type", f"'{param}[{i}]' must be a string", param=f"{param}[{i}]")
        if len(phrase) > MAX_PHRASE_CHARS:
            raise ProtocolError("invalid_value", f"Invalid value for '{param}[{i}]': a phrase has at most "
                                f"{MAX_PHRASE_CHARS} characters", param=f"{param}[{i}]")
        cleaned = clean_phrase(phrase)
        if cleaned:
            out.append(cleaned)
    return out


def transcribe_options(tr: dict[str, Any] | None, default_language: str | None) -> TranscribeOptions:
    """What the STT engine is asked for a turn under this session's settings."""
    tr = tr or {}
    langs = (languages(tr.get("language")) or languages(",".join(tr.get("languages") or []))
             or languages(default_language))
    return TranscribeOptions(
        language=langs[0] if len(langs) == 1 else None,
        languages=tuple(langs) if len(langs) > 1 else (),
        prompt=tr.get("prompt") or None,
        phrases=tuple([*(tr.get("phrase_list") or ()), *(tr.get("keywords") or ())]),
        model=tr.get("model"),
    )
