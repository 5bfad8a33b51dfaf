"""The interface between the transport-agnostic session and a transport (WebSocket, WebRTC).

A transport delivers server events (already in its dialect), plays audio when audio does not
travel inside events, and reports how much of an item's audio has really been sent, so
truncation is exact. It never holds conversation logic.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt


class Channel(enum.Enum):
    """Where an event belongs when a transport has two channels (WebRTC)."""

    CONTROL = "control"  # session.*, error, warning, tool-call events: the WebSocket
    EVENTS = "events"  # VAD, transcripts, response lifecycle: the data channel


_CONTROL_PREFIXES = ("session.", "error", "warning", "rtc.", "response.function_call_arguments",
                     "response.mcp_call", "mcp_list_tools.")
_TOOL_ITEMS = ("function_call", "function_call_output", "mcp_list_tools", "mcp_call", "mcp_approval_request",
               "mcp_approval_response")


def channel_of(event: dict[str, Any]) -> Channel:
    """The channel a canonical server event belongs on (Voice Live's WebRTC split): session
    configuration, errors, warnings, rtc.* and tool calls on the control socket, the rest on the
    data channel. The one table of it; one-channel transports ignore it."""
    if event["type"].startswith(_CONTROL_PREFIXES):
        return Channel.CONTROL
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") in _TOOL_ITEMS:
        return Channel.CONTROL
    return Channel.EVENTS


class SessionTransport(ABC):
    #: True: the session sends `response.audio.delta` events. False: it calls `play_audio`.
    audio_in_events: bool = True

    @abstractmethod
    async def send_event(self, event: dict[str, Any], route: Channel) -> None: ...

    async def play_audio(self, response_id: str, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        """Queue 24 kHz mono audio for playout (transports without audio events)."""
        raise NotImplementedError

    async def end_audio(self, response_id: str, item_id: str) -> None:
        """No more audio for this item; the transport may report playback end."""
        return None

    def pending_audio(self) -> str | None:
        """The item whose audio is queued or playing out here, not yet all heard; None when the
        client plays the audio itself (audio in events)."""
        return None

    def discard_pending_audio(self) -> str | None:
        """Drop audio queued but not yet sent (barge-in). Returns the item whose audio was cut."""
        return None

    def played_ms(self, item_id: str) -> int | None:
        """Milliseconds of the item's audio actually sent, or None if the transport cannot tell."""
        return None

    @abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
