"""Start a real livevox server (uvicorn, loopback, free port) in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from livevox.server.app import create_app
from livevox.server.state import load_engines
from livevox.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerThread:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = settings.port
        self.server: uvicorn.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="livevox-test-server")
        self.error: BaseException | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self.error = exc

    async def _serve(self) -> None:
        engines = await load_engines(self.settings)
        app = create_app(self.settings, engines)
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                ws_max_size=self.settings.limits.max_frame_bytes * 2,
                                ws_per_message_deflate=False)
        self.server = uvicorn.Server(config)
        await self.server.serve()

    def start(self, timeout: float = 120.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise RuntimeError(f"server failed to start: {self.error!r}") from self.error
            if self.server is not None and self.server.started:
                return self
            time.sleep(0.02)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=30)

    def run_coro(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (to inspect server-side state)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


def scripted_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "port": free_port(),
        "vad": {"engine": "scripted"},
        "stt": {"engine": "scripted"},
        "llm": {"engine": "scripted"},
        "tts": {"engine": "scripted"},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return load_settings(None, **base)


def embedded_settings(**overrides: Any) -> Settings:
    return load_settings(None, port=free_port(), **overrides)
