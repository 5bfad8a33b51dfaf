"""The transport-agnostic realtime session: one conversation, its audio input, turn detection
and responses. Transports hand it client frames and audio; it answers through a
`SessionTransport`. Handlers are split by event family.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..core import audio as audio_codec
from ..core.audio import SESSION_RATE
from ..core.errors import ProtocolError, unsupported
from ..core.ids import new_id
from ..engines.base import EngineError, EngineSet, TranscribeOptions
from . import jsonguard
from .config import OUTPUT_FORMATS, default_session, merge_update
from .conversation import Conversation, Entry, dumps, normalize_client_item, to_messages
from .dialects import Dialect
from .input_audio import InputAudio
from .metrics import ERRORS_TOTAL, TurnTimings
from .response import ResponseContext, ResponseParams, ResponseRun
from .semantic_turn import policy_config
from .transport import Route, SessionTransport
from .turn_taking import Speculation, TurnTaking, discard

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("livevox.session")

RATE = SESSION_RATE
Handler = Callable[[dict[str, Any]], Awaitable[None]]

_CONTROL_PREFIXES = ("session.", "error", "warning", "rtc.", "response.function_call_arguments")
_TOOL_ITEMS = ("function_call", "function_call_output")


class RealtimeSession:
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
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.created_at = time.time()
        self.config = default_session(model or agent_name, api_version, settings.llm.default_instructions)
        self.conversation = Conversation(self.limits.max_items)
        self.response: ResponseRun | None = None
        self._side_responses: set[ResponseRun] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.extra_handlers: dict[str, Handler] = {}
        self.closed = False
        self._last_activity = time.monotonic()
        # the microphone path and turn-taking, on the 16 kHz session clock
        self.audio = InputAudio(self.id, self.config["input_audio_sampling_rate"], self.limits.max_input_buffer_seconds)
        self.turns = TurnTaking(self, self.audio, engines.vad.stream(), engines.turn, self.config["turn_detection"],
                                settings.stt.tail_ms)
        self._playback: dict[str, tuple[float, float]] = {}  # item -> (first send time, ms sent)
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
        await self.turns.drop_speculation()
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
        return self.dialect.session_view(self.config, extra)

    def route(self, event: dict[str, Any]) -> Route:
        t = event["type"]
        if t.startswith(_CONTROL_PREFIXES):
            return Route.CONTROL
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") in _TOOL_ITEMS:
            return Route.CONTROL
        return Route.EVENTS

    def _stamped(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"type": event["type"], "event_id": new_id("event"), **{k: v for k, v in event.items() if k != "type"}}

    async def emit(self, event: dict[str, Any], route: Route | None = None) -> None:
        if self.closed and event["type"] != "error":
            return
        ev = self._stamped(event)
        wire = self.dialect.outbound(ev)
        if wire is None:
            return
        await self.transport.send_event(wire, route or self.route(ev))

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
        await self.apply_config(new)
        for w in warnings:
            await self.warn(w)
        await self.emit({"type": "session.updated", "session": self.session_view()})

    async def apply_config(self, new: dict[str, Any]) -> None:
        if new["voice"] != self.config["voice"]:  # unknown voice (strict map), bad rate: nothing applied
            self.engines.voices.check(new["voice"])
        td = new["turn_detection"]
        if td is not None and policy_config(td).uses_model and not self.engines.turn.available:
            raise ProtocolError("unsupported_value", f"turn_detection.type {td.get('type')!r} needs an end-of-turn "
                                "model, and this server has none (turn.engine = \"none\").",
                                param="session.turn_detection.type")
        old = self.config
        self.config = new
        self.audio.configure(new, old)
        if new["turn_detection"] != old["turn_detection"]:
            await self.turns.configure(new["turn_detection"])

    # ---------------------------------------------------------------- audio in

    async def _on_append(self, event: dict[str, Any]) -> None:
        if not self.transport.audio_in_events:
            raise ProtocolError("unsupported_event", "This is a WebRTC call: the microphone audio is the RTP "
                                "track, so input_audio_buffer.append is not accepted.", param="type")
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("invalid_type", "'audio' must be a base64 string.", param="audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_base64", "'audio' is not valid base64.", param="audio") from None
        codec = self.config["input_audio_format"]
        samples = audio_codec.decode(data, codec)
        # A WAV header at the start of an append (SDK tests send whole files) is stripped.
        if codec == "pcm16" and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            samples = _strip_wav(data)
        await self.feed_audio(samples)

    async def feed_audio(self, samples: npt.NDArray[np.int16], rate: int | None = None) -> None:
        """Audio from any transport, at the session's input rate (or `rate`)."""
        self._last_activity = time.monotonic()
        pcm = await self.audio.clean(samples, rate)
        if pcm.size == 0:
            return
        detecting = self.config["turn_detection"] is not None
        start = self.audio.append(pcm, bounded=not detecting)
        if detecting:
            await self.turns.heard(pcm, start)

    # ---------------------------------------------------------------- turn-taking's host

    def conversation_version(self) -> int:
        return self.conversation.version

    def answer_audible(self) -> bool:
        """An answer is being generated, or its audio is still playing out of the transport."""
        return (self.response is not None and self.response.active) or \
            self.transport.pending_audio() is not None

    async def barge_in(self, auto_truncate: bool) -> None:
        """The user speaks over the answer: the session decides, the transport only drops audio."""
        run = self.response
        cut = self.transport.discard_pending_audio()
        self.audio.stop_far()
        if run is not None and run.active:
            await run.cancel("turn_detected")
            msg = run.message
            if auto_truncate and msg is not None and "audio" in run.params.modalities and msg.audio:
                await self._truncate(msg, 0, self.played_ms(msg.id))
            return
        # A finished answer still playing out of the transport (WebRTC): the item keeps what was heard.
        if cut is not None and auto_truncate:
            with contextlib.suppress(ProtocolError):  # the item may be gone (deleted)
                entry = self.conversation.get(cut)
                if entry.audio:
                    await self._truncate(entry, 0, self.played_ms(cut))

    def speculate(self, stt: asyncio.Future[str]) -> ResponseRun | None:
        td = self.config["turn_detection"] or {}
        if not td.get("create_response", True) or (self.response is not None and self.response.active):
            return None
        # The LLM may start too: nothing it does is visible until the turn really ends.
        snapshot = list(self.conversation.entries)
        instructions = self.config["instructions"]

        async def messages() -> list[dict[str, Any]]:
            text = await asyncio.shield(stt)
            msgs = await to_messages(snapshot, instructions)
            if text:
                msgs.append({"role": "user", "content": text})
            return msgs

        # Its own timings: a discarded attempt must not leave its marks on the turn.
        params = self._params({})
        run = ResponseRun(self, params, self._response_context(params), messages, TurnTimings(), gated=True)
        run.start()
        return run

    async def commit_turn(self, item_id: str, spec: Speculation | None, timings: TurnTimings,
                          stt_end: int) -> None:
        await self._commit(item_id, spec=spec, timings=timings, from_vad=True, stt_end=stt_end)

    async def _on_commit(self, event: dict[str, Any]) -> None:
        item_id, timings = await self.turns.manual_commit()
        await self._commit(item_id, spec=None, timings=timings, from_vad=False)

    async def _commit(self, item_id: str, *, spec: Speculation | None, timings: TurnTimings,
                      from_vad: bool, stt_end: int | None = None) -> None:
        # A VAD turn is transcribed up to its tail (what the speculation heard); a manual commit whole.
        stt_audio = self.audio.take(self.audio.start, stt_end)
        audio = self.audio.take(self.audio.start)
        if audio.size < RATE // 10:
            await discard(spec)
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                f"audio, but buffer only has {audio.size * 1000 / RATE:.2f}ms of audio.")
        self.audio.clear()
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        loop = asyncio.get_running_loop()
        entry = Entry(item, transcript=loop.create_future(), input_audio=audio)
        prev = self.conversation.insert(entry)
        await self.emit({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})
        await self.emit({"type": "conversation.item.created", "previous_item_id": prev, "item": dict(item)})
        await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": dict(item)})
        stt = spec.stt if spec is not None else asyncio.ensure_future(self.transcribe_text(stt_audio))
        if stt.done():  # speculative transcription finished in the silence window: report it first
            await self._finish_transcription(entry, stt, timings)
        else:
            self._spawn(self._finish_transcription(entry, stt, timings))
        td = self.config["turn_detection"] or {}
        if not from_vad or not td.get("create_response", True):
            if spec is not None and spec.response is not None:
                await spec.response.discard()
            return
        if self.response is not None and self.response.active:
            if spec is not None and spec.response is not None:
                await spec.response.discard()
            return  # interrupt_response false: the current answer goes on; no second response
        if spec is not None and spec.response is not None:
            run = spec.response
            run.timings.marks.update(timings.marks)  # end of speech and decision, from the turn
            self.response = run
            await run.open_gate()
            self._watch_response(run)
        else:
            await self._start_response(self._params({}), None, timings)

    async def transcribe_text(self, audio: npt.NDArray[np.int16]) -> str:
        cfg = self.config.get("input_audio_transcription") or {}
        opts = TranscribeOptions(language=_lang(cfg.get("language") or self.settings.stt.language),
                                 prompt=cfg.get("prompt"), model=cfg.get("model"))
        pieces = []
        async for piece in self.engines.stt.transcribe(audio_codec.to_float(audio), opts, self.id):
            pieces.append(piece)
        return "".join(pieces).strip()

    def _transcription_events(self) -> bool:
        return self.dialect.name == "voicelive" or self.config.get("input_audio_transcription") is not None

    async def _finish_transcription(self, entry: Entry, stt: asyncio.Future[str],
                                    timings: TurnTimings) -> None:
        part = entry.item["content"][0]
        try:
            text = await stt
        except asyncio.CancelledError:
            if entry.transcript is not None and not entry.transcript.done():
                entry.transcript.set_result("")
            raise
        except Exception as exc:
            part["transcript"] = ""
            assert entry.transcript is not None
            entry.transcript.set_result("")
            if self._transcription_events():
                code = exc.code if isinstance(exc, EngineError) else "transcription_failed"
                await self.emit({"type": "conversation.item.input_audio_transcription.failed",
                                 "item_id": entry.id, "content_index": 0,
                                 "error": {"type": "server_error", "code": code, "message": str(exc),
                                           "param": None}})
            return
        timings.mark("transcript_final")
        part["transcript"] = text
        assert entry.transcript is not None
        if not entry.transcript.done():
            entry.transcript.set_result(text)
        if self._transcription_events():
            if text and self.engines.stt.streams:
                await self.emit({"type": "conversation.item.input_audio_transcription.delta",
                                 "item_id": entry.id, "content_index": 0, "delta": text})
            await self.emit({"type": "conversation.item.input_audio_transcription.completed",
                             "item_id": entry.id, "content_index": 0, "transcript": text})

    async def _on_clear(self, event: dict[str, Any]) -> None:
        await self.turns.clear()
        self.audio.clear()
        await self.emit({"type": "input_audio_buffer.cleared"})

    # ---------------------------------------------------------------- conversation

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = normalize_client_item(event.get("item"))
        prev_id = event.get("previous_item_id")
        if prev_id is not None and not isinstance(prev_id, str):
            raise ProtocolError("invalid_type", "'previous_item_id' must be a string", param="previous_item_id")
        entry = Entry(item)
        prev = self.conversation.insert(entry, prev_id)
        await self.emit({"type": "conversation.item.created", "previous_item_id": prev, "item": item})
        await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        entry = self.conversation.get(event.get("item_id"))
        item = dict(entry.item)
        if entry.audio and item.get("content"):
            codec, rate = OUTPUT_FORMATS[self.config["output_audio_format"]]
            pcm = audio_codec.resample(np.concatenate(entry.audio), 24000, rate)
            data = base64.b64encode(audio_codec.encode(pcm, codec)).decode("ascii")
            if len(data) < self.limits.max_outgoing_frame_bytes * 4:  # keep the frame well under 4 MiB
                item["content"] = [{**item["content"][0], "audio": data}]
        elif entry.input_audio is not None and item.get("content"):
            # The user's audio as the server heard it, in the session's input format.
            rate = self.config["input_audio_sampling_rate"]
            pcm = audio_codec.resample(entry.input_audio, RATE, rate)
            data = base64.b64encode(audio_codec.encode(pcm, self.config["input_audio_format"])).decode("ascii")
            if len(data) < self.limits.max_outgoing_frame_bytes * 4:
                item["content"] = [{**item["content"][0], "audio": data}]
        await self.emit({"type": "conversation.item.retrieved", "item": item})

    async def _on_item_truncate(self, event: dict[str, Any]) -> None:
        entry = self.conversation.get(event.get("item_id"))
        content_index = event.get("content_index", 0)
        end_ms = event.get("audio_end_ms")
        if not isinstance(content_index, int) or isinstance(content_index, bool):
            raise ProtocolError("invalid_type", "'content_index' must be an integer", param="content_index")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise ProtocolError("invalid_type", "'audio_end_ms' must be a non-negative integer",
                                param="audio_end_ms")
        if entry.item.get("role") != "assistant" or content_index != 0 or not entry.item.get("content") \
                or entry.item["content"][0].get("type") != "audio":
            raise ProtocolError("invalid_value", "Only an assistant message's audio content can be truncated.",
                                param="content_index")
        heard = self.transport.played_ms(entry.id)
        if heard is not None and end_ms > heard:
            end_ms = heard  # the user cannot have heard more than the transport played
        if end_ms > entry.audio_ms():
            raise ProtocolError("invalid_value", f"audio_end_ms {end_ms} is beyond the item's audio "
                                f"({entry.audio_ms()} ms).", param="audio_end_ms")
        if self.response is not None and self.response.active and self.response.message is entry:
            self.transport.discard_pending_audio()
            await self.response.cancel("client_cancelled")
        elif self.transport.pending_audio() == entry.id:
            self.transport.discard_pending_audio()  # the item's audio still queued stops playing
        await self._truncate(entry, content_index, end_ms)

    async def _truncate(self, entry: Entry, content_index: int, end_ms: int) -> None:
        keep = end_ms * 24000 // 1000
        whole = np.concatenate(entry.audio) if entry.audio else np.zeros(0, np.int16)
        entry.audio = [whole[:keep]]
        text = ""
        for offset, piece in entry.clause_marks:
            if offset >= end_ms:
                break
            text += piece
        part = entry.item["content"][0]
        part["transcript"] = text.strip()
        entry.clause_marks = [(o, p) for o, p in entry.clause_marks if o < end_ms]
        self.conversation.touch()
        await self.emit({"type": "conversation.item.truncated", "item_id": entry.id,
                         "content_index": content_index, "audio_end_ms": end_ms})

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        self.conversation.delete(item_id)
        await self.emit({"type": "conversation.item.deleted", "item_id": item_id})

    # ---------------------------------------------------------------- responses

    def _params(self, r: dict[str, Any]) -> ResponseParams:
        c = self.config
        mot = r.get("max_output_tokens", r.get("max_response_output_tokens", c["max_response_output_tokens"]))
        return ResponseParams(
            modalities=r.get("modalities", c["modalities"]),
            instructions=r.get("instructions", c["instructions"]),
            voice=r.get("voice", c["voice"]),
            output_audio_format=r.get("output_audio_format", c["output_audio_format"]),
            tools=r.get("tools", c["tools"]),
            tool_choice=r.get("tool_choice", c["tool_choice"]),
            temperature=r.get("temperature", c["temperature"]),
            max_output_tokens=mot,
            speed=c.get("speed", 1.0),
            in_conversation=r.get("conversation", "auto") != "none",
            metadata=r.get("metadata"),
        )

    def _validate_response(self, r: Any) -> dict[str, Any]:
        if r is None:
            return {}
        if not isinstance(r, dict):
            raise ProtocolError("invalid_type", "'response' must be an object", param="response")
        known = {"modalities", "instructions", "voice", "output_audio_format", "tools", "tool_choice",
                 "temperature", "max_output_tokens", "max_response_output_tokens", "conversation",
                 "metadata", "input", "commit", "cancel_previous", "input_audio_format",
                 "pre_generated_assistant_message", "reasoning_effort", "interim_response", "animation",
                 "append_input_items", "input_items", "prompt", "tracing", "parallel_tool_calls"}
        for key in r:
            if key not in known:
                raise ProtocolError("unknown_parameter", f"Unknown parameter: 'response.{key}'.",
                                    param=f"response.{key}")
        probe = {k: r[k] for k in ("modalities", "instructions", "voice", "output_audio_format", "tools",
                                   "tool_choice", "temperature") if k in r}
        mot = r.get("max_output_tokens", r.get("max_response_output_tokens"))
        if mot is not None:
            probe["max_response_output_tokens"] = mot
        merge_update(self.config, probe, self.api_version, prefix="response")
        if "voice" in r:  # the voice map decides, as for session.voice (strict: the known ones only)
            self.engines.voices.check(r["voice"], param="response.voice")
        conv = r.get("conversation", "auto")
        if conv not in ("auto", "none", None):
            raise ProtocolError("invalid_value", "'response.conversation' must be 'auto' or 'none'",
                                param="response.conversation")
        md = r.get("metadata")
        if md is not None:
            if not isinstance(md, dict) or len(md) > 16 or any(
                    not isinstance(k, str) or len(k) > 64 or not isinstance(v, str) or len(v) > 512
                    for k, v in md.items()):
                raise ProtocolError("invalid_value", "'response.metadata' must be at most 16 string pairs "
                                    "(keys <= 64 chars, values <= 512 chars)", param="response.metadata")
        if "input" in r and not isinstance(r["input"], list):
            raise ProtocolError("invalid_type", "'response.input' must be an array", param="response.input")
        return r

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        r = self._validate_response(event.get("response"))
        params = self._params(r)
        if params.in_conversation and self.response is not None and self.response.active:
            raise ProtocolError("conversation_already_has_active_response",
                                f"Conversation already has an active response in progress: {self.response.id}. "
                                "Wait until the response is finished before creating a new one.")
        entries: list[Entry] | None = None
        if "input" in r:
            entries = []
            for i, raw in enumerate(r["input"]):
                if isinstance(raw, dict) and raw.get("type") == "item_reference":
                    entries.append(self.conversation.get(raw.get("id"), f"response.input[{i}].id"))
                else:
                    try:
                        entries.append(Entry(normalize_client_item(raw)))
                    except ProtocolError as err:
                        err.param = f"response.{err.param}" if err.param else None
                        raise
        pre = r.get("pre_generated_assistant_message")
        if pre is not None:
            raise unsupported("pre_generated_assistant_message", "response.pre_generated_assistant_message")
        await self._start_response(params, entries, TurnTimings())

    async def _start_response(self, params: ResponseParams, entries: list[Entry] | None,
                              timings: TurnTimings) -> None:
        source = entries

        async def messages() -> list[dict[str, Any]]:
            items = source if source is not None else list(self.conversation.entries)
            return await to_messages(items, params.instructions)

        run = ResponseRun(self, params, self._response_context(params), messages, timings)
        timings.response_start = time.monotonic()
        if params.in_conversation:
            self.response = run
        else:
            self._side_responses.add(run)
        run.start()
        self._watch_response(run)

    def _watch_response(self, run: ResponseRun) -> None:
        async def after() -> None:
            await run.done.wait()
            self._side_responses.discard(run)
            if self.latency_events and not self.closed and run.timings.marks:
                await self.emit({"type": "livevox.turn.metrics", "response_id": run.id,
                                 "stages_ms": run.timings.relative_ms()})
            run.timings.observe()

        self._spawn(after())

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        rid = event.get("response_id")
        run = self.response
        if rid is not None:
            run = next((r for r in (self.response, *self._side_responses) if r is not None and r.id == rid),
                       None)
        if run is None or not run.active:
            raise ProtocolError("response_cancel_not_active", "Cancellation failed: no active response found.")
        self.transport.discard_pending_audio()
        await run.cancel("client_cancelled")

    async def _on_output_clear(self, event: dict[str, Any]) -> None:
        cut = self.transport.discard_pending_audio()  # a transport that cut audio reports .cleared itself
        self.audio.stop_far()
        if cut is None:
            rid = self.response.id if self.response is not None else None
            await self.emit({"type": "output_audio_buffer.cleared", "response_id": rid})

    # ---------------------------------------------------------------- helpers for responses

    def _response_context(self, params: ResponseParams) -> ResponseContext:
        value = params.max_output_tokens
        anim = self.config.get("animation") or {}
        return ResponseContext(
            max_tokens=self.settings.llm.max_tokens if value == "inf" else min(int(value), 4096),
            # The voice map (`[tts.voice_map]`); the result carries the voice's `rate` (engines/voices.py).
            voice=self.engines.voices.resolve(params.voice, lenient=True),
            parallel_tool_calls=self.config.get("parallel_tool_calls", True),
            truncation=self.config.get("truncation", "auto"),
            auto_retention_ratio=self.settings.llm.auto_retention_ratio,
            first_clause_max_words=self.settings.tts.first_clause_max_words,
            word_timestamps="word" in (self.config.get("output_audio_timestamp_types") or []),
            visemes="viseme_id" in (anim.get("outputs") or []),
            max_audio_delta_bytes=self.limits.max_outgoing_frame_bytes,
        )

    def audio_sent(self, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        t0, ms = self._playback.get(item_id, (time.monotonic(), 0.0))
        self._playback[item_id] = (t0, ms + pcm24k.size * 1000 / 24000)
        self.audio.played(pcm24k)

    def played_ms(self, item_id: str) -> int:
        """Audio the user has heard: the transport's count, else real-time playback since the first delta."""
        exact = self.transport.played_ms(item_id)
        entry_ms = 0
        with contextlib.suppress(ProtocolError):
            entry_ms = self.conversation.get(item_id).audio_ms()
        if exact is not None:
            return min(exact, entry_ms)
        t0, _ = self._playback.get(item_id, (time.monotonic(), 0.0))
        return int(min(entry_ms, (time.monotonic() - t0) * 1000))


def _lang(language: str | None) -> str | None:
    if not language:
        return None
    first = language.split(",")[0].strip()
    return first.split("-")[0].lower() or None


def _strip_wav(data: bytes) -> npt.NDArray[np.int16]:
    import io
    import wave

    try:
        with wave.open(io.BytesIO(data)) as w:
            frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.int16)
    except (wave.Error, EOFError):
        return audio_codec.decode(data, "pcm16")


__all__ = ["RealtimeSession", "dumps"]
