"""The HTTP/WebSocket application: the route table (realtime doors, engine endpoints, health,
readiness, metrics) over one `LivevoxState`."""

from __future__ import annotations

import contextlib
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

from ..core.executor import stage_loads
from ..engines.registry import Engines
from ..realtime.metrics import turns_in_flight
from ..settings import Settings
from .engine_api import engine_routes, voices_route
from .realtime_ws import REALTIME_PATHS, serve_realtime
from .state import LivevoxState
from .webrtc_doors import join_sideband, webrtc_routes

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


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
                                "sessions": len(state.sessions),
                                # the load now: answers being generated, and each stage's queue
                                "load": {"sessions": len(state.sessions),
                                         "max_sessions": state.session_limit(),
                                         "turns_in_flight": turns_in_flight(),
                                         "max_turns_in_flight": state.turn_limit(),
                                         "stages": stage_loads()}}
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
