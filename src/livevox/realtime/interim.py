"""Voice Live `interim_response`: a short spoken filler while the answer is late or a tool runs.

What the client sets (session or `response.create`), normalized here:
`{"type": "static_interim_response" | "llm_interim_response", "triggers": ["latency", "tool"],
"latency_threshold_ms": int, "texts": [...]}` (static) or `{..., "instructions", "max_completion_tokens",
"model"}` (LLM). The hyphenated spellings of the reference tables are accepted; the underscore form is
what the session echoes.

On the wire the filler is an assistant message of its own inside the waiting response (its own
`output_index`), before the answer's message: clients play every `response.audio.delta`, so it is
heard with no client change, and it never needs a second `response.created`. It stays out of what
the LLM sees (the model would otherwise repeat it).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import ProtocolError

STATIC = "static_interim_response"
LLM = "llm_interim_response"
TRIGGERS = ("latency", "tool")
DEFAULT_THRESHOLD_MS = 2000
MAX_THRESHOLD_MS = 60_000
DEFAULT_MAX_TOKENS = 50
MAX_TEXTS = 64
MAX_TEXT_CHARS = 500
#: What the LLM filler is asked for when the client gave no instructions.
DEFAULT_INSTRUCTIONS = ("Reply with one short filler phrase (at most eight words) that tells the user you are "
                        "working on their request, such as 'Let me check that for you.' Say nothing else.")
#: The static filler when the client gave no texts.
DEFAULT_TEXTS = ("One moment, please.", "Let me check that.", "Just a second.")

_KEYS = {
    STATIC: {"type", "triggers", "latency_threshold_ms", "texts"},
    LLM: {"type", "triggers", "latency_threshold_ms", "instructions", "max_completion_tokens", "model"},
}


def _err(code: str, message: str, param: str) -> ProtocolError:
    return ProtocolError(code, message, param=param)


def normalize(value: Any, param: str) -> dict[str, Any] | None:
    """The client's `interim_response` checked and completed with its defaults; None turns it off."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _err("invalid_type", f"'{param}' must be an object or null", param)
    kind = value.get("type")
    kind = kind.replace("-", "_") if isinstance(kind, str) else kind
    if kind not in _KEYS:
        raise _err("invalid_value", f"'{param}.type' must be 'static_interim_response' or 'llm_interim_response'",
                   f"{param}.type")
    for key in value:
        if key not in _KEYS[kind]:
            raise _err("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}")
    triggers = value.get("triggers", ["latency"])
    if not isinstance(triggers, list) or not triggers or any(t not in TRIGGERS for t in triggers):
        raise _err("invalid_value", f"'{param}.triggers' must be a non-empty array of 'latency' and 'tool'",
                   f"{param}.triggers")
    threshold = value.get("latency_threshold_ms", DEFAULT_THRESHOLD_MS)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= MAX_THRESHOLD_MS:
        raise _err("invalid_value", f"'{param}.latency_threshold_ms' must be an integer 0-{MAX_THRESHOLD_MS}",
                   f"{param}.latency_threshold_ms")
    out: dict[str, Any] = {"type": kind, "triggers": list(dict.fromkeys(triggers)),
                           "latency_threshold_ms": threshold}
    if kind == STATIC:
        texts = value.get("texts", list(DEFAULT_TEXTS))
        if (not isinstance(texts, list) or not texts or len(texts) > MAX_TEXTS
                or any(not isinstance(t, str) or not t.strip() or len(t) > MAX_TEXT_CHARS for t in texts)):
            raise _err("invalid_value", f"'{param}.texts' must be 1-{MAX_TEXTS} non-empty strings of at most "
                       f"{MAX_TEXT_CHARS} characters", f"{param}.texts")
        out["texts"] = texts
        return out
    instructions = value.get("instructions", DEFAULT_INSTRUCTIONS)
    if not isinstance(instructions, str) or len(instructions) > 4000:
        raise _err("invalid_value", f"'{param}.instructions' must be a string of at most 4000 characters",
                   f"{param}.instructions")
    mct = value.get("max_completion_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(mct, int) or isinstance(mct, bool) or not 1 <= mct <= 200:
        raise _err("invalid_value", f"'{param}.max_completion_tokens' must be an integer 1-200",
                   f"{param}.max_completion_tokens")
    model = value.get("model")
    if model is not None and not isinstance(model, str):
        raise _err("invalid_type", f"'{param}.model' must be a string", f"{param}.model")
    out.update({"instructions": instructions, "max_completion_tokens": mct})
    if model is not None:
        out["model"] = model  # echoed; the session's LLM engine writes the filler
    return out


def normalize_key(obj: dict[str, Any], param: str) -> None:
    """Accept `interim-response` (the reference tables' spelling) as `interim_response`, in place."""
    if "interim-response" in obj:
        if "interim_response" in obj:
            raise _err("invalid_value", f"'{param}.interim-response' and '{param}.interim_response' are the same "
                       "field; give one", f"{param}.interim-response")
        obj["interim_response"] = obj.pop("interim-response")
