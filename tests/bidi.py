"""A small WebDriver BiDi client (the W3C protocol Firefox speaks natively) over `websockets`:
enough to drive the browser page in Firefox ESR, which Playwright's patched-Firefox driver cannot."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import websockets


class BiDiError(RuntimeError):
    pass


class BiDi:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> BiDi:
        client = cls(await websockets.connect(url, max_size=None))
        await client.call("session.new", {"capabilities": {}})
        return client

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self.pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.get("type") == "event":
                self.events.append(msg)

    async def call(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        n = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, timeout)
        if msg.get("type") == "error":
            raise BiDiError(f"{method}: {msg.get('error')}: {msg.get('message')}")
        result: dict[str, Any] = msg["result"]
        return result

    async def evaluate(self, context: str, expression: str, *, user_gesture: bool = False) -> Any:
        """Evaluate a JS expression whose value is a string (JSON when structured)."""
        r = await self.call("script.evaluate", {"expression": expression, "target": {"context": context},
                                                "awaitPromise": True, "userActivation": user_gesture})
        if r.get("type") == "exception":
            raise BiDiError(f"page exception: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    async def close(self) -> None:
        try:
            await self.call("browser.close", {}, timeout=10)
        except (BiDiError, TimeoutError, websockets.ConnectionClosed):
            pass
        self.reader.cancel()
        await self.ws.close()
