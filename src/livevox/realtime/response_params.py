"""What one response runs with: the client's parameters and the session's decisions for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ResponseParams:
    modalities: list[str]
    #: The system message before the conversation.
    instructions: str
    voice: Any
    output_audio_format: str
    tools: list[dict[str, Any]]
    tool_choice: Any
    temperature: float
    max_output_tokens: int | str
    speed: float = 1.0
    in_conversation: bool = True
    metadata: dict[str, Any] | None = None
    #: `pre_generated_assistant_message`: the answer's text, spoken without the LLM
    pre_generated: str | None = None
    reasoning_effort: str | None = None
    parallel_tool_calls: bool = True
    #: `interim_response` (normalized, see interim.py), or None
    interim: dict[str, Any] | None = None
    #: `response.animation`, when the response sets its own (else the session's)
    animation: dict[str, Any] | None = None
    #: The response brought its own tools: its MCP servers are listed before the LLM starts.
    discover_tools: bool = False
    #: The response's own instructions, in a system message after the conversation
    #: (`llm.chat_roles` "free"; `instructions` then stays the session's, as cached).
    late_instructions: str = ""
    #: Out of band, but its prompt starts as the conversation's (the default conversation, the
    #: session's instructions and tools): it runs where the conversation is cached, cut as the
    #: conversation is, and the next turn finds the conversation still cached.
    extends_conversation: bool = False


@dataclass(frozen=True)
class ResponseContext:
    """What the session decided for one response, resolved once when the response is created."""

    max_tokens: int  # the answer's token cap (`max_output_tokens`, "inf" -> llm.max_tokens)
    voice: str | None  # the TTS engine's voice, through the voice map
    parallel_tool_calls: bool
    truncation: Any  # `session.truncation`
    auto_retention_ratio: float
    first_clause_max_words: int
    word_timestamps: bool
    visemes: bool
    max_audio_delta_bytes: int  # each audio delta's base64 stays under this
    pace_ahead_ms: int = 0  # llm.pace_ahead_s (0: no pacing)
    pace_resume_ms: int = 0
    yield_ahead_ms: int = 0  # llm.yield_ahead_s (0: never yields to other callers' first clauses)
    yield_resume_ms: int = 0
