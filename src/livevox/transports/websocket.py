"""The WebSocket transport: events as JSON text frames, audio as base64 inside events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from ..realtime.jsonguard import dumps_wire
from ..realtime.ports import Channel, SessionTransport

log = logging.getLogger("livevox.ws")


class WebSocketTransport(SessionTransport):
    audio_in_events = True

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()
        self.closed = False

    async def send_event(self, event: dict[str, Any], route: Channel) -> None:
        if self.closed:
            return
        text = dumps_wire(event)
        async with self._lock:  # FIFO lock: events leave in the order they were emitted
            if self.closed:
                return
            try:
                await self.ws.send_text(text)
            except Exception:  # the peer went away; the reader loop ends the session
                self.closed = True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                await self.ws.close(code, reason)


async def read_frames(ws: WebSocket, handle: Callable[[str | bytes], Awaitable[None]],
                      transport: WebSocketTransport) -> None:
    """Feed client frames to `handle` (a session's `handle_frame`) until the socket closes."""
    while not transport.closed:
        try:
            message = await ws.receive()
        except Exception:
            break
        if message["type"] == "websocket.disconnect":
            break
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is None:
            continue
        await handle(data)
    transport.closed = True
