"""`session.truncation`: which part of the conversation the LLM sees when it all does not fit.

The OpenAI GA shape: `"auto"` (the default), `"disabled"`, or
`{"type": "retention_ratio", "retention_ratio": 0.0-1.0, "token_limits": {"post_instructions": N}}`.

Only the request to the LLM is cut; the conversation the client holds keeps every item. The
leading system messages (the instructions) and the latest turn always stay. A cut drops the
oldest messages until the rest uses `retention_ratio` of the allowed tokens, and then stays where
it is, turn after turn, until the conversation overflows again: the prompt's prefix is stable
between cuts, so llama.cpp's prompt cache keeps serving it. `auto` cuts the same way, with the
server's `llm.auto_retention_ratio`.

Everything here is pure: token counts come in, the messages to send come out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

#: Message roles that must not start what the LLM sees: a tool result without its call.
_NOT_A_START = ("tool",)


@dataclass(frozen=True, slots=True)
class Policy:
    kind: Literal["auto", "disabled", "retention_ratio"]
    retention_ratio: float
    #: `token_limits.post_instructions`: a tighter cap on the conversation after the instructions.
    post_instructions: int | None = None


class PolicyError(ValueError):
    """A `session.truncation` value that is not one of the GA shapes; `param` is the exact field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def validate(value: Any, prefix: str = "session.truncation") -> Any:
    """Check a client's `truncation` value (raises PolicyError naming the field); returns it as given."""
    if value in ("auto", "disabled"):
        return value
    if not isinstance(value, dict):
        raise PolicyError(prefix, "must be 'auto', 'disabled' or an object of type 'retention_ratio'")
    unknown = set(value) - {"type", "retention_ratio", "token_limits"}
    if unknown:
        raise PolicyError(f"{prefix}.{sorted(unknown)[0]}", "unknown parameter")
    if value.get("type") != "retention_ratio":
        raise PolicyError(f"{prefix}.type", "must be 'retention_ratio'")
    ratio = value.get("retention_ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
        raise PolicyError(f"{prefix}.retention_ratio", "must be a number from 0.0 to 1.0")
    limits = value.get("token_limits")
    if limits is not None:
        if not isinstance(limits, dict):
            raise PolicyError(f"{prefix}.token_limits", "must be an object")
        extra = set(limits) - {"post_instructions"}
        if extra:
            raise PolicyError(f"{prefix}.token_limits.{sorted(extra)[0]}", "unknown parameter")
        post = limits.get("post_instructions")
        if post is not None and (isinstance(post, bool) or not isinstance(post, int) or post < 1):
            raise PolicyError(f"{prefix}.token_limits.post_instructions", "must be a positive integer")
    return value


def policy(value: Any, auto_ratio: float) -> Policy:
    """The policy of a validated `truncation` value."""
    if value == "disabled":
        return Policy("disabled", 1.0)
    if isinstance(value, dict):
        post = (value.get("token_limits") or {}).get("post_instructions")
        return Policy("retention_ratio", float(value["retention_ratio"]), post)
    return Policy("auto", auto_ratio)


@dataclass(slots=True)
class Cut:
    """Where the last cut fell: how many conversation messages were dropped, and the first one
    kept (to find the same place again after items were added, deleted or aged out)."""

    dropped: int = 0
    anchor: dict[str, Any] | None = None


@dataclass(slots=True)
class Result:
    messages: list[dict[str, Any]]
    cut: Cut
    #: Prompt tokens of `messages` (plus the fixed part), as counted.
    tokens: int
    #: Tokens the prompt may use (after the answer's reserve and `post_instructions`).
    limit: int
    fits: bool
    dropped: int


def _head_len(messages: list[dict[str, Any]]) -> int:
    n = 0
    while n < len(messages) and messages[n].get("role") == "system":
        n += 1
    return n


def _latest_turn(conv: list[dict[str, Any]]) -> int:
    """Index in `conv` where the latest turn starts (its last user message, and a response's own
    instructions right before it, `conversation.late_position`); it always stays."""
    for i in range(len(conv) - 1, -1, -1):
        if conv[i].get("role") == "user":
            while i > 0 and conv[i - 1].get("role") in ("user", "system"):
                i -= 1
            return i
    return max(0, len(conv) - 1)


def _boundary(conv: list[dict[str, Any]], start: int, latest: int) -> int:
    """Move a cut forward so that it splits no tool call from its results, and starts at a user
    message where one follows (strict chat templates want user first)."""
    while start < latest and conv[start].get("role") in _NOT_A_START:
        start += 1
    for i in range(start, latest + 1):
        if conv[i].get("role") == "user":
            return i
    return start


def _find_anchor(conv: list[dict[str, Any]], cut: Cut) -> int | None:
    """The kept position of the last cut: the anchor message nearest its old index."""
    if cut.anchor is None or cut.dropped <= 0:
        return None
    hits = [i for i, m in enumerate(conv) if m == cut.anchor]
    if not hits:
        return None
    return min(hits, key=lambda i: (abs(i - cut.dropped), i > cut.dropped))


def truncate(
    messages: list[dict[str, Any]],
    counts: list[int],
    fixed_tokens: int,
    budget: int,
    pol: Policy,
    previous: Cut | None = None,
) -> Result:
    """What the LLM gets of `messages` (one token count each), given `budget` prompt tokens.

    `fixed_tokens` is what every request carries besides the messages (tool definitions).
    """
    previous = previous or Cut()
    head = _head_len(messages)
    conv, conv_counts = messages[head:], counts[head:]
    head_tokens = sum(counts[:head]) + fixed_tokens
    limit = budget - head_tokens
    if pol.post_instructions is not None:
        limit = min(limit, pol.post_instructions)
    total = sum(conv_counts)

    def result(start: int, cut: Cut) -> Result:
        kept = sum(conv_counts[start:])
        return Result(messages[:head] + conv[start:], cut, head_tokens + kept, head_tokens + limit,
                      kept <= limit, start)

    if pol.kind == "disabled" or total <= limit or not conv:
        return result(0, Cut())
    prev = _find_anchor(conv, previous)
    if prev is not None and sum(conv_counts[prev:]) <= limit:
        return result(prev, Cut(prev, conv[prev]))  # the last cut still fits: same prefix
    latest = _latest_turn(conv)
    target = pol.retention_ratio * limit
    start, kept = 0, total
    while start < latest and kept > target:
        kept -= conv_counts[start]
        start += 1
    start = _boundary(conv, start, latest)
    return result(start, Cut(start, conv[start]))


# ---------------------------------------------------------------- counting


def message_key(message: dict[str, Any]) -> str:
    """What a message's token count depends on."""
    return json.dumps(message, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class CountCache:
    """Token counts of messages seen in earlier turns: each turn only counts what is new."""

    counts: dict[str, int] = field(default_factory=dict)

    def count(self, messages: list[dict[str, Any]], counter: Callable[[dict[str, Any]], int]) -> list[int]:
        keys = [message_key(m) for m in messages]
        fresh = {k: self.counts[k] if k in self.counts else counter(m) for k, m in zip(keys, messages, strict=True)}
        self.counts = fresh  # only the current conversation's messages are kept
        return [fresh[k] for k in keys]


@dataclass(slots=True)
class State:
    """Per conversation: the last cut and the count cache."""

    cut: Cut = field(default_factory=Cut)
    cache: CountCache = field(default_factory=CountCache)
    #: >1 after the engine reported a longer prompt than counted: later counts are scaled up.
    scale: float = 1.0
    #: The context size an engine reported in an overflow error (for engines with none configured).
    window: int | None = None
