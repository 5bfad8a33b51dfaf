"""The HTTP/WebSocket application: realtime endpoints, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from ..engines.registry import Engines, build_engines
from ..realtime.dialects import dialect_for
from ..realtime.metrics import SESSIONS_ACTIVE, SESSIONS_TOTAL
from ..realtime.session import RealtimeSession
from ..settings import Settings
from ..transports.webrtc import join_sideband, webrtc_routes
from ..transports.websocket import WebSocketTransport, read_frames
from .auth import chosen_subprotocol, is_authorized, wants_beta
from .engine_api import engine_routes, voices_route

log = logging.getLogger("livevox.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

REALTIME_PATHS = (
    "/voice-live/realtime",
    "/v1/realtime",
    "/openai/v1/realtime",
    "/openai/realtime",
)


def error_body(status: int, code: str, message: str, type_: str = "invalid_request_error",
               param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "code": code, "message": message, "param": param}},
                        status_code=status)


class LivevoxState:
    """Process-wide state shared by every connection."""

    def __init__(self, settings: Settings, engines: Engines | None = None) -> None:
        self.settings = settings
        self.engines = engines
        self.load_error: str | None = None
        self.sessions: set[RealtimeSession] = set()
        self.started = time.time()
        self._load_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.engines is not None and self.engines.ready

    async def load(self) -> None:
        if self.engines is not None:
            return
        try:
            self.engines = await build_engines(self.settings)
        except Exception as exc:
            self.load_error = str(exc)
            log.error("engine load failed: %s", exc)
            raise

    def start_loading(self) -> None:
        self._load_task = asyncio.create_task(self.load())

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await self._load_task

    async def shutdown(self) -> None:
        for s in list(self.sessions):
            with contextlib.suppress(Exception):
                await s.transport.close(1001, "server shutting down")
                await s.close()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.engines is not None:
            await self.engines.close()


def create_app(settings: Settings, engines: Engines | None = None) -> Starlette:
    state = LivevoxState(settings, engines)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            await state.shutdown()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "uptime_s": round(time.time() - state.started, 1)})

    async def readyz(request: Request) -> Response:
        engines = state.engines.status() if state.engines is not None else {}
        body: dict[str, Any] = {"ready": state.ready, "role": settings.role, "engines": engines,
                                "sessions": len(state.sessions)}
        if state.engines is not None:
            # What the start-up rehearsal ran, at which sizes, in how long (None: not yet).
            body["warmup"] = state.engines.warmup_report
            if not state.ready:
                body["not_ready"] = state.engines.not_ready()
        if state.load_error:
            body["error"] = state.load_error
        return JSONResponse(body, status_code=200 if state.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def realtime(ws: WebSocket) -> None:
        if ws.query_params.get("call_id"):  # side-band join of a WebRTC call
            await join_sideband(ws, state)
            return
        await serve_realtime(ws, state)

    async def index(request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8")

    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        voices_route(state),
    ]
    if settings.role in ("all", "gateway"):  # the realtime endpoints
        routes += [Route("/", index), Mount("/web", app=StaticFiles(directory=WEB_DIR), name="web")]
        routes += [WebSocketRoute(p, realtime) for p in REALTIME_PATHS]
        routes += webrtc_routes(state)
    if settings.role in ("all", "engine"):  # OpenAI-compatible model endpoints
        routes += engine_routes(state)
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.livevox = state
    return app


async def admit(ws: WebSocket, state: LivevoxState) -> bool:
    """Authenticate and check capacity before the upgrade; refuse with a JSON HTTP error."""
    settings = state.settings
    if not is_authorized(settings.api_keys, ws.headers, ws.query_params):
        await ws.send_denial_response(error_body(
            401, "invalid_api_key", "Missing or invalid API key. Send it as the 'api-key' header, "
            "'Authorization: Bearer <key>', or the 'api-key' query parameter."))
        return False
    if not state.ready:
        why = "; ".join(state.engines.not_ready()) if state.engines is not None else "loading"
        await ws.send_denial_response(error_body(503, "engines_loading", f"The engines are not ready ({why}); "
                                                 "see /readyz.", "server_error"))
        return False
    if len(state.sessions) >= settings.limits.max_sessions:
        await ws.send_denial_response(error_body(
            503, "session_limit_reached", f"The server holds its maximum of {settings.limits.max_sessions} "
            "sessions (limits.max_sessions).", "server_error"))
        return False
    return True


def new_session(ws: WebSocket, state: LivevoxState, transport: Any) -> RealtimeSession:
    q = ws.query_params
    assert state.engines is not None
    return RealtimeSession(
        engines=state.engines,
        settings=state.settings,
        dialect=dialect_for(ws.url.path, wants_beta(ws.headers)),
        transport=transport,
        model=q.get("model") or q.get("deployment"),
        api_version=q.get("api-version"),
        agent_name=q.get("agent-name") or q.get("agent_id") or q.get("agent-id"),
        latency_events=state.settings.latency_events
        or q.get("livevox-latency-events", "").lower() in ("1", "true"),
    )


async def serve_realtime(ws: WebSocket, state: LivevoxState) -> None:
    if not await admit(ws, state):
        return
    await ws.accept(subprotocol=chosen_subprotocol(ws.headers))
    transport = WebSocketTransport(ws)
    session = new_session(ws, state, transport)
    state.sessions.add(session)
    SESSIONS_TOTAL.labels("websocket").inc()
    SESSIONS_ACTIVE.labels("websocket").inc()
    try:
        await session.start()
        await read_frames(ws, session, transport)
    finally:
        state.sessions.discard(session)
        SESSIONS_ACTIVE.labels("websocket").dec()
        await session.close()
        await transport.close()
