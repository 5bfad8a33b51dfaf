"""The `SessionTransport` of a WebRTC call: event routing between the data channel and the sockets,
and audio through the call's RTP track instead of `response.audio.delta` events.

Voice Live door (`/voice-live/realtime/calls`):
  - Channel.EVENTS (VAD, transcripts, response lifecycle, non-tool items, output_audio_buffer.*) go
    on the `voice-live-events` data channel once it is open, on the WebSocket until then;
  - Channel.CONTROL (session.*, error, warning, rtc.*, function/tool-call events) go on the WebSocket.
OpenAI door (`POST /v1/realtime/calls`):
  - every event goes on the `oai-events` data channel (queued until it opens) and to every
    side-band WebSocket that joined with `GET /v1/realtime?call_id=...`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc import RTCDataChannel

from ...realtime.jsonguard import dumps_wire
from ...realtime.ports import Channel, SessionTransport
from ..websocket import WebSocketTransport
from .call import RtcCall

#: Events kept for the OpenAI door's data channel before it opens (oldest dropped beyond this).
_MAX_EARLY_EVENTS = 2048


class WebRTCTransport(SessionTransport):
    audio_in_events = False

    def __init__(self, call: RtcCall, control: WebSocketTransport | None = None) -> None:
        self.call = call
        self.control = control
        self.sidebands: list[WebSocketTransport] = []
        self._early: deque[str] = deque(maxlen=_MAX_EARLY_EVENTS)
        self.closed = False
        call.on_channel_open(self._channel_opened)
        call.on_close(self._sockets_closed)

    # ------------------------------------------------------------ events

    def _channel_opened(self, channel: RTCDataChannel) -> None:
        # Synchronous on purpose: nothing can be emitted between the queued events and the new ones.
        while self._early:
            if not self.call.send_text(self._early.popleft()):
                break

    async def send_event(self, event: dict[str, Any], route: Channel) -> None:
        if self.closed:
            return
        await self._deliver(event, route)

    async def _deliver(self, event: dict[str, Any], route: Channel) -> None:
        text = dumps_wire(event)
        if self.call.door == "voicelive":
            if route is Channel.EVENTS and self.call.send_text(text):
                return
            if self.control is not None:
                await self.control.send_event(event, route)
            return
        if not self.call.send_text(text) and self.call.state != "closed":
            self._early.append(text)
        for sideband in list(self.sidebands):
            await sideband.send_event(event, route)
            if sideband.closed:
                self.remove_sideband(sideband)

    def add_sideband(self, sideband: WebSocketTransport) -> None:
        self.sidebands.append(sideband)

    def remove_sideband(self, sideband: WebSocketTransport) -> None:
        with contextlib.suppress(ValueError):
            self.sidebands.remove(sideband)

    # ------------------------------------------------------------ audio

    async def play_audio(self, response_id: str, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        track = self.call.track
        if track is not None:
            track.enqueue(response_id, item_id, pcm24k)

    async def end_audio(self, response_id: str, item_id: str) -> None:
        track = self.call.track
        if track is not None:
            track.end(response_id, item_id)

    def pending_audio(self) -> str | None:
        track = self.call.track
        pending = track.pending() if track is not None else None
        return None if pending is None else pending[1]

    def discard_pending_audio(self) -> str | None:
        track = self.call.track
        cut = track.discard() if track is not None else None  # reports output_audio_buffer.cleared
        return None if cut is None else cut[1]

    def played_ms(self, item_id: str) -> int | None:
        track = self.call.track
        if track is None:
            return None
        sent = track.sent_ms(item_id)
        return 0 if sent is None else sent

    # ------------------------------------------------------------ closing

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The session ends the call (limits, shutdown): free everything."""
        await self.call.close(reason or "session_closed")

    async def _sockets_closed(self, reason: str) -> None:
        self.closed = True
        self._early.clear()
        sockets = [*self.sidebands, *([self.control] if self.control is not None else [])]
        self.sidebands.clear()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, reason[:120]), 5)
