"""`response.create`: its validation, its parameters, and the context a response runs with.

The `response` object is checked with the same schema as `session.update` (`config.merge_update`
with the `response` prefix), so an error names the exact `response.*` parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import ProtocolError
from ..engines.base import VoiceResolver
from .capabilities import wants_visemes, wants_word_timestamps
from .config import merge_update
from .response_params import ResponseContext, ResponseParams

if TYPE_CHECKING:
    from ..settings import Settings


def response_params(config: dict[str, Any], r: dict[str, Any]) -> ResponseParams:
    """The response's parameters: `response.create`'s own, else the session's."""
    c = config
    mot = r.get("max_output_tokens", r.get("max_response_output_tokens", c["max_response_output_tokens"]))
    return ResponseParams(
        modalities=r.get("modalities", c["modalities"]),
        instructions=r.get("instructions", c["instructions"]),
        voice=r.get("voice", c["voice"]),
        output_audio_format=r.get("output_audio_format", c["output_audio_format"]),
        tools=r.get("tools", c["tools"]),
        tool_choice=r.get("tool_choice", c["tool_choice"]),
        temperature=r.get("temperature", c["temperature"]),
        max_output_tokens=mot,
        speed=c.get("speed", 1.0),
        in_conversation=r.get("conversation", "auto") != "none",
        metadata=r.get("metadata"),
        discover_tools="tools" in r,
    )


def validate_response(config: dict[str, Any], r: Any, api_version: str | None,
                      voices: VoiceResolver) -> dict[str, Any]:
    """`response.create`'s `response` object, checked against the same schema as `session.update`."""
    if r is None:
        return {}
    if not isinstance(r, dict):
        raise ProtocolError("invalid_type", "'response' must be an object", param="response")
    known = {"modalities", "instructions", "voice", "output_audio_format", "tools", "tool_choice",
             "temperature", "max_output_tokens", "max_response_output_tokens", "conversation",
             "metadata", "input", "commit", "cancel_previous", "input_audio_format",
             "pre_generated_assistant_message", "reasoning_effort", "interim_response", "animation",
             "append_input_items", "input_items", "prompt", "tracing", "parallel_tool_calls"}
    for key in r:
        if key not in known:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: 'response.{key}'.",
                                param=f"response.{key}")
    probe = {k: r[k] for k in ("modalities", "instructions", "voice", "output_audio_format", "tools",
                               "tool_choice", "temperature") if k in r}
    mot = r.get("max_output_tokens", r.get("max_response_output_tokens"))
    if mot is not None:
        probe["max_response_output_tokens"] = mot
    checked, _ = merge_update(config, probe, api_version, prefix="response")
    if "tools" in r:  # validated and completed (MCP defaults), as session tools are
        r = {**r, "tools": list(checked["tools"])}
    if "voice" in r:  # the voice map decides, as for session.voice (strict: the known ones only)
        voices.check(r["voice"], param="response.voice")
    conv = r.get("conversation", "auto")
    if conv not in ("auto", "none", None):
        raise ProtocolError("invalid_value", "'response.conversation' must be 'auto' or 'none'",
                            param="response.conversation")
    md = r.get("metadata")
    if md is not None:
        if not isinstance(md, dict) or len(md) > 16 or any(
                not isinstance(k, str) or len(k) > 64 or not isinstance(v, str) or len(v) > 512
                for k, v in md.items()):
            raise ProtocolError("invalid_value", "'response.metadata' must be at most 16 string pairs "
                                "(keys <= 64 chars, values <= 512 chars)", param="response.metadata")
    if "input" in r and not isinstance(r["input"], list):
        raise ProtocolError("invalid_type", "'response.input' must be an array", param="response.input")
    return dict(r)


def response_context(config: dict[str, Any], settings: Settings, voices: VoiceResolver,
                     params: ResponseParams) -> ResponseContext:
    """What the session decides for one response, once, when it is created."""
    value = params.max_output_tokens
    return ResponseContext(
        max_tokens=settings.llm.max_tokens if value == "inf" else min(int(value), 4096),
        # The voice map (`[tts.voice_map]`); the result carries the voice's `rate` (engines/voices.py).
        voice=voices.resolve(params.voice, lenient=True),
        parallel_tool_calls=config.get("parallel_tool_calls", True),
        truncation=config.get("truncation", "auto"),
        auto_retention_ratio=settings.llm.auto_retention_ratio,
        first_clause_max_words=settings.tts.first_clause_max_words,
        word_timestamps=wants_word_timestamps(config),
        visemes=wants_visemes(config),
        max_audio_delta_bytes=settings.limits.max_outgoing_frame_bytes,
    )
