"""A STAND-IN OpenAI-compatible engine server for fault injection: it is not an engine.

It speaks just enough of `/v1/chat/completions` (SSE), `/v1/audio/transcriptions` and
`/v1/audio/speech` (raw PCM) to answer correctly, and can instead stall, drop the connection,
answer garbage or fail with HTTP errors, per stage, as a test sets `mode`. It records every
request (path, query, headers, body) and every client that went away mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

#: Bound on every deliberate stall, so that nothing here can hang a test run.
MAX_STALL_S = 20.0


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class EngineStandIn:
    """Modes. llm: ok | stall (no headers) | stall_after_first | garbage | not_sse | http_500 | http_401 |
    drop (connection cut after two tokens) | tools (two interleaved parallel calls) | tool_no_name |
    replay (sends `replay`: raw SSE `data:` payloads, objects as JSON, then ends the stream).
    With `context_size` set, llm acts like a llama.cpp server with that context: a prompt longer
    than it (the stand-in counts a token per 2 characters, more than livevox's estimate, plus 4
    per message) gets HTTP 400 with llama.cpp's "exceeds the available context size" error, and
    an answer ends ("length") at `max_tokens` or at the end of the context, one word a token.
    stt: ok | stall | garbage | http_503. tts: ok | stall | json (an error-ish JSON body) | drop."""

    llm_mode: str = "ok"
    stt_mode: str = "ok"
    tts_mode: str = "ok"
    reply: str = "The stand-in answers. It is not a model."
    transcript: str = "stand-in transcript"
    token_delay: float = 0.0
    #: What `replay` mode sends, in order (the test appends "[DONE]" if it wants one).
    replay: list[Any] = field(default_factory=list)
    #: Fail this many requests with 503 before answering normally (retry tests).
    fail_first: int = 0
    #: A llama.cpp-like context limit in (stand-in) tokens; None: unlimited.
    context_size: int | None = None
    #: Requests refused for overflowing `context_size`.
    overflows: int = 0
    requests: list[Seen] = field(default_factory=list)
    #: (path, time) of each response whose client went away before it was finished.
    disconnects: list[tuple[str, float]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self._release.set()  # wake the stalls of earlier tests
        self._release = asyncio.Event()
        self.llm_mode = self.stt_mode = self.tts_mode = "ok"
        self.token_delay = 0.0
        self.replay = []
        self.fail_first = 0
        self.context_size = None
        self.overflows = 0
        self.requests.clear()
        self.disconnects.clear()

    async def first_disconnect(self, timeout: float = 2.0) -> float | None:
        """When the first client went away mid-stream (monotonic time), waiting up to `timeout`."""
        for _ in range(int(timeout / 0.02)):
            if self.disconnects:
                break
            await asyncio.sleep(0.02)
        return self.disconnects[0][1] if self.disconnects else None

    async def start(self) -> EngineStandIn:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/openai/deployments/{dep}/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)  # port 0: any free port
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stall(self) -> None:
        try:
            await asyncio.wait_for(self._release.wait(), MAX_STALL_S)
        except TimeoutError:
            pass

    async def _seen(self, request: web.Request) -> Seen:
        if request.content_type == "multipart/form-data":
            form = await request.post()
            body: Any = {k: (v if isinstance(v, str) else f"<file {v.filename} {len(v.file.read())} bytes>")
                         for k, v in form.items()}
        else:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        seen = Seen(request.path, dict(request.query), dict(request.headers), body)
        self.requests.append(seen)
        return seen

    def _failing_first(self) -> bool:
        if self.fail_first > 0:
            self.fail_first -= 1
            return True
        return False

    # ------------------------------------------------------------ chat

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
             "model": "stand-in", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(c)}\n\n".encode()

    @staticmethod
    def prompt_tokens(body: Any) -> int:
        """The stand-in's own count of a request's prompt."""
        return sum(len(str(m.get("content") or "")) // 2 + 4 for m in body.get("messages", []))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = (await self._seen(request)).body
        mode = self.llm_mode
        limit = len(self.reply.split(" "))
        if self.context_size is not None:
            prompt = self.prompt_tokens(body)
            if prompt > self.context_size:
                self.overflows += 1
                return web.json_response({"error": {
                    "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt,
                    "n_ctx": self.context_size,
                    "message": f"request ({prompt} tokens) exceeds the available context size "
                               f"({self.context_size} tokens), try increasing it"}}, status=400)
            limit = min(limit, int(body.get("max_tokens") or limit), self.context_size - prompt)
        if self._failing_first() or mode == "http_500":
            return web.json_response({"error": {"message": "stand-in overloaded", "type": "server_error"}},
                                     status=503 if mode != "http_500" else 500)
        if mode == "http_401":
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        if mode == "stall":
            await self._stall()
            return web.Response(status=504)
        if mode == "not_sse":
            return web.Response(text="<html>gateway says hello</html>", content_type="text/html")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            if mode == "garbage":
                await resp.write(b"data: {\"choices\": [{\"delta\": {\"content\": \"Hi\"}}]}\n\n")
                await resp.write(b"data: {this is not json\n\n")
                await resp.write_eof()
                return resp
            if mode == "replay":
                for payload in self.replay:
                    data = payload if isinstance(payload, str) else json.dumps(payload)
                    await resp.write(f"data: {data}\n\n".encode())
                await resp.write_eof()
                return resp
            if mode in ("tools", "tool_no_name"):
                name0 = None if mode == "tool_no_name" else "get_weather"
                parts = [
                    {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                     "function": {"name": name0, "arguments": ""}}]},
                    {"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                     "function": {"name": "get_time", "arguments": "{\"tz\""}}]},
                    {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]},
                    {"tool_calls": [{"index": 1, "function": {"arguments": ": \"UTC\"}"}}]},
                    {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]},
                ]
                for p in parts:
                    await resp.write(self._chunk(p))
                await resp.write(self._chunk({}, "tool_calls"))
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                return resp
            await resp.write(self._chunk({"role": "assistant", "content": ""}))
            words = self.reply.split(" ")[:limit]
            for i, word in enumerate(words):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                await resp.write(self._chunk({"content": word if i == 0 else " " + word}))
                if mode == "drop" and i == 1:
                    assert request.transport is not None
                    request.transport.abort()  # the engine "dies" mid-stream
                    return resp
                if mode == "stall_after_first":
                    await self._stall()
                    return resp
            await resp.write(self._chunk({}, "stop" if limit == len(self.reply.split(" ")) else "length"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.disconnects.append((request.path, time.monotonic()))
        return resp

    # ------------------------------------------------------------ stt, tts

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        await self._seen(request)
        if self._failing_first() or self.stt_mode == "http_503":
            return web.json_response({"error": {"message": "stand-in STT down"}}, status=503)
        if self.stt_mode == "stall":
            await self._stall()
            return web.Response(status=504)
        if self.stt_mode == "garbage":
            return web.Response(body=b"\x00\x01 not json", content_type="application/octet-stream")
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        seen = await self._seen(request)
        if self.tts_mode == "stall":
            await self._stall()
            return web.Response(status=504)
        if self.tts_mode == "json":
            return web.json_response({"detail": "this is not audio"})
        words = str(seen.body.get("input", "")).split()
        speed = float(seen.body.get("speed", 1.0))
        n = int(24000 * 0.06 * max(1, len(words)) / speed)
        tone = (np.sin(2 * np.pi * 330 * np.arange(n) / 24000) * 3000).astype("<i2").tobytes()
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        try:
            step = 4800
            for i in range(0, len(tone), step):
                await resp.write(tone[i:i + step])
                if self.tts_mode == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.disconnects.append((request.path, time.monotonic()))
        return resp
