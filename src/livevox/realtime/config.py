"""The session configuration in its canonical (Voice Live / OpenAI beta) shape.

Dialects translate to and from this shape; the session only ever sees this one. Validation
names the exact `param` at fault, and an invalid update leaves the config untouched.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.errors import ProtocolError, unsupported
from . import interim, transcription_options, truncation
from .mcp_tools import validate_mcp_tool

InputFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
#: Output format name -> (codec, rate). Hyphenated names are what older SDKs sent.
OUTPUT_FORMATS: dict[str, tuple[str, int]] = {
    "pcm16": ("pcm16", 24000),
    "g711_ulaw": ("g711_ulaw", 8000),
    "g711_alaw": ("g711_alaw", 8000),
}
for _rate in (8000, 16000, 22050, 24000, 44100, 48000):
    OUTPUT_FORMATS[f"pcm16_{_rate}hz"] = ("pcm16", _rate)
    OUTPUT_FORMATS[f"pcm16-{_rate}hz"] = ("pcm16", _rate)
INPUT_RATES = (8000, 16000, 24000, 44100, 48000)

TurnType = Literal[
    "server_vad",
    "semantic_vad",
    "azure_semantic_vad",
    "azure_semantic_vad_en",
    "azure_semantic_vad_multilingual",
]
#: The turn detections that end turns by the end-of-turn model (all but server_vad).
SEMANTIC_TYPES: tuple[str, ...] = get_args(TurnType)[1:]

_Lenient = ConfigDict(extra="allow")


class EndOfUtterance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["semantic_detection_v1", "semantic_detection_v1_en",
                   "semantic_detection_v1_multilingual"] | None = None
    threshold_level: Literal["low", "medium", "high", "default"] | None = None
    timeout_ms: int | None = Field(None, ge=0, le=10000)


class TurnDetection(BaseModel):
    """Every field a turn detection may carry; anything else is an unknown_parameter."""

    model_config = ConfigDict(extra="forbid")
    type: TurnType = "server_vad"
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(None, ge=0, le=10000)
    silence_duration_ms: int | None = Field(None, ge=0, le=10000)
    speech_duration_ms: int | None = Field(None, ge=0, le=10000)
    create_response: bool = True
    interrupt_response: bool = True
    auto_truncate: bool = False
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    remove_filler_words: bool | None = None
    #: OpenAI GA, server_vad only: after an answer has played and this much silence, the server
    #: commits the silence and answers (`input_audio_buffer.timeout_triggered`; idle_timeout.py).
    idle_timeout_ms: int | None = Field(None, gt=0, strict=True)
    end_of_utterance_detection: EndOfUtterance | None = None
    #: Voice Live semantic VAD: the languages to expect. The end-of-turn model (Smart Turn v3)
    #: is multilingual, so it needs no selection; the codes are checked and echoed.
    languages: list[Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]] | None = Field(
        None, max_length=10)
    #: Voice Live: appended to an assistant transcript that an interruption cut (auto_truncate).
    appended_text_after_truncation: str | None = Field(None, max_length=200)


class Transcription(BaseModel):
    model_config = _Lenient
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    #: Voice Live: words and phrases that bias recognition (transcription_options.py).
    phrase_list: list[str] | None = None
    custom_speech: dict[str, str] | None = None


class FunctionTool(BaseModel):
    model_config = _Lenient
    type: str = "function"
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class TypedObject(BaseModel):
    model_config = _Lenient
    type: str


class SessionModel(BaseModel):
    """Validates a full canonical session dict."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    modalities: list[Literal["text", "audio", "animation", "avatar"]] = ["text", "audio"]
    instructions: str = ""
    voice: str | dict[str, Any] = "alloy"
    input_audio_format: InputFormat = "pcm16"
    input_audio_sampling_rate: int = 24000
    output_audio_format: str = "pcm16"
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)
    input_audio_transcription: Transcription | None = None
    input_audio_noise_reduction: TypedObject | None = None
    input_audio_echo_cancellation: TypedObject | None = None
    #: Function tools (checked as `FunctionTool`) and MCP tools (`mcp_tools.validate_mcp_tool`), by `merge_update`.
    tools: list[dict[str, Any]] = []
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    max_response_output_tokens: int | Literal["inf"] = "inf"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    animation: dict[str, Any] | None = None
    output_audio_timestamp_types: list[str] | None = None
    avatar: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    interim_response: Any = None  # checked by interim.normalize
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    tracing: Any = None
    #: OpenAI GA `truncation` (both dialects): "auto", "disabled" or a retention_ratio object.
    truncation: str | dict[str, Any] = "auto"

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str]) -> list[str]:
        if "audio" in v and "text" not in v:
            raise ValueError("audio-only modalities are not allowed; use ['text', 'audio']")
        if not v:
            raise ValueError("modalities must not be empty")
        return v

    @field_validator("output_audio_format")
    @classmethod
    def _out_fmt(cls, v: str) -> str:
        if v not in OUTPUT_FORMATS:
            raise ValueError(f"unsupported output_audio_format {v!r}; one of {sorted(OUTPUT_FORMATS)}")
        return v

    @field_validator("input_audio_sampling_rate")
    @classmethod
    def _in_rate(cls, v: int) -> int:
        if v not in INPUT_RATES:
            raise ValueError(f"input_audio_sampling_rate must be one of {list(INPUT_RATES)}")
        return v

    @field_validator("max_response_output_tokens")
    @classmethod
    def _max_tokens(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 4096:
            raise ValueError("max_response_output_tokens must be 1-4096 or 'inf'")
        return v

    @field_validator("voice")
    @classmethod
    def _voice(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(v, dict) and not isinstance(v.get("name", v.get("id")), str):
            raise ValueError("a voice object needs a string 'name'")
        if isinstance(v, str) and not v:
            raise ValueError("voice must not be empty")
        return v


#: Read-only session fields clients sometimes echo back; accepted and ignored.
_READ_ONLY = {"id", "object", "expires_at", "client_secret", "agent", "type"}
_KNOWN = set(SessionModel.model_fields) | _READ_ONLY


def turn_defaults(td: dict[str, Any], api_version: str | None) -> dict[str, Any]:
    """Fill a turn_detection object with the concrete defaults for its type and api-version."""
    new_defaults = (api_version or "9999") >= "2026-04-10"
    semantic = td.get("type", "server_vad").startswith("azure_semantic")
    defaults: dict[str, Any] = {
        "threshold": 0.5,
        "prefix_padding_ms": (420 if new_defaults else 300) if semantic else (400 if new_defaults else 300),
        "silence_duration_ms": 500,
        "speech_duration_ms": 80 if semantic else 200,
    }
    if semantic:
        defaults["remove_filler_words"] = False
    if td.get("type") == "semantic_vad":
        defaults["eagerness"] = "auto"
    out = dict(td)
    for k, v in defaults.items():
        if out.get(k) is None:
            out[k] = v
    return out


def default_session(model: str | None, api_version: str | None, instructions: str) -> dict[str, Any]:
    cfg = SessionModel(model=model, instructions=instructions).model_dump(mode="json")
    cfg["turn_detection"] = turn_defaults(cfg["turn_detection"], api_version)
    return _strip_none_objects(cfg)


def _strip_none_objects(cfg: dict[str, Any]) -> dict[str, Any]:
    td = cfg.get("turn_detection")
    if isinstance(td, dict):
        cfg["turn_detection"] = {k: v for k, v in td.items() if v is not None}
    for key in ("input_audio_transcription",):
        obj = cfg.get(key)
        if isinstance(obj, dict):
            cfg[key] = {k: v for k, v in obj.items() if v is not None}
    return cfg


#: pydantic labels union branches in error locations; they are not part of the client's path.
_BRANCH_LABELS = ("str", "int", "float", "bool", "dict[", "list[", "literal[", "function-", "union[")


def validation_error(exc: ValidationError, prefix: str = "session") -> ProtocolError:
    err = exc.errors()[0]
    param = prefix
    for p in err["loc"]:
        if isinstance(p, int):
            param += f"[{p}]"
        elif not str(p).startswith(_BRANCH_LABELS):
            param += f".{p}"
    if err["type"] == "extra_forbidden":
        return ProtocolError("unknown_parameter", f"Unknown parameter: '{param}'.", param=param)
    msg = err["msg"].removeprefix("Value error, ")
    return ProtocolError("invalid_value", f"Invalid value for '{param}': {msg}", param=param)


def _tool(tool: Any, param: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ProtocolError("invalid_type", f"'{param}' must be an object", param=param)
    kind = tool.get("type", "function")
    if kind == "mcp":
        return validate_mcp_tool(tool, param)
    if kind != "function":
        raise unsupported(f"Tools of type {kind!r} (hosted tools)", f"{param}.type")
    try:
        return FunctionTool.model_validate(tool).model_dump(mode="json")
    except ValidationError as exc:
        raise validation_error(exc, param) from None


def merge_update(
    current: dict[str, Any], update: Any, api_version: str | None, prefix: str = "session"
) -> tuple[dict[str, Any], list[str]]:
    """Apply a `session.update` to `current`. Returns (new config, warnings). Raises ProtocolError."""
    if not isinstance(update, dict):
        raise ProtocolError("invalid_type", f"'{prefix}' must be an object", param=prefix)
    warnings: list[str] = []
    merged = copy.deepcopy(current)
    if "interim-response" in update:
        update = dict(update)
        interim.normalize_key(update, prefix)
    for key, value in update.items():
        if key not in _KNOWN:
            raise ProtocolError(
                "unknown_parameter", f"Unknown parameter: '{prefix}.{key}'.", param=f"{prefix}.{key}"
            )
        if key in _READ_ONLY:
            continue
        if key == "model" and value is not None and value != current.get("model"):
            # The model is chosen on the URL and cannot change (Voice Live rule); ignore quietly.
            continue
        merged[key] = value
    # G.711 is always 8 kHz; the rate follows the format unless the client gave both.
    if "input_audio_format" in update and update["input_audio_format"] in ("g711_ulaw", "g711_alaw"):
        merged["input_audio_sampling_rate"] = 8000
    elif "input_audio_format" in update and "input_audio_sampling_rate" not in update:
        if merged.get("input_audio_sampling_rate") == 8000:
            merged["input_audio_sampling_rate"] = 24000
    if "truncation" in update:
        try:
            truncation.validate(update["truncation"], f"{prefix}.truncation")
        except truncation.PolicyError as exc:
            raise ProtocolError("invalid_value", f"Invalid value for '{exc.param}': {exc}", param=exc.param) from None
    if "input_audio_transcription" in update:
        merged["input_audio_transcription"] = transcription_options.validate(
            update["input_audio_transcription"], f"{prefix}.input_audio_transcription")
    tools = update.get("tools")
    if isinstance(tools, list):
        merged["tools"] = [_tool(tool, f"{prefix}.tools[{i}]") for i, tool in enumerate(tools)]
    try:
        validated = SessionModel.model_validate(merged)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None
    if validated.avatar is not None:
        raise unsupported("Avatar output", f"{prefix}.avatar")
    if validated.include:
        raise unsupported(f"Extra transcription output ({', '.join(map(str, validated.include))})", f"{prefix}.include")
    if update.get("tracing") is not None:
        # OpenAI's own clients send it by default, so it is not refused; nothing is exported from it.
        warnings.append(f"{prefix}.tracing is accepted but livevox exports no OpenAI traces; its own "
                        "OpenTelemetry traces are set up on the server (docs/configuration.md).")
    if "modalities" in update and "avatar" in validated.modalities:
        raise unsupported("Avatar output", f"{prefix}.modalities")
    out = validated.model_dump(mode="json", exclude_unset=False)
    if "interim_response" in update:
        out["interim_response"] = interim.normalize(update["interim_response"], f"{prefix}.interim_response")
    # Keep the client's own spelling of extra keys inside objects (pydantic keeps extras).
    if out.get("turn_detection") is not None:
        td = out["turn_detection"]
        if "turn_detection" in update and isinstance(update["turn_detection"], dict):
            # Nested objects are replaced whole, then completed with their defaults.
            td = {**{k: v for k, v in td.items() if v is not None}}
            if isinstance(td.get("end_of_utterance_detection"), dict):
                td["end_of_utterance_detection"] = {
                    k: v for k, v in td["end_of_utterance_detection"].items() if v is not None}
        out["turn_detection"] = turn_defaults(td, api_version)
        if td.get("idle_timeout_ms") is not None and td.get("type", "server_vad") != "server_vad":
            raise ProtocolError("invalid_value", f"Invalid value for '{prefix}.turn_detection.idle_timeout_ms': "
                                "the idle timeout is only supported with turn_detection.type 'server_vad'",
                                param=f"{prefix}.turn_detection.idle_timeout_ms")
    ec = out.get("input_audio_echo_cancellation")
    if ec is not None:
        source, channels = ec.get("reference_source", "server"), ec.get("channels", 1)
        if ec.get("type") != "server_echo_cancellation":
            raise ProtocolError("invalid_value", "input_audio_echo_cancellation.type must be "
                                "'server_echo_cancellation'", param=f"{prefix}.input_audio_echo_cancellation.type")
        if source == "server" and channels != 1:
            raise ProtocolError("invalid_ec_channels_requires_client", "channels 2 needs reference_source 'client'",
                                param=f"{prefix}.input_audio_echo_cancellation.channels")
        if source == "client":
            if channels != 2:
                raise ProtocolError("invalid_ec_reference_channels", "reference_source 'client' needs channels 2",
                                    param=f"{prefix}.input_audio_echo_cancellation.channels")
            raise unsupported("Client-supplied echo reference (stereo input)",
                              f"{prefix}.input_audio_echo_cancellation.reference_source")
    nr = out.get("input_audio_noise_reduction")
    if nr is not None and nr.get("type") not in ("azure_deep_noise_suppression", "near_field", "far_field"):
        raise ProtocolError("invalid_value", "input_audio_noise_reduction.type must be azure_deep_noise_suppression, "
                            "near_field or far_field", param=f"{prefix}.input_audio_noise_reduction.type")
    anim = out.get("animation")
    if anim is not None and "blendshapes" in (anim.get("outputs") or ["blendshapes"]) and "animation" in update:
        warnings.append("Animation blendshapes are not produced by livevox; only viseme_id is "
                        f"({prefix}.animation.outputs).")
    return _strip_none_objects(out), warnings

