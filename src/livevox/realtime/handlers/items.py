"""`conversation.item.create` / `retrieve` / `truncate` / `delete`, and what the user heard of an item."""

from __future__ import annotations

import base64
import contextlib
import time
from typing import Any

import numpy as np

from ...core import audio as audio_codec
from ...core.audio import ITEM_RATE, SESSION_RATE
from ...core.errors import ProtocolError
from ..config import OUTPUT_FORMATS
from ..conversation import ConversationItem, normalize_client_item
from .base import SessionParts


class ItemEvents(SessionParts):
    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = normalize_client_item(event.get("item"))
        prev_id = event.get("previous_item_id")
        if prev_id is not None and not isinstance(prev_id, str):
            raise ProtocolError("invalid_type", "'previous_item_id' must be a string", param="previous_item_id")
        await self._insert_item(item, prev_id)

    async def _insert_item(self, item: dict[str, Any], prev_id: str | None = None) -> None:
        """A client's (normalized) item into the conversation, with its events."""
        approval = item["type"] == "mcp_approval_response"
        if approval:
            self.mcp.check_answer(item)
        prev = self.conversation.insert(ConversationItem(item), prev_id)
        await self.emit({"type": "conversation.item.created", "previous_item_id": prev, "item": item})
        await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        if approval:
            self.mcp.answer(item)  # approved: the call runs; denied: it fails (docs/protocol.md)

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        entry = self.conversation.get(event.get("item_id"))
        item = dict(entry.item)
        audio: tuple[Any, int, str, int] | None = None  # samples, their rate, codec, rate to send
        if entry.audio and item.get("content"):
            codec, rate = OUTPUT_FORMATS[self.config["output_audio_format"]]
            audio = np.concatenate(entry.audio), ITEM_RATE, codec, rate
        elif entry.input_audio is not None and item.get("content"):
            # The user's audio as the server heard it, in the session's input format.
            audio = (entry.input_audio, SESSION_RATE, self.config["input_audio_format"],
                     self.config["input_audio_sampling_rate"])
        if audio is not None:
            samples, have, codec, want = audio
            data = base64.b64encode(audio_codec.encode(audio_codec.resample(samples, have, want), codec)).decode()
            if len(data) < self.limits.max_outgoing_frame_bytes * 4:  # keep the frame well under 4 MiB
                item["content"] = [{**item["content"][0], "audio": data}]
        await self.emit({"type": "conversation.item.retrieved", "item": item})

    async def _on_item_truncate(self, event: dict[str, Any]) -> None:
        entry = self.conversation.get(event.get("item_id"))
        content_index = event.get("content_index", 0)
        end_ms = event.get("audio_end_ms")
        if not isinstance(content_index, int) or isinstance(content_index, bool):
            raise ProtocolError("invalid_type", "'content_index' must be an integer", param="content_index")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise ProtocolError("invalid_type", "'audio_end_ms' must be a non-negative integer",
                                param="audio_end_ms")
        if entry.item.get("role") != "assistant" or content_index != 0 or not entry.item.get("content") \
                or entry.item["content"][0].get("type") != "audio":
            raise ProtocolError("invalid_value", "Only an assistant message's audio content can be truncated.",
                                param="content_index")
        heard = self.transport.played_ms(entry.id)
        if heard is not None and end_ms > heard:
            end_ms = heard  # the user cannot have heard more than the transport played
        if end_ms > entry.audio_ms():
            raise ProtocolError("invalid_value", f"audio_end_ms {end_ms} is beyond the item's audio "
                                f"({entry.audio_ms()} ms).", param="audio_end_ms")
        if self.response is not None and self.response.active and self.response.message is entry:
            self.transport.discard_pending_audio()
            await self.response.cancel("client_cancelled")
        elif self.transport.pending_audio() == entry.id:
            self.transport.discard_pending_audio()  # the item's audio still queued stops playing
        await self._truncate(entry, content_index, end_ms)

    async def _truncate(self, entry: ConversationItem, content_index: int, end_ms: int,
                        appended: str | None = None) -> None:
        """Cut an assistant item's audio (and transcript) to what was heard; `appended` (Voice Live
        `turn_detection.appended_text_after_truncation`) marks a transcript that was cut."""
        cut = end_ms < entry.audio_ms()
        keep = end_ms * ITEM_RATE // 1000
        whole = np.concatenate(entry.audio) if entry.audio else np.zeros(0, np.int16)
        entry.audio = [whole[:keep]]
        text = ""
        for offset, piece in entry.clause_marks:
            if offset >= end_ms:
                break
            text += piece
        part = entry.item["content"][0]
        part["transcript"] = text.strip() + (appended if appended and cut else "")
        entry.clause_marks = [(o, p) for o, p in entry.clause_marks if o < end_ms]
        self.conversation.touch()
        await self.emit({"type": "conversation.item.truncated", "item_id": entry.id,
                         "content_index": content_index, "audio_end_ms": end_ms})

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        self.conversation.delete(item_id)
        await self.emit({"type": "conversation.item.deleted", "item_id": item_id})

    def played_ms(self, item_id: str) -> int:
        """Audio the user has heard: the transport's count, else real-time playback since the first delta."""
        exact = self.transport.played_ms(item_id)
        entry_ms = 0
        with contextlib.suppress(ProtocolError):
            entry_ms = self.conversation.get(item_id).audio_ms()
        if exact is not None:
            return min(exact, entry_ms)
        t0, _ = self._playback.get(item_id, (time.monotonic(), 0.0))
        return int(min(entry_ms, (time.monotonic() - t0) * 1000))
