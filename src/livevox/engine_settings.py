"""Settings of the remote (OpenAI-compatible) engines and of the voice map.

Kept apart from `settings.py`, which composes them into the per-stage tables:

    [llm]
    engine = "openai"
    [llm.openai]
    base_url = "http://10.0.0.7:8000/v1"
    model = "qwen2.5-7b-instruct"
    api_key_env = "VLLM_API_KEY"

Secrets never need to sit in the file: `api_key_env` names an environment variable, and
`headers_env` maps header names to environment variables. `LIVEVOX_LLM__OPENAI__API_KEY` works too.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class SecretMissing(RuntimeError):
    """An environment variable that a setting names is not set."""


class OpenAIEndpointSettings(BaseModel):
    """One OpenAI-compatible HTTP endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp's server,
    another livevox started with `--role engine`)."""

    model_config = ConfigDict(extra="forbid")

    #: The API root, `/v1` included (`http://gpu-box:8000/v1`). Azure form: the resource root
    #: (`https://NAME.openai.azure.com`) together with `api_version` and `deployment`.
    base_url: str
    #: The key, sent as `Authorization: Bearer KEY` (Azure form: the `api-key` header).
    api_key: SecretStr | None = None
    #: Read the key from this environment variable instead (wins over `api_key`).
    api_key_env: str | None = None
    #: The `model` sent in each request. Azure form: ignored by the service, the deployment decides.
    model: str = ""
    #: Extra HTTP headers sent with every request.
    headers: dict[str, str] = Field(default_factory=dict)
    #: Extra headers whose values come from environment variables: {header: ENV_VAR}.
    headers_env: dict[str, str] = Field(default_factory=dict)
    #: Azure OpenAI: `api-version` query parameter; with `deployment`, selects the Azure URL form
    #: `{base_url}/openai/deployments/{deployment}/...?api-version=...` and the `api-key` header.
    api_version: str | None = None
    deployment: str | None = None
    #: Seconds to open the TCP/TLS connection.
    connect_timeout: float = Field(3.0, gt=0)
    #: Seconds from sending the request to the first result (first token, transcript or audio).
    first_token_timeout: float = Field(15.0, gt=0)
    #: Seconds of silence allowed between two pieces of a stream after the first one.
    idle_timeout: float = Field(15.0, gt=0)
    #: Seconds for the whole request.
    total_timeout: float = Field(120.0, gt=0)
    #: Retries on connection failures, 429 and 5xx: only before anything was received.
    max_retries: int = Field(1, ge=0, le=5)
    #: Probe the endpoint with one small request before `/readyz` reports ready. Off: the gateway
    #: starts even while the engine server is down (and its first turns fail until it is up).
    warmup: bool = True

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _azure(self) -> OpenAIEndpointSettings:
        if (self.api_version is None) != (self.deployment is None):
            raise ValueError("the Azure form needs both 'api_version' and 'deployment'")
        return self

    @property
    def azure(self) -> bool:
        return self.deployment is not None

    def resolve_api_key(self) -> str | None:
        """The key: from `api_key_env` if set (raises `SecretMissing` if unset), else `api_key`."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise SecretMissing(f"environment variable {self.api_key_env} (api_key_env) is not set")
            return value
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def resolve_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        for name, env in self.headers_env.items():
            value = os.environ.get(env)
            if value is None:
                raise SecretMissing(f"environment variable {env} (headers_env.{name}) is not set")
            headers[name] = value
        return headers

    def missing_secrets(self) -> list[tuple[str, str]]:
        """(key, problem) for every named environment variable that is not set."""
        out = []
        if self.api_key_env and not os.environ.get(self.api_key_env):
            out.append(("api_key_env", f"environment variable {self.api_key_env} is not set"))
        for name, env in self.headers_env.items():
            if env not in os.environ:
                out.append((f"headers_env.{name}", f"environment variable {env} is not set"))
        return out


class OpenAILLMSettings(OpenAIEndpointSettings):
    """`/chat/completions`, streamed."""

    #: The request field that caps the answer: newer OpenAI models take only `max_completion_tokens`.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: Ask for token usage in the stream (`stream_options.include_usage`).
    include_usage: bool = True
    #: Extra JSON fields merged into each request body (e.g. vLLM's `top_k`).
    extra_body: dict[str, object] = Field(default_factory=dict)
    #: The model's context in tokens (prompt and answer together), for `session.truncation`.
    #: Unset: no limit is known, so only the server's own overflow error triggers a cut.
    context_window: int | None = Field(None, ge=64)


class OpenAISTTSettings(OpenAIEndpointSettings):
    """`/audio/transcriptions`: a WAV upload, multipart."""

    model: str = "whisper-1"
    #: Sent when the client names no language (falls back to `stt.language`).
    language: str | None = None
    #: Sent when the client gives no prompt.
    prompt: str | None = None
    first_token_timeout: float = Field(30.0, gt=0)


class OpenAITTSSettings(OpenAIEndpointSettings):
    """`/audio/speech` with `response_format: pcm`, streamed."""

    model: str = "tts-1"
    #: The engine voice used when the voice map gives none.
    voice: str = "alloy"
    #: The voices this endpoint offers (what the voice map may point at). Default: `[voice]`.
    voices: list[str] = Field(default_factory=list)
    #: The rate of the raw PCM the endpoint returns (OpenAI: 24000).
    sample_rate: int = Field(24000, ge=8000, le=48000)

    @model_validator(mode="after")
    def _voices(self) -> OpenAITTSSettings:
        if not self.voices:
            self.voices = [self.voice]
        elif self.voice not in self.voices:
            raise ValueError(f"the default voice {self.voice!r} is not in 'voices' {self.voices}")
        return self


class VoiceMapSettings(BaseModel):
    """How the voice names clients send become engine voices (see `livevox.engines.voices`)."""

    model_config = ConfigDict(extra="forbid")

    #: Client voice name -> engine voice (`alloy = "en_US-joe-medium"`, `"en-US-AvaNeural" = "amy"`).
    map: dict[str, str] = Field(default_factory=dict)
    #: The engine voice for names not in `map` (empty: the engine's own default voice).
    default: str | None = None
    #: True: only names in `map` and the engine's own voice names are accepted; any other gets an
    #: `error` (`invalid_value`, param `session.voice`) listing the available voices.
    strict: bool = False
