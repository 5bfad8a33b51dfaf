"""The `SessionTransport` of a WebRTC call: event routing between the data channel and the sockets,
and audio through the call's RTP track instead of `response.audio.delta` events.

Voice Live door (`/voice-live/realtime/calls`):
  - Route.EVENTS (VAD, transcripts, response lifecycle, non-tool items, output_audio_buffer.*) go
    on the `voice-live-events` data channel once it is open, on the WebSocket until then;
  - Route.CONTROL (session.*, error, warning, rtc.*, function/tool-call events) go on the WebSocket.
OpenAI door (`POST /v1/realtime/calls`):
  - every event goes on the `oai-events` data channel (queued until it opens) and to every
    side-band WebSocket that joined with `GET /v1/realtime?call_id=...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc import RTCDataChannel

from ...realtime.errors import ProtocolError
from ...realtime.transport import Route, SessionTransport
from ..websocket import WebSocketTransport
from .peer import RtcCall

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

    async def send_event(self, event: dict[str, Any], route: Route) -> None:
        if self.closed:
            return
        await self._deliver(event, route)
        if event["type"] == "input_audio_buffer.speech_started":
            self._user_speaks()

    async def _deliver(self, event: dict[str, Any], route: Route) -> None:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        if self.call.door == "voicelive":
            if route is Route.EVENTS and self.call.send_text(text):
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

    def _user_speaks(self) -> None:
        """Barge-in on the RTP stream. The session cancels an answer still being generated, but an
        answer already generated may still be playing out of the track's buffer: the user must hear
        it stop too, at once, and with auto_truncate the item keeps only what was sent."""
        session, track = self.call.session, self.call.track
        if session is None or track is None:
            return
        td = session.config.get("turn_detection") or {}
        if not td.get("interrupt_response", True):
            return
        cut = track.discard()
        if cut is None or not td.get("auto_truncate", False):
            return
        response_id, item_id = cut
        run = session.response
        if run is not None and run.active and run.id == response_id:
            return  # the session's own barge-in truncates the answer it cancels
        played = track.sent_ms(item_id) or 0
        self.call.spawn(self._truncate(item_id, played))

    async def _truncate(self, item_id: str, played_ms: int) -> None:
        session = self.call.session
        if session is None:
            return
        with contextlib.suppress(ProtocolError):  # the item may be gone (deleted) or already short
            await session.handle_event({"type": "conversation.item.truncate", "item_id": item_id,
                                        "content_index": 0, "audio_end_ms": played_ms})

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

    def discard_pending_audio(self) -> None:
        track = self.call.track
        if track is not None:
            track.discard()  # reports output_audio_buffer.cleared if audio was cut

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
