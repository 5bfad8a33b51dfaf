"""A small raw-WebSocket realtime client for protocol tests (the SDK tests use the real SDKs)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import websockets

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


def tone(seconds: float, rate: int = 24000, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate))
    return (np.sin(2 * np.pi * 220 * t / rate) * amp).astype(np.int16)


def silence(seconds: float, rate: int = 24000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
