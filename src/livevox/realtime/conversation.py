"""The conversation: ordered items, and their rendering as Chat Completions messages."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core.audio import ITEM_RATE
from ..core.errors import ProtocolError
from ..core.ids import new_id
from .mcp_tools import function_name
from .truncation import State as TruncationState

_ITEM_TYPES = ("message", "function_call", "function_call_output", "mcp_approval_response")
#: MCP items only the server creates (discovery, calls, approval requests).
_SERVER_ITEMS = ("mcp_call", "mcp_list_tools", "mcp_approval_request")
_ROLES = ("user", "assistant", "system")


@dataclass
class ConversationItem:
    item: dict[str, Any]
    #: Assistant audio at 24 kHz (for retrieve and truncate).
    audio: list[npt.NDArray[np.int16]] = field(default_factory=list)
    #: (audio offset ms, text) per spoken clause, to cut the transcript at a play position.
    clause_marks: list[tuple[int, str]] = field(default_factory=list)
    #: For user audio: resolves to the transcript (or "" when transcription failed).
    transcript: asyncio.Future[str] | None = None
    #: For user audio: what the server heard, 16 kHz, after noise suppression / echo cancellation.
    input_audio: npt.NDArray[np.int16] | None = None
    #: False for what the LLM must not see (an interim filler: the model would repeat it).
    in_context: bool = True

    @property
    def id(self) -> str:
        return str(self.item["id"])

    def audio_ms(self) -> int:
        return sum(len(a) for a in self.audio) * 1000 // ITEM_RATE


class Conversation:
    def __init__(self, max_items: int) -> None:
        self.entries: list[ConversationItem] = []
        self.max_items = max_items
        self.version = 0
        #: Where `session.truncation` last cut the LLM's view (the items themselves all stay).
        self.truncation = TruncationState()

    def get(self, item_id: Any, param: str = "item_id") -> ConversationItem:
        if not isinstance(item_id, str):
            raise ProtocolError("invalid_type", f"'{param}' must be a string", param=param)
        for e in self.entries:
            if e.id == item_id:
                return e
        raise ProtocolError("item_not_found", f"Item with item_id '{item_id}' not found.", param=param)

    def last_id(self) -> str | None:
        return self.entries[-1].id if self.entries else None

    def insert(self, entry: ConversationItem, previous_item_id: str | None = None) -> str | None:
        """Insert after `previous_item_id` (or append). Returns the id of the item before it."""
        if any(e.id == entry.id for e in self.entries):
            raise ProtocolError("duplicate_item_id", f"Item id '{entry.id}' already exists.", param="item.id")
        if previous_item_id is None:
            prev = self.last_id()
            self.entries.append(entry)
        elif previous_item_id == "root":
            prev = None
            self.entries.insert(0, entry)
        else:
            idx = self.entries.index(self.get(previous_item_id, "previous_item_id"))
            prev = previous_item_id
            self.entries.insert(idx + 1, entry)
        while len(self.entries) > self.max_items:
            self.entries.pop(0)  # oldest first; documented limit `limits.max_items`
        self.version += 1
        return prev

    def delete(self, item_id: Any) -> None:
        self.entries.remove(self.get(item_id))
        self.version += 1

    def touch(self) -> None:
        self.version += 1


def normalize_client_item(item: Any) -> dict[str, Any]:
    """Validate a client item and give it its server shape."""
    if not isinstance(item, dict):
        raise ProtocolError("invalid_type", "'item' must be an object", param="item")
    kind = item.get("type", "message")
    if kind not in _ITEM_TYPES:
        if kind in _SERVER_ITEMS:
            raise ProtocolError("invalid_value", f"Items of type {kind!r} are created by the server (MCP); a "
                                "client answers an approval request with an 'mcp_approval_response' item.",
                                param="item.type")
        raise ProtocolError("invalid_value", f"Invalid item type {kind!r}", param="item.type")
    item_id = item.get("id") or new_id("item")
    if not isinstance(item_id, str):
        raise ProtocolError("invalid_type", "'item.id' must be a string", param="item.id")
    out: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": kind}
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise ProtocolError("invalid_value", "'item.role' must be user, assistant or system",
                                param="item.role")
        content = item.get("content")
        if not isinstance(content, list):
            raise ProtocolError("invalid_type", "'item.content' must be an array", param="item.content")
        parts = []
        for i, part in enumerate(content):
            param = f"item.content[{i}]"
            if not isinstance(part, dict):
                raise ProtocolError("invalid_type", f"'{param}' must be an object", param=param)
            ptype = part.get("type")
            allowed = ("text", "audio") if role == "assistant" else ("input_text", "input_audio", "input_image")
            if role == "assistant" and ptype in ("output_text", "output_audio"):
                ptype = ptype.removeprefix("output_")
            if ptype not in allowed:
                raise ProtocolError("invalid_value", f"Invalid content type {ptype!r} for a {role} message",
                                    param=f"{param}.type")
            if ptype in ("text", "input_text"):
                if not isinstance(part.get("text"), str):
                    raise ProtocolError("invalid_type", f"'{param}.text' must be a string", param=f"{param}.text")
                parts.append({"type": ptype, "text": part["text"]})
            elif ptype == "input_image":
                raise ProtocolError("unsupported_feature", "Image input is not supported by the local LLM.",
                                    param=f"{param}.type")
            else:
                transcript = part.get("transcript")
                if transcript is not None and not isinstance(transcript, str):
                    raise ProtocolError("invalid_type", f"'{param}.transcript' must be a string",
                                        param=f"{param}.transcript")
                parts.append({"type": ptype, "transcript": transcript, **(
                    {"audio": part["audio"]} if isinstance(part.get("audio"), str) else {})})
        out.update(role=role, content=parts, status="completed")
    elif kind == "function_call":
        for key in ("call_id", "name"):
            if not isinstance(item.get(key), str):
                raise ProtocolError("invalid_type", f"'item.{key}' must be a string", param=f"item.{key}")
        args = item.get("arguments", "")
        if not isinstance(args, str):
            raise ProtocolError("invalid_type", "'item.arguments' must be a string", param="item.arguments")
        out.update(call_id=item["call_id"], name=item["name"], arguments=args, status="completed")
    elif kind == "mcp_approval_response":
        if not isinstance(item.get("approval_request_id"), str):
            raise ProtocolError("invalid_type", "'item.approval_request_id' must be a string",
                                param="item.approval_request_id")
        if not isinstance(item.get("approve"), bool):
            raise ProtocolError("invalid_type", "'item.approve' must be a boolean", param="item.approve")
        reason = item.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ProtocolError("invalid_type", "'item.reason' must be a string", param="item.reason")
        out.update(approval_request_id=item["approval_request_id"], approve=item["approve"], reason=reason)
    else:
        if not isinstance(item.get("call_id"), str):
            raise ProtocolError("invalid_type", "'item.call_id' must be a string", param="item.call_id")
        output = item.get("output")
        if not isinstance(output, str):
            raise ProtocolError("invalid_type", "'item.output' must be a string", param="item.output")
        out.update(call_id=item["call_id"], output=output, status="completed")
    return out


async def to_messages(entries: list[ConversationItem], instructions: str, *, join_users: bool = True,
                      late_instructions: str = "") -> list[dict[str, Any]]:
    """Render items as Chat Completions messages, waiting for pending user transcripts.

    `join_users`: consecutive user messages become one, for chat templates that want user and
    assistant alternating. Joined, they change the prompt where an item between them was
    deleted, so a template that takes them apart (ChatML) keeps them apart, and the prompt cache
    keeps what follows. `late_instructions`: a system message after the conversation
    (`late_position`)."""
    msgs: list[dict[str, Any]] = []
    if instructions:
        msgs.append({"role": "system", "content": instructions})
    for e in entries:
        it = e.item
        if not e.in_context:
            continue
        if it["type"] == "message":
            text = await _message_text(e)
            if not text:
                continue
            if join_users and msgs and msgs[-1]["role"] == it["role"] == "user":
                msgs[-1]["content"] += " " + text
            else:
                msgs.append({"role": it["role"], "content": text})
        elif it["type"] == "function_call":
            call = {"id": it["call_id"], "type": "function",
                    "function": {"name": it["name"], "arguments": it.get("arguments") or "{}"}}
            if msgs and msgs[-1]["role"] == "assistant" and "tool_calls" in msgs[-1]:
                msgs[-1]["tool_calls"].append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif it["type"] == "function_call_output":
            msgs.append({"role": "tool", "tool_call_id": it["call_id"], "content": it["output"]})
        elif it["type"] == "mcp_call" and (it.get("output") is not None or it.get("error") is not None):
            # A finished MCP call: the call and its result, so the next answer can speak it. Calls
            # waiting for approval (or cut off) are left out: each call needs its result.
            call = {"id": it["id"], "type": "function",
                    "function": {"name": function_name(it["server_label"], it["name"], set()),
                                 "arguments": it.get("arguments") or "{}"}}
            if msgs and msgs[-1]["role"] == "assistant" and "tool_calls" in msgs[-1]:
                msgs[-1]["tool_calls"].append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
            result = it["output"] if it.get("output") is not None else f"error: {it['error'].get('message', '')}"
            msgs.append({"role": "tool", "tool_call_id": it["id"], "content": result})
    if late_instructions:
        msgs.insert(late_position(msgs), {"role": "system", "content": late_instructions})
    return msgs


def late_position(msgs: list[dict[str, Any]]) -> int:
    """Where a response's own instructions go after the conversation: before the turn being
    answered (the last user message and the tool calls and results after it), so that the model
    answers the user's words and not the instructions (SmolLM2-135M, given them last, answered
    "I'm ready to help. What's your question?"); at the end when the agent has answered the last
    user message (a response with no new input: the instructions are then its task)."""
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if not users:
        return len(msgs)
    last = users[-1]
    if any(m["role"] == "assistant" and m.get("content") for m in msgs[last + 1:]):
        return len(msgs)
    while last > 0 and msgs[last - 1]["role"] == "user":  # user messages in a row are one turn
        last -= 1
    return last


async def _message_text(e: ConversationItem) -> str:
    pieces = []
    for part in e.item.get("content", []):
        t = part.get("type")
        if t in ("text", "input_text"):
            pieces.append(part.get("text") or "")
        elif t in ("audio", "input_audio"):
            if part.get("transcript") is None and e.transcript is not None:
                await asyncio.shield(e.transcript)
            pieces.append(part.get("transcript") or "")
    return " ".join(p for p in pieces if p).strip()


def tool_for_chat(tool: dict[str, Any]) -> dict[str, Any]:
    fn = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def tool_choice_for_chat(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        return {"type": "function", "function": {"name": name}}
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
