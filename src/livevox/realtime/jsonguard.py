"""Bounded JSON for everything a client sends (WebSocket and data-channel frames, HTTP bodies).

`loads` refuses, each with its own `ProtocolError` code, what `json.loads` would choke on or what
would hurt later: nesting deeper than the limit (the C decoder recurses, so depth is measured on
the raw text first), objects with too many keys, arrays with too many items, NaN/Infinity, and
text that is not UTF-8. The shape scan is O(n) and vectorized; frames with few brackets and
commas (nearly all of them, audio included) skip it after a few `str.count` calls.

Strings are valid JSON even with an unpaired UTF-16 surrogate (`"\\ud83d"`), but such a string
cannot be encoded as UTF-8, so it would fail later in a socket send, a log line or an engine.
`invalid_string_path` finds the first one; the session rejects the event and names the param.
`dumps_wire` is the last line of defence on the way out: it never yields text that fails to encode.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ProtocolError

#: A complete JSON string token (escapes included); used to blank strings out before the scan.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
#: Could the text hold a surrogate? An escape `\uD800`-`\uDFFF`, or a raw surrogate code point.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class JsonBounds:
    max_depth: int
    max_keys: int
    max_items: int

    @classmethod
    def of(cls, limits: Any) -> JsonBounds:
        """The bounds of a `settings.Limits`."""
        return cls(limits.max_json_depth, limits.max_json_keys, limits.max_json_items)


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:32]} is out of range")
    return value


def _check_shape(text: str, bounds: JsonBounds) -> None:
    commas = text.count(",")
    if (text.count("[") + text.count("{") <= bounds.max_depth
            and commas < min(bounds.max_keys, bounds.max_items)):
        return  # no container can break a bound
    b = np.frombuffer(_STRING.sub("0", text).encode("utf-8", "surrogatepass"), np.uint8)
    is_open = (b == ord("[")) | (b == ord("{"))
    is_close = (b == ord("]")) | (b == ord("}"))
    depth = np.cumsum(is_open.view(np.int8) - is_close.view(np.int8), dtype=np.int32)
    deepest = int(depth.max(initial=0))
    if deepest > bounds.max_depth:
        raise ProtocolError("nesting_too_deep", f"The JSON nests {deepest} levels deep; the limit is "
                            f"{bounds.max_depth} (limits.max_json_depth).")
    # Each comma belongs to the last container opened at its own depth: a stable sort by depth
    # puts every container's commas right after its opening bracket.
    marks = np.flatnonzero(is_open | (b == ord(",")))
    if marks.size == 0:
        return
    # Depth is within max_json_depth here; below zero only in broken text (clipped, for int16).
    order = np.argsort(np.maximum(depth[marks], -1).astype(np.int16), kind="stable")
    opens = is_open[marks][order]
    container = np.cumsum(opens) - 1
    commas_in = np.bincount(container[~opens & (container >= 0)], minlength=int(opens.sum()))
    kinds = b[marks][order][opens]
    for char, bound, code, what, key in ((ord("{"), bounds.max_keys, "too_many_keys", "keys",
                                          "limits.max_json_keys"),
                                         (ord("["), bounds.max_items, "too_many_items", "items",
                                          "limits.max_json_items")):
        counts = commas_in[kinds == char]
        most = int(counts.max(initial=-1)) + 1
        if most > bound:
            raise ProtocolError(code, f"A JSON {'object' if char == ord('{') else 'array'} has {most} "
                                f"{what}; the limit is {bound} ({key}).")


def as_text(data: str | bytes, what: str = "The frame") -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("invalid_json", f"{what} is not UTF-8 text (byte {exc.start}).") from None


def loads(text: str, bounds: JsonBounds, what: str = "The frame") -> Any:
    """Parse client JSON within `bounds`. Raises `ProtocolError` (invalid_json, nesting_too_deep,
    too_many_keys, too_many_items); never RecursionError."""
    _check_shape(text, bounds)
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:  # a max_json_depth set above what the stack allows
        raise ProtocolError("nesting_too_deep", f"The JSON nests too deep to parse; lower "
                            f"limits.max_json_depth (now {bounds.max_depth}).") from None
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"{what} is not valid JSON: {exc}") from None


def safe_text(s: str, limit: int = 64) -> str:
    """`s` clipped, with surrogates spelled out: fit to quote in a message or a log line."""
    clipped = s if len(s) <= limit else s[:limit] + "..."
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")


def invalid_string_path(value: Any, raw: str | None = None) -> str | None:
    """The path (`item.content[0].text`) of the first key or string holding a surrogate, if any.
    `raw`, the text `value` came from, lets the common case skip the walk."""
    if raw is not None and not _MAYBE_SURROGATE.search(raw):
        return None  # no surrogate, and no escape for one
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return path or "(value)"
        elif isinstance(node, dict):
            for k, v in reversed(node.items()):
                sub = f"{path}.{safe_text(k)}" if path else safe_text(k)
                if _SURROGATE.search(k):
                    return sub
                stack.append((v, sub))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
    return None


def surrogate_error(path: str) -> ProtocolError:
    return ProtocolError("invalid_string", f"'{path}' holds an unpaired UTF-16 surrogate (such as \\ud83d "
                         "alone); strings must be valid Unicode.", param=path)


def dumps_wire(event: Any) -> str:
    """Compact JSON for a text frame, always encodable as UTF-8 (surrogates end up \\u-escaped)."""
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(event, separators=(",", ":"))
    return text
