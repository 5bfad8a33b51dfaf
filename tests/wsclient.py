"""A small raw-WebSocket realtime client for protocol tests (the SDK tests use the real SDKs)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import websockets

from support_audio import silence, tone

__all__ = ["AUDIO_RESPONSE", "AUDIO_TURN", "VL_PATH", "RealtimeClient", "ordered_subsequence", "silence", "tone",
           "types"]

VL_PATH = "/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime"


class RealtimeClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, base: str, path: str = VL_PATH, headers: dict[str, str] | None = None,
                      first: str = "session.created") -> RealtimeClient:
        ws = await websockets.connect(base + path, additional_headers=headers or {}, max_size=None)
        client = cls(ws)
        if first:
            ev = await client.recv()
            assert ev["type"] == first, ev
        return client

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(event if isinstance(event, str | bytes) else json.dumps(event))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        ev: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(ev)
        return ev

    async def until(self, etype: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Receive until an event of `etype`; return all events received (last one included)."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = await self.recv(max(0.01, deadline - loop.time()))
            got.append(ev)
            if ev["type"] == etype:
                return got

    async def quiet(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """Everything that arrives within `seconds`."""
        got = []
        try:
            while True:
                got.append(await self.recv(seconds))
        except TimeoutError:
            return got

    async def error(self, timeout: float = 5.0) -> dict[str, Any]:
        evs = await self.until("error", timeout)
        return evs[-1]["error"]  # type: ignore[no-any-return]

    async def update(self, session: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": session})
        return (await self.until("session.updated"))[-1]["session"]  # type: ignore[no-any-return]

    async def append(self, pcm: np.ndarray, chunk_ms: int = 100, rate: int = 24000) -> None:
        step = rate * chunk_ms // 1000
        for i in range(0, len(pcm), step):
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(pcm[i:i + step].astype("<i2").tobytes()).decode()})

    async def close(self) -> None:
        await self.ws.close()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# The event sequences of a spoken turn and of an audio answer, as the protocol and SDK tests expect.
AUDIO_TURN = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.created",
]
AUDIO_RESPONSE = [
    "response.created",
    "response.output_item.added",
    "conversation.item.created",
    "response.content_part.added",
    "response.audio_transcript.delta",
    "response.audio.delta",
    "response.audio.done",
    "response.audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]


def ordered_subsequence(seq: list[str], expected: list[str]) -> bool:
    it = iter(seq)
    return all(any(x == e for x in it) for e in expected)
