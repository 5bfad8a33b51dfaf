"""`response.create`: its validation, its parameters, and the context a response runs with.

The `response` object is checked with the same schema as `session.update` (`config.merge_update`
with the `response` prefix), so an error names the exact `response.*` parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import ProtocolError, unsupported
from ..engines.base import VoiceResolver
from . import interim
from .capabilities import wants_visemes, wants_word_timestamps
from .config import merge_update
from .response_params import ResponseContext, ResponseParams

if TYPE_CHECKING:
    from ..settings import Settings

#: Every field `response.create`'s `response` may carry, in all three dialects (after the GA
#: dialect's translation): each is implemented, or in REJECTED_RESPONSE_FIELDS. docs/protocol-fields.md
#: has the table; tests/test_field_audit.py walks it.
KNOWN_RESPONSE_FIELDS = frozenset({
    "modalities", "instructions", "voice", "output_audio_format", "tools", "tool_choice", "temperature",
    "max_output_tokens", "max_response_output_tokens", "conversation", "metadata", "input", "input_items",
    "append_input_items", "commit", "cancel_previous", "input_audio_format", "pre_generated_assistant_message",
    "reasoning_effort", "interim_response", "animation", "prompt", "tracing", "parallel_tool_calls",
    "invoke_input",
})
#: Accepted as null only: what each would need that livevox does not have.
REJECTED_RESPONSE_FIELDS = {
    "prompt": "Stored prompt templates (response.prompt)",
    "invoke_input": "Hosted-agent invocation (response.invoke_input)",
    "tracing": "OpenAI trace export per response (response.tracing)",
}
MAX_PRE_GENERATED_CHARS = 4000


def response_params(config: dict[str, Any], r: dict[str, Any],
                    additional_instructions: str | None = None, free_roles: bool = False) -> ResponseParams:
    """The response's parameters: `response.create`'s own, else the session's.

    `free_roles` (`llm.chat_roles` "free"): on the default conversation (no `input` of its own),
    the response's own instructions go after the conversation (`late_instructions`) and the
    session's stay first, so the prompt keeps the conversation's cached prefix. Otherwise they
    replace the session's."""
    c = config
    mot = r.get("max_output_tokens", r.get("max_response_output_tokens", c["max_response_output_tokens"]))
    on_conversation = "input" not in r and "input_items" not in r
    late = free_roles and on_conversation
    session = c["instructions"]
    instructions = r.get("instructions", session)
    after = ""
    if late and instructions and instructions != session:
        instructions, after = session, instructions
    if additional_instructions:  # added to the instructions, for this response only
        if late:
            after = _joined(after, additional_instructions)
        else:
            instructions = _joined(instructions, additional_instructions)
    tools = r.get("tools", c["tools"])
    in_conversation = r.get("conversation", "auto") != "none"
    return ResponseParams(
        modalities=r.get("modalities", c["modalities"]),
        instructions=instructions,
        late_instructions=after,
        voice=r.get("voice", c["voice"]),
        output_audio_format=r.get("output_audio_format", c["output_audio_format"]),
        tools=tools,
        tool_choice=r.get("tool_choice", c["tool_choice"]),
        temperature=r.get("temperature", c["temperature"]),
        max_output_tokens=mot,
        speed=c.get("speed", 1.0),
        in_conversation=in_conversation,
        extends_conversation=(not in_conversation and on_conversation and instructions == session
                              and tools == c["tools"]),
        metadata=r.get("metadata"),
        pre_generated=r.get("pre_generated_assistant_message"),
        reasoning_effort=r.get("reasoning_effort", c.get("reasoning_effort")),
        parallel_tool_calls=r.get("parallel_tool_calls", c.get("parallel_tool_calls", True)),
        interim=r["interim_response"] if "interim_response" in r else c.get("interim_response"),
        animation=r["animation"] if "animation" in r else c.get("animation"),
        discover_tools="tools" in r,
    )


def validate_response(config: dict[str, Any], raw: Any, api_version: str | None,
                      voices: VoiceResolver) -> dict[str, Any]:
    """`response.create`'s `response` object, checked against the same schema as `session.update`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_type", "'response' must be an object", param="response")
    r: dict[str, Any] = {**raw}
    interim.normalize_key(r, "response")
    for key in r:
        if key not in KNOWN_RESPONSE_FIELDS:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: 'response.{key}'.",
                                param=f"response.{key}")
    for key in sorted(REJECTED_RESPONSE_FIELDS):
        if r.get(key) is not None:
            raise unsupported(REJECTED_RESPONSE_FIELDS[key], f"response.{key}")
    if "input_audio_format" in r and r["input_audio_format"] != config["input_audio_format"]:
        raise unsupported("A response's own input_audio_format (input audio is the session's)",
                          "response.input_audio_format")
    probe: dict[str, Any] = {k: r[k] for k in ("modalities", "instructions", "voice", "output_audio_format", "tools",
                               "tool_choice", "temperature", "animation", "reasoning_effort",
                               "parallel_tool_calls") if k in r}
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
    for key in ("input", "input_items", "append_input_items"):
        if key in r and not isinstance(r[key], list):
            raise ProtocolError("invalid_type", f"'response.{key}' must be an array", param=f"response.{key}")
    if "input" in r and "input_items" in r:
        raise ProtocolError("invalid_value", "'response.input' and 'response.input_items' are the same field; "
                            "give one", param="response.input_items")
    for key in ("commit", "cancel_previous"):
        if key in r and not isinstance(r[key], bool):
            raise ProtocolError("invalid_type", f"'response.{key}' must be a boolean", param=f"response.{key}")
    if "interim_response" in r:
        r["interim_response"] = interim.normalize(r["interim_response"], "response.interim_response")
    if r.get("pre_generated_assistant_message") is not None:
        r["pre_generated_assistant_message"] = pre_generated_text(r["pre_generated_assistant_message"])
    return r


def pre_generated_text(msg: Any, param: str = "response.pre_generated_assistant_message") -> str:
    """The text of a `pre_generated_assistant_message` (an assistant message with one text part)."""
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_type", f"'{param}' must be an object", param=param)
    for key in msg:
        if key not in ("type", "role", "content", "id", "object", "status"):
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    if msg.get("type", "message") != "message":
        raise ProtocolError("invalid_value", f"'{param}.type' must be 'message'", param=f"{param}.type")
    if msg.get("role", "assistant") != "assistant":
        raise ProtocolError("invalid_value", f"'{param}.role' must be 'assistant'", param=f"{param}.role")
    content = msg.get("content")
    if not isinstance(content, list) or len(content) != 1 or not isinstance(content[0], dict):
        raise ProtocolError("invalid_value", f"'{param}.content' must hold exactly one text part",
                            param=f"{param}.content")
    part = content[0]
    if part.get("type", "text") not in ("text", "output_text") or not isinstance(part.get("text"), str):
        raise ProtocolError("invalid_value", f"'{param}.content[0]' must be {{\"type\": \"text\", \"text\": ...}}",
                            param=f"{param}.content[0]")
    text: str = part["text"].strip()
    if not text:
        raise ProtocolError("invalid_value", f"'{param}.content[0].text' must not be empty",
                            param=f"{param}.content[0].text")
    if len(text) > MAX_PRE_GENERATED_CHARS:
        raise ProtocolError("invalid_value", f"'{param}.content[0].text' is longer than {MAX_PRE_GENERATED_CHARS} "
                            "characters", param=f"{param}.content[0].text")
    return text


def response_context(config: dict[str, Any], settings: Settings, voices: VoiceResolver,
                     params: ResponseParams) -> ResponseContext:
    """What the session decides for one response, once, when it is created."""
    value = params.max_output_tokens
    return ResponseContext(
        max_tokens=settings.llm.max_tokens if value == "inf" else min(int(value), 4096),
        # The voice map (`[tts.voice_map]`); the result carries the voice's `rate` (engines/voices.py).
        voice=voices.resolve(params.voice, lenient=True),
        parallel_tool_calls=params.parallel_tool_calls,
        truncation=config.get("truncation", "auto"),
        auto_retention_ratio=settings.llm.auto_retention_ratio,
        first_clause_max_words=settings.tts.first_clause_max_words,
        word_timestamps=wants_word_timestamps(config),
        visemes=wants_visemes({"animation": params.animation}),
        max_audio_delta_bytes=settings.limits.max_outgoing_frame_bytes,
        pace_ahead_ms=round(settings.llm.pace_ahead_s * 1000),
        pace_resume_ms=round(min(settings.llm.pace_resume_s, settings.llm.pace_ahead_s) * 1000),
        yield_ahead_ms=round(settings.llm.yield_ahead_s * 1000),
        yield_resume_ms=round(min(settings.llm.yield_resume_s, settings.llm.yield_ahead_s) * 1000),
    )


def _joined(instructions: str, more: str) -> str:
    return f"{instructions}\n\n{more}" if instructions else more
