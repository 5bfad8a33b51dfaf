"""The transport-agnostic realtime session: one conversation, its audio input, turn detection
and responses. Transports hand it client frames and audio; it answers through a
`SessionTransport`. Handlers are split by event family.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..core.audio import ITEM_RATE
from ..core.errors import ProtocolError, unsupported
from ..core.ids import new_id
from ..engines.base import EngineSet
from . import jsonguard
from .capabilities import capability_warnings
from .config import default_session, merge_update
from .conversation import Conversation
from .dialects import Dialect
from .end_of_turn import policy_config
from .handlers.input_audio import InputAudioEvents
from .handlers.items import ItemEvents
from .handlers.responses import ResponseEvents
from .idle_timeout import RESTART_EVENTS, IdleTimeout
from .input_audio import InputAudio
from .mcp_session import McpTools
from .mcp_tools import public_view
from .metrics import ERRORS_TOTAL
from .ports import Channel, SessionTransport, channel_of
from .response import ResponseRun
from .turn_taking import TurnTaking

if TYPE_CHECKING:
    from ..settings import Settings
    from .tracing import TurnTracer

log = logging.getLogger("livevox.session")

Handler = Callable[[dict[str, Any]], Awaitable[None]]



class RealtimeSession(InputAudioEvents, ItemEvents, ResponseEvents):
    def __init__(
        self,
        *,
        engines: EngineSet,
        settings: Settings,
        dialect: Dialect,
        transport: SessionTransport,
        model: str | None,
        api_version: str | None = None,
        agent_name: str | None = None,
        latency_events: bool = False,
    ) -> None:
        self.engines = engines
        self.settings = settings
        self.limits = settings.limits
        self.dialect = dialect
        self.transport = transport
        self.api_version = api_version
        self.agent_name = agent_name
        self.latency_events = latency_events
        self.turn_tracer: TurnTracer | None = None  # the server's, when tracing is on
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.created_at = time.time()
        self.config = default_session(model or agent_name, api_version, settings.llm.default_instructions)
        self.conversation = Conversation(self.limits.max_items)
        self.response: ResponseRun | None = None
        self._side_responses: set[ResponseRun] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.mcp = McpTools(self, settings.mcp)
        self.extra_handlers: dict[str, Handler] = {}
        self.closed = False
        self._last_activity = time.monotonic()
        # the microphone path and turn-taking, on the 16 kHz session clock
        self.audio = InputAudio(self.id, self.config["input_audio_sampling_rate"], self.limits.max_input_buffer_seconds)
        self.turns = TurnTaking(self, self.audio, engines.vad.stream(), engines.turn, self.config["turn_detection"],
                                settings.stt.tail_ms, getattr(engines.llm, "end_of_turn_probability", None),
                                transcript_wait_ms=settings.turn.transcript_wait_ms,
                                backchannels=tuple(settings.turn.backchannels),
                                backchannel_max_ms=settings.turn.backchannel_max_ms,
                                piece_s=settings.stt.piece_s)
        self._playback: dict[str, tuple[float, float]] = {}  # item -> (first send time, ms sent)
        self.idle = IdleTimeout(self, self.turns, self.audio)
        self._handlers: dict[str, Handler] = {
            "session.update": self._on_session_update,
            "transcription_session.update": self._on_unsupported_event,
            "session.avatar.connect": self._on_unsupported_event,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_item_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_clear,
        }

    # ================================================================ lifecycle

    async def start(self) -> None:
        await self.emit({"type": "session.created", "session": self.session_view()})
        if self.agent_name:
            await self.send_error(unsupported(
                f"Foundry agent '{self.agent_name}' (agent mode); the configured local LLM answers instead",
                "agent-name"), None)
        self._spawn(self._watchdog())

    async def close(self) -> None:
        """Free everything: responses, speculation, background tasks. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.idle.stop()
        await self.turns.close()
        runs = [r for r in (self.response, *self._side_responses) if r is not None]
        for run in runs:
            run.silence()
            await run.cancel("client_disconnected")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        self.conversation.entries.clear()
        self.audio.clear()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watchdog(self) -> None:
        started = time.monotonic()
        while not self.closed:
            await asyncio.sleep(min(1.0, self.limits.idle_timeout_seconds / 4))
            now = time.monotonic()
            if now - started >= self.limits.max_session_seconds:
                await self._expire("session_expired", "The session reached its maximum duration "
                                   f"of {self.limits.max_session_seconds:g} seconds.")
                return
            if now - self._last_activity >= self.limits.idle_timeout_seconds:
                await self._expire("idle_timeout", "The session was idle for "
                                   f"{self.limits.idle_timeout_seconds:g} seconds.")
                return

    async def _expire(self, code: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.send_error(ProtocolError(code, message), None)
        with contextlib.suppress(Exception):
            await self.transport.close(1000, code)

    # ================================================================ output

    def session_view(self) -> dict[str, Any]:
        extra = {"id": self.id, "expires_at": int(self.created_at + self.limits.max_session_seconds)}
        if self.agent_name:
            extra["agent"] = {"type": "agent", "name": self.agent_name, "agent_id": self.agent_name}
        cfg = {**self.config, "tools": [public_view(t) for t in self.config["tools"]]}
        return self.dialect.session_view(cfg, extra)

    def _stamped(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"type": event["type"], "event_id": new_id("event"), **{k: v for k, v in event.items() if k != "type"}}

    async def emit(self, event: dict[str, Any], route: Channel | None = None) -> None:
        if self.closed and event["type"] != "error":
            return
        ev = self._stamped(event)
        wire = self.dialect.outbound(ev)
        if wire is None:
            return
        await self.transport.send_event(wire, route or channel_of(ev))

    @property
    def item_done_events(self) -> bool:
        return self.dialect.item_done_events

    def greeting(self) -> dict[str, Any]:
        """`session.created` in this session's dialect, for a socket that joins later (side-band)."""
        return self.dialect.outbound(self._stamped({"type": "session.created", "session": self.session_view()})) or {}

    async def send_error(self, err: ProtocolError, event_id: str | None) -> None:
        ERRORS_TOTAL.labels(err.code).inc()
        await self.emit({"type": "error", "error": err.to_error(event_id)})

    async def warn(self, message: str, code: str = "unsupported_setting") -> None:
        await self.emit({"type": "warning", "warning": {"message": message, "code": code}})

    # ================================================================ input

    async def handle_frame(self, data: str | bytes) -> None:
        """One client frame from any channel. Never raises for bad input."""
        self._last_activity = time.monotonic()
        event_id: str | None = None
        try:
            size = len(data)
            if isinstance(data, str) and size * 4 > self.limits.max_frame_bytes >= size:
                size = len(data.encode("utf-8", "surrogatepass"))  # a str's length is not its bytes
            if size > self.limits.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"The frame is {size} bytes; the limit is "
                                    f"{self.limits.max_frame_bytes} bytes (limits.max_frame_bytes).")
            text = jsonguard.as_text(data)
            event = jsonguard.loads(text, jsonguard.JsonBounds.of(self.limits))
            if not isinstance(event, dict):
                raise ProtocolError("invalid_event", "An event must be a JSON object.")
            bad = jsonguard.invalid_string_path(event, text)
            raw_id = event.get("event_id")
            # Echoed in error.event_id: only a string that is valid Unicode.
            event_id = raw_id if isinstance(raw_id, str) and bad != "event_id" else None
            if bad is not None:
                raise jsonguard.surrogate_error(bad)
            await self.handle_event(event)
        except ProtocolError as err:
            await self.send_error(err, event_id)
        except Exception as exc:  # a bug must not end the session
            log.exception("session %s: unhandled error", self.id)
            await self.send_error(ProtocolError("server_error", f"internal error: {type(exc).__name__}",
                                                type="server_error"), event_id)

    async def handle_event(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        if not isinstance(etype, str):
            raise ProtocolError("invalid_event", "The event has no string 'type'.", param="type")
        if "event_id" in event and not isinstance(event["event_id"], str | None):
            raise ProtocolError("invalid_type", "'event_id' must be a string", param="event_id")
        handler = self.extra_handlers.get(etype) or self._handlers.get(etype)
        if handler is None:
            raise ProtocolError("unknown_event_type", f"Unknown event type '{jsonguard.safe_text(etype)}'.",
                                param="type")
        if etype in RESTART_EVENTS:
            self.idle.reset()
        await handler(self.dialect.inbound(event))

    async def _on_unsupported_event(self, event: dict[str, Any]) -> None:
        raise unsupported(f"The '{event['type']}' event", "type")

    # ---------------------------------------------------------------- session

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        if "session" not in event:
            raise ProtocolError("missing_required_parameter", "Missing required parameter: 'session'.",
                                param="session")
        update = event["session"]
        new, warnings = merge_update(self.config, update, self.api_version)
        if self.audio.size and (new["input_audio_format"] != self.config["input_audio_format"]
                              or new["input_audio_sampling_rate"] != self.config["input_audio_sampling_rate"]):
            raise ProtocolError("invalid_value", "The input audio format cannot change while audio is "
                                "buffered.", param="session.input_audio_format")
        self.mcp.check(new["tools"], "session")
        old = self.config
        await self.apply_config(new)
        warnings += capability_warnings(new, old, self.engines.tts)
        for w in warnings:
            await self.warn(w)
        await self.emit({"type": "session.updated", "session": self.session_view()})
        self.mcp.configure(new["tools"])  # in the background: the session goes on meanwhile

    async def apply_config(self, new: dict[str, Any]) -> None:
        if new["voice"] != self.config["voice"]:  # unknown voice (strict map), bad rate: nothing applied
            self.engines.voices.check(new["voice"])
        td = new["turn_detection"]
        if td is not None and policy_config(td).uses_model and not self.engines.turn.available:
            raise ProtocolError("unsupported_value", f"turn_detection.type {td.get('type')!r} needs an end-of-turn "
                                "model, and this server has none (turn.engine = \"none\").",
                                param="session.turn_detection.type")
        idle_ms = (td or {}).get("idle_timeout_ms")
        if idle_ms is not None and idle_ms > self.limits.max_idle_timeout_ms:
            raise ProtocolError("invalid_value", "Invalid value for 'session.turn_detection.idle_timeout_ms': at most "
                                f"{self.limits.max_idle_timeout_ms} (limits.max_idle_timeout_ms)",
                                param="session.turn_detection.idle_timeout_ms")
        old = self.config
        self.config = new
        self.audio.configure(new, old)
        if new["turn_detection"] != old["turn_detection"]:
            await self.turns.configure(new["turn_detection"])
            self.idle.configure(new["turn_detection"])

    # ---------------------------------------------------------------- audio in

    # ---------------------------------------------------------------- turn-taking's host

    def conversation_version(self) -> int:
        return self.conversation.version

    # ---------------------------------------------------------------- conversation

    # ---------------------------------------------------------------- responses

    # ---------------------------------------------------------------- helpers for responses

    def playback_end(self, item_id: str) -> float:
        """When the client will have played the item's audio sent so far: it plays in real time
        from the first delta (transports that play audio themselves report `pending_audio`)."""
        t0, ms = self._playback.get(item_id, (0.0, 0.0))
        return t0 + ms / 1000

    def audio_sent(self, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        t0, ms = self._playback.get(item_id, (time.monotonic(), 0.0))
        self._playback[item_id] = (t0, ms + pcm24k.size * 1000 / ITEM_RATE)
        self.audio.played(pcm24k)
