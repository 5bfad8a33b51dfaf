"""What every door shares: the process state, the one admission check, the one session factory.

Every realtime door (the WebSocket endpoints, the Voice Live calls socket, `POST
/v1/realtime/calls`) and the engine endpoints admit a client here: the same API-key check with
the same 401 body, the same 503 while the engines load or when `limits.max_sessions` is reached.
Sessions are built and counted in one place, whatever transport carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from starlette.responses import JSONResponse

from ..engines.registry import Engines, build_engines
from ..realtime.dialects import Dialect, dialect_for
from ..realtime.input_rehearsal import INPUT_REHEARSAL
from ..realtime.metrics import SESSIONS_ACTIVE, SESSIONS_TOTAL, turns_in_flight
from ..realtime.ports import SessionTransport
from ..realtime.session import RealtimeSession
from ..realtime.tracing import TurnTracer
from ..settings import Settings
from ..transports.webrtc.registry import CallRegistry
from .auth import AUTH_MESSAGE, is_authorized, wants_beta

log = logging.getLogger("livevox.server")

#: `limits.max_sessions` when unset and the LLM is not the embedded one (engines elsewhere).
REMOTE_MAX_SESSIONS = 500

async def load_engines(settings: Settings) -> Engines:
    """The engines, loaded, warmed and rehearsed with the realtime layer's input DSP as well."""
    return await build_engines(settings, INPUT_REHEARSAL)


def error_body(status: int, code: str, message: str, type_: str = "invalid_request_error",
               param: str | None = None) -> JSONResponse:
    """The OpenAI-shaped JSON error every HTTP answer of livevox uses."""
    return JSONResponse({"error": {"type": type_, "code": code, "message": message, "param": param}},
                        status_code=status)


class LivevoxState:
    """Process-wide state shared by every connection."""

    def __init__(self, settings: Settings, engines: Engines | None = None) -> None:
        self.settings = settings
        self.engines = engines
        self.load_error: str | None = None
        self.sessions: set[RealtimeSession] = set()
        self.calls = CallRegistry()
        self.started = time.time()
        self._load_task: asyncio.Task[None] | None = None
        #: OpenTelemetry span trees per turn (`[tracing]`); None when off, the default.
        self.turn_tracer = TurnTracer.from_settings(settings.tracing)

    @property
    def ready(self) -> bool:
        return self.engines is not None and self.engines.ready

    async def load(self) -> None:
        if self.engines is not None:
            return
        try:
            self.engines = await load_engines(self.settings)
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
        if self.turn_tracer is not None:
            self.turn_tracer.shutdown()  # flushes what the exporter still holds

    # ------------------------------------------------------------ admission

    def refusal(self, headers: Mapping[str, str], query: Mapping[str, str], *,
                needs: Literal["session", "engines", "key"] = "session") -> JSONResponse | None:
        """Why this request may not proceed, or None: 401 without a valid key; then, unless it
        `needs` only the key (a hangup, a side-band join), 503 while the engines are not ready;
        then, for a new session, 503 at the session limit or the turn limit."""
        if not is_authorized(self.settings.api_keys, headers, query):
            return error_body(401, "invalid_api_key", AUTH_MESSAGE)
        if needs == "key":
            return None
        if not self.ready:
            why = "; ".join(self.engines.not_ready()) if self.engines is not None else "loading"
            return error_body(503, "engines_loading", f"The engines are not ready ({why}); see /readyz.",
                              "server_error")
        limit = self.session_limit()
        if needs == "session" and len(self.sessions) >= limit:
            return error_body(503, "session_limit_reached", f"The server holds its maximum of {limit} "
                              "sessions (limits.max_sessions); try again shortly.", "server_error")
        busy = self.turn_limit()
        if needs == "session" and busy is not None and turns_in_flight() >= busy:
            return error_body(503, "session_limit_reached", f"The server is answering {turns_in_flight()} "
                              f"turns at once, its limit (limits.max_turns_in_flight); try again shortly.",
                              "server_error")
        return None

    def session_limit(self) -> int:
        """`limits.max_sessions`, or by default 1.5 per embedded LLM slot (500 with a remote LLM)."""
        if self.settings.limits.max_sessions is not None:
            return self.settings.limits.max_sessions
        slots = self._embedded_slots()
        return REMOTE_MAX_SESSIONS if slots is None else slots * 3 // 2  # 1 slot: 1 session

    def turn_limit(self) -> int | None:
        """`limits.max_turns_in_flight`, or by default the embedded LLM's slots (None: no limit)."""
        if self.settings.limits.max_turns_in_flight is not None:
            return self.settings.limits.max_turns_in_flight
        return self._embedded_slots()

    def _embedded_slots(self) -> int | None:
        from ..engines.llamacpp import LlamaCppLLM

        llm = self.engines.llm if self.engines is not None else None
        return llm.parallel if isinstance(llm, LlamaCppLLM) else None

    # ------------------------------------------------------------ sessions

    def new_session(self, request: SessionRequest, transport: SessionTransport) -> RealtimeSession:
        assert self.engines is not None, "admit before building a session"
        q = request.query
        session = RealtimeSession(
            engines=self.engines,
            settings=self.settings,
            dialect=request.dialect or dialect_for(request.path, wants_beta(request.headers)),
            transport=transport,
            model=request.model or q.get("model") or q.get("deployment"),
            api_version=q.get("api-version"),
            agent_name=q.get("agent-name") or q.get("agent_id") or q.get("agent-id"),
            latency_events=self.settings.latency_events
            or q.get("livevox-latency-events", "").lower() in ("1", "true"),
        )
        session.turn_tracer = self.turn_tracer
        return session

    def track(self, session: RealtimeSession, kind: Literal["websocket", "webrtc"]) -> Callable[[], Awaitable[None]]:
        """Count the session as open; returns the release to call when it ends."""
        self.sessions.add(session)
        SESSIONS_TOTAL.labels(kind).inc()
        SESSIONS_ACTIVE.labels(kind).inc()

        async def release() -> None:
            if session in self.sessions:
                self.sessions.discard(session)
                SESSIONS_ACTIVE.labels(kind).dec()
            await session.close()

        return release


@dataclass(frozen=True)
class SessionRequest:
    """What a door knows about the client when it builds a session."""

    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    dialect: Dialect | None = None  # None: from the path and the OpenAI-Beta header
    model: str | None = None  # None: from the query (`model`, `deployment`)
