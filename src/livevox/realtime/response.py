"""One response: LLM tokens -> clauses -> TTS audio, streamed as the canonical event sequence.

The LLM and TTS run concurrently: a clause goes to TTS as soon as it is complete. A response
can be *gated*: it computes ahead (speculatively, during the end-of-turn silence) but nothing
reaches the client, or the conversation, until the gate opens; a discarded speculative
response leaves no trace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from ..core import audio as audio_codec
from ..core.audio import Int16Array
from ..core.ids import new_id
from ..engines.base import (
    AlignedTTS,
    ChunkMarks,
    ContextOverflow,
    EngineError,
    EngineSet,
    Finish,
    LLMEvent,
    SynthesisOptions,
    TextDelta,
    ToolCallDelta,
    continues_assistant,
    speakable,
)
from . import first_clause, truncation
from .clauses import ClauseSplitter
from .config import OUTPUT_FORMATS
from .conversation import ConversationItem
from .interim_speech import InterimSpeaker
from .llm_request import close_stream, listed_tools, llm_events
from .mcp_session import McpBinding
from .metrics import (
    LLM_PAUSES_TOTAL,
    LLM_YIELDS_TOTAL,
    RESPONSES_TOTAL,
    TurnTimings,
    count_prompt_tokens,
    turn_ended,
    turn_started,
)
from .ports import Channel
from .response_params import ResponseContext, ResponseParams

if TYPE_CHECKING:
    from .conversation import Conversation
    from .mcp_session import McpTools
    from .ports import SessionTransport

log = logging.getLogger("livevox.response")

Thunk = Callable[[], Awaitable[None]]

#: TTS queue priorities (core/executor.py; lower first).
FIRST_CLAUSE, RUNNING_OUT, AHEAD = 0, 1, 2
#: An answer with less than this still to play is running out: its next clause is urgent.
LOW_WATER_MS = 1500
#: Speech per character of text not yet synthesized, to tell how far ahead an answer is
#: (Piper's voices speak about 15 characters a second).
MS_PER_CHAR = 65

class ResponseHost(Protocol):
    """What a response needs from its session; nothing else of the session is reachable."""

    id: str
    conversation_id: str
    conversation: Conversation
    engines: EngineSet
    transport: SessionTransport
    mcp: McpTools

    async def emit(self, event: dict[str, Any], route: Channel | None = None) -> None: ...

    def audio_sent(self, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        """The item's audio, as it leaves for the client (playback accounting, echo reference)."""
        ...


class ResponseRun:
    def __init__(
        self,
        host: ResponseHost,
        params: ResponseParams,
        context: ResponseContext,
        messages: Callable[[], Awaitable[list[dict[str, Any]]]],
        timings: TurnTimings | None = None,
        gated: bool = False,
    ) -> None:
        self.host = host
        self.params = params
        self.context = context
        self.id = new_id("resp")
        self.status = "in_progress"
        self.status_details: dict[str, Any] | None = None
        self.output: list[dict[str, Any]] = []
        self.input_tokens = 0
        self.cached_tokens = 0  # of input_tokens, served from the engine's prompt cache
        self.output_tokens = 0
        self.timings = timings or TurnTimings()
        self._messages = messages
        self._gated = gated
        self._gate_opened = asyncio.Event()  # also set when a gated run is discarded
        if not gated:
            self._gate_opened.set()
        self._pending: list[Thunk] = []
        self._emit_lock = asyncio.Lock()
        self._silent = False
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: str | None = None
        self.done = asyncio.Event()
        # the spoken/text message item being built
        self._msg: ConversationItem | None = None
        self._msg_index = -1
        self._text = ""  # transcript (audio) or text sent so far
        self._calls: dict[int, tuple[ConversationItem, int]] = {}
        #: MCP tool calls by LLM call index: the mcp_call item, its output index, its tool.
        self._mcp_calls: dict[int, tuple[ConversationItem, int, McpBinding]] = {}
        self._mcp: dict[str, McpBinding] = {}  # function name the LLM sees -> MCP tool
        self._llm_params = params
        self._audio_ms = 0.0
        self._first_audio_sent = False
        codec, rate = OUTPUT_FORMATS[params.output_audio_format]
        self._codec, self._out_rate = codec, rate
        self._audio_started = False
        self._sent_marks: set[str] = set()
        self._clauses_queued = 0
        self._synth_chars = 0  # characters of the answer's text whose audio is made
        self._synth_progress = asyncio.Event()  # the TTS took another clause
        self.pauses = 0  # times the answer stopped generating because it was far ahead (pacing)
        # interim filler (interim_speech.py): the answer's events wait while it speaks
        self.llm_messages: list[dict[str, Any]] = []
        self.answer_audio = asyncio.Event()  # the answer's first audio is ready
        self.answer_llm = asyncio.Event()  # the answer's LLM request is about to start
        self._hold = False
        self._held: list[Thunk] = []
        self._interim: InterimSpeaker | None = None
        self._interim_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # When a filler may speak, the answer's message opens at its first audio, so that a
        # filler that starts before then comes first in the response's output.
        self._defer_message = params.interim is not None and "audio" in params.modalities

    # ------------------------------------------------------------ control

    def start(self) -> None:
        with self.timings.recording():  # its tasks' model jobs count for its turn
            self.task = asyncio.create_task(self._main(), name=f"response-{self.id}")

    async def open_gate(self) -> None:
        async with self._emit_lock:
            self.timings.response_start = time.monotonic()
            pending, self._pending = self._pending, []
            for thunk in pending:
                await thunk()
            self._gated = False
        self._gate_opened.set()

    async def cancel(self, reason: str) -> None:
        if self.task is None or self.task.done():
            return
        self.cancel_reason = reason
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def silence(self) -> None:
        """Nothing more of this response reaches the client (the session is closing)."""
        self._silent = True

    @property
    def message(self) -> ConversationItem | None:
        """The spoken or text message item this response is building, once it has one."""
        return self._msg

    async def discard(self) -> None:
        """Drop a gated (speculative) response without a trace."""
        self._silent = True
        self._gate_opened.set()
        await self.cancel("discarded")

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    # ------------------------------------------------------------ emission

    async def _do(self, thunk: Thunk, now: bool = False) -> None:
        """Send, or queue behind the speculation gate or a speaking filler; `now`: the filler's
        own events, which pass its hold."""
        if self._silent:
            return
        async with self._emit_lock:
            if now:
                await thunk()
            elif self._gated:
                self._pending.append(thunk)
            elif self._hold:
                self._held.append(thunk)
            else:
                await thunk()

    # ------------------------------------------------------------ interim filler

    async def hold(self) -> None:
        """The filler speaks: the answer's events wait, in order."""
        async with self._emit_lock:
            self._hold = True

    async def release(self) -> None:
        async with self._emit_lock:
            held, self._held = self._held, []
            for thunk in held:
                await thunk()
            self._hold = False

    async def _emit_now(self, event: dict[str, Any]) -> None:
        await self._event(event, now=True)

    def _start_interim(self, trigger: str) -> None:
        cfg = self.params.interim
        if (cfg is None or trigger not in cfg["triggers"] or "audio" not in self.params.modalities
                or self._interim is not None):
            return
        self._interim = InterimSpeaker(self, cfg, trigger, self._emit_now)
        self._interim_task = asyncio.create_task(self._interim.speak(), name=f"interim-{self.id}")

    async def _interim_watch(self) -> None:
        """The latency trigger: a filler when the answer's first audio is later than the threshold."""
        assert self.params.interim is not None
        await self._gate_opened.wait()  # a speculative run counts from the end-of-turn decision
        if self._silent:
            return
        start = self.timings.response_start or time.monotonic()
        delay = start + self.params.interim["latency_threshold_ms"] / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if not self.answer_audio.is_set() and self.active:
            self._start_interim("latency")

    async def _end_interim(self) -> None:
        """Before response.done: a filler that speaks ends (cut, or to its end for a tool wait)."""
        watch, self._watch_task = self._watch_task, None
        if watch is not None:
            await _cancel(watch)
        task = self._interim_task
        if task is None:
            return
        if self.status == "cancelled" or self._silent:
            await _cancel(task)
        else:
            with contextlib.suppress(Exception):
                await task
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("response %s: interim filler failed: %s", self.id, task.exception())
        if self._interim is not None:
            await self._interim.close("incomplete")
        if self._hold:
            await self.release()

    async def add_item_now(self, entry: ConversationItem, index: int) -> None:
        """An output item's added events, sent now (the filler's own)."""
        await self._item_added(entry, index, now=True)

    async def _event(self, event: dict[str, Any], route: Channel | None = None, now: bool = False) -> None:
        async def send() -> None:
            await self.host.emit(event, route)

        await self._do(send, now)

    def resource(self, final: bool = False) -> dict[str, Any]:
        p = self.params
        r: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": self.status,
            "status_details": self.status_details,
            "output": [dict(o) for o in self.output] if final else [],
            "conversation_id": self.host.conversation_id if p.in_conversation else None,
            "modalities": p.modalities,
            "voice": p.voice,
            "output_audio_format": p.output_audio_format,
            "temperature": p.temperature,
            "max_output_tokens": p.max_output_tokens,
            "metadata": p.metadata,
            "usage": None,
        }
        if final:
            r["usage"] = {
                "total_tokens": self.input_tokens + self.output_tokens,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "input_token_details": {"cached_tokens": self.cached_tokens, "text_tokens": self.input_tokens,
                                        "audio_tokens": 0, "image_tokens": 0},
                "output_token_details": {"text_tokens": self.output_tokens, "audio_tokens": 0},
            }
        return r

    # ------------------------------------------------------------ run

    async def _main(self) -> None:
        turn_started()
        try:
            await self._event({"type": "response.created", "response": self.resource()})
            interim_cfg = self.params.interim
            if interim_cfg is not None and "latency" in interim_cfg["triggers"]:
                self._watch_task = asyncio.create_task(self._interim_watch())
            await self._run()
            if self.status == "in_progress":
                self.status = "completed"
        except asyncio.CancelledError:
            self.status = "cancelled"
            reason = self.cancel_reason or "client_cancelled"
            self.status_details = {"type": "cancelled", "reason": reason}
        except ContextOverflow as exc:
            log.warning("response %s: %s", self.id, exc.message)
            self._fail(exc.code, exc.message)
        except EngineError as exc:
            log.warning("response %s failed in %s: %s", self.id, exc.stage, exc.message)
            self._fail(exc.code, f"{exc.stage} engine failed: {exc.message}")
        except Exception as exc:
            log.exception("response %s failed", self.id)
            self._fail("server_error", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            try:
                # A speculative run that finished early waits for the end-of-turn decision.
                await self._gate_opened.wait()
                await asyncio.shield(self._end_interim())
                if not self._silent:
                    await asyncio.shield(self._finish())
            finally:
                turn_ended()
                self._trace()
                self.done.set()

    def _trace(self) -> None:
        """The turn's span tree, now that it is done (even if its session is closing)."""
        tracer = getattr(self.host, "turn_tracer", None)
        if tracer is None or self.cancel_reason == "discarded":  # a dropped speculation is no turn
            return
        try:
            said = (self._msg.item.get("content") or [{}])[0] if self._msg is not None else {}
            tracer.record_turn(self.host.id, self.id, self.status, self.timings,
                               self.last_user_text() or None, said.get("transcript") or said.get("text"))
        except Exception:  # tracing must never break a response
            log.exception("response %s: tracing failed", self.id)

    def last_user_text(self) -> str:
        """The user's latest words in what the LLM was (or is about to be) sent; "" if none."""
        return next((m["content"] for m in reversed(self.llm_messages)
                     if m.get("role") == "user" and isinstance(m.get("content"), str)), "")

    def _fail(self, code: str, message: str) -> None:
        self.status = "failed"
        self.status_details = {
            "type": "failed",
            "error": {"type": "server_error", "code": code, "message": message},
        }

    def _llm_events(self, messages: list[dict[str, Any]], max_tokens: int | None = None) -> AsyncIterator[LLMEvent]:
        """The LLM's stream; `max_tokens`: a resumed answer's remaining tokens."""
        if self.params.pre_generated is not None:
            return _pre_generated(self.params.pre_generated)
        # The generator itself, not a wrapper around it: `_run` closes it on cancel, and a wrapper's
        # close would leave the inner one (and its HTTP stream) open.
        state = self.host.conversation.truncation
        if not self.params.in_conversation:  # its own (a copy: it must not move the conversation's cut)
            state = dataclasses.replace(state) if self.params.extends_conversation else truncation.State()
        ctx = self.context
        if max_tokens is not None:
            # A copy: the resumed request must not move the conversation's own cut.
            state, ctx = dataclasses.replace(state), dataclasses.replace(ctx, max_tokens=max_tokens)
        return llm_events(self._llm_params, ctx, self.host.engines.llm, messages, state, self.host.id, self.id)

    # ------------------------------------------------------------ pacing

    def _paces(self) -> bool:
        """Pacing applies: it is on, and the engine can resume an answer from its own text."""
        return (self.context.pace_ahead_ms > 0 and self.params.pre_generated is None
                and continues_assistant(self.host.engines.llm))

    def _unplayed_ms(self) -> float:
        """The answer's audio made but not yet heard: played at real-time pace from its first audio
        (negative when the caller has heard it all and waits)."""
        sent = self.timings.marks.get("first_audio_sent")
        played = (time.monotonic() - sent) * 1000 if sent is not None else 0.0
        return self._audio_ms - played

    def _ahead_ms(self, generated_chars: int) -> float:
        """How much of the answer the caller has still to hear: its audio not yet played and its
        text not yet synthesized."""
        # The voice's own pace once it has spoken a clause of this answer, else a typical one.
        per_char = self._audio_ms / self._synth_chars if self._audio_ms > 0 and self._synth_chars else MS_PER_CHAR
        return max(0.0, self._unplayed_ms()) + max(0, generated_chars - self._synth_chars) * per_char

    def _yields(self, ahead_ms: float) -> bool:
        """Far enough ahead to give the LLM to another session's answer that waits for its first
        clause."""
        limit = self.context.yield_ahead_ms
        return limit > 0 and ahead_ms > limit and first_clause.others_waiting(self.host.id) > 0

    async def _pause(self, generated_chars: int, tokens: int, ahead_ms: float, yielding: bool = False) -> int:
        """Wait until the caller is about to catch up (or, yielding, until no other answer waits
        for its first clause); the tokens the answer has left."""
        self.pauses += 1
        if yielding:
            LLM_YIELDS_TOTAL.inc()
            log.info("response %s: %.1f s ahead of playback; its LLM stream yields to other callers' first "
                     "clauses", self.id, ahead_ms / 1000)
            resume = self.context.yield_resume_ms
            with first_clause.watching() as changed:
                while (not self._silent and (ahead := self._ahead_ms(generated_chars)) > resume
                       and first_clause.others_waiting(self.host.id) > 0):
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), (ahead - resume) / 1000)
            return self.context.max_tokens - tokens
        LLM_PAUSES_TOTAL.inc()
        resume = self.context.pace_resume_ms
        log.info("response %s: %.1f s ahead of playback after %d characters; pausing its LLM stream",
                 self.id, ahead_ms / 1000, generated_chars)
        while not self._silent and (ahead := self._ahead_ms(generated_chars)) > resume:
            # Until the audio has played down to `resume`, or sooner if the TTS takes the next
            # clause (the estimate of its text then becomes its audio; a transport that paces its
            # input, as WebRTC's does, lets the TTS go on only as the audio plays).
            self._synth_progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synth_progress.wait(), (ahead - resume) / 1000)
        return self.context.max_tokens - tokens

    async def _run(self) -> None:
        p = self.params
        messages = await self._messages()
        if messages and messages[-1].get("role") == "assistant" and continues_assistant(self.host.engines.llm):
            # A new response after the agent's own message (a second response.create, an
            # out-of-band one with no input) is a new message: an engine that takes a final
            # assistant message as the start of its answer would only go on from it (and often
            # end at once, with no output). An empty user turn ends that message.
            messages = [*messages, {"role": "user", "content": ""}]
        self.llm_messages = messages
        self.timings.mark("transcript_final")
        # A speculative (gated) run never starts a discovery: it uses what is already listed.
        self._llm_params, self._mcp = await listed_tools(p, self.host.mcp, wait=p.discover_tools and not self._gated)
        audio = "audio" in p.modalities
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        tts_task = asyncio.create_task(self._speak(clauses)) if audio else None
        splitter = ClauseSplitter(first_max_words=self.context.first_clause_max_words)
        finish: Finish | None = None
        self.answer_llm.set()
        stream = self._llm_events(messages)
        paces = audio and self._paces()
        if audio:
            first_clause.wait_started(self.id, self.host.id)
        said = ""  # the answer's text so far, and its tokens (one per delta), for a resumed stream
        tokens = 0
        ended = False
        try:
            while True:
                paused_ahead: float | None = None  # how far ahead the answer was when it paused
                yielding = False
                async for ev in stream:
                    if isinstance(ev, TextDelta):
                        if not ev.text:
                            continue
                        self.timings.mark("llm_first_token")
                        said += ev.text
                        tokens += 1
                        if not self._defer_message:
                            await self._ensure_message(audio)
                        if audio:
                            cut = splitter.push(ev.text)
                            for clause in cut:
                                self.timings.mark("first_clause")
                                clauses.put_nowait(clause)
                                first_clause.wait_ended(self.id)
                            # Just after a clause's end, when far ahead (the text so far then
                            # ends on a whole token, which the resumed stream goes on from).
                            ahead = self._ahead_ms(len(said)) if cut and paces else 0.0
                            if not self._calls and not self._mcp_calls and (
                                    ahead > self.context.pace_ahead_ms or self._yields(ahead)):
                                paused_ahead = ahead
                                yielding = ahead <= self.context.pace_ahead_ms
                                break
                        else:
                            await self._text_delta(ev.text)
                    elif isinstance(ev, ToolCallDelta):
                        self.timings.mark("llm_first_token")
                        self._start_interim("tool")  # a filler while the tool runs, if asked
                        await self._tool_delta(ev)
                    elif isinstance(ev, Finish):
                        finish = ev
                if paused_ahead is None:
                    break
                await close_stream(stream)  # frees its llama.cpp slot for other callers meanwhile
                left = await self._pause(len(said), tokens, paused_ahead, yielding)
                if left <= 0:
                    finish = Finish("length", output_tokens=0)
                    break
                stream = self._llm_events([*messages, {"role": "assistant", "content": said}], left)
            ended = True
            self.timings.mark("llm_done")
        finally:
            first_clause.wait_ended(self.id)
            await close_stream(stream)  # stops generation at once on cancel (barge-in)
            if tts_task is not None:
                for clause in splitter.flush():
                    self.timings.mark("first_clause")
                    clauses.put_nowait(clause)
                clauses.put_nowait(None)
                if not tts_task.done():
                    try:
                        if ended:
                            await tts_task
                        else:
                            await _cancel(tts_task)
                    except asyncio.CancelledError:
                        tts_task.cancel()
                        raise
        if tts_task is not None and tts_task.done() and not tts_task.cancelled():
            tts_task.result()  # re-raise a TTS failure
        if finish is not None:
            # A resumed stream's prompt ends with the answer so far: those tokens were output.
            before = tokens - finish.output_tokens if self.pauses else 0
            self.input_tokens = max(0, finish.input_tokens - before)
            self.cached_tokens = min(self.input_tokens, max(0, finish.cached_tokens - before))
            count_prompt_tokens(self.input_tokens, self.cached_tokens)
            self.output_tokens = finish.output_tokens + before
            if finish.reason == "length":
                self.status = "incomplete"
                self.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        if self.status == "in_progress":  # arguments cut by max_output_tokens are not run
            for entry, index, binding in self._mcp_calls.values():
                await self._run_mcp(entry, index, binding)

    async def _run_mcp(self, entry: ConversationItem, index: int, binding: McpBinding) -> None:
        """One MCP call the LLM made: run now, or wait for the client's approval. Either way this
        response then ends; the client asks for the spoken answer (docs/protocol.md)."""
        await self._gate_opened.wait()  # a speculative response must not have side effects
        if self._silent:
            return
        item = entry.item
        await self._event({"type": "response.mcp_call_arguments.done", "response_id": self.id,
                           "item_id": item["id"], "output_index": index, "arguments": item["arguments"]},
                          Channel.CONTROL)
        if not binding.approval:
            await self.host.mcp.run(entry, index, binding)
            return
        request = {"id": new_id("mcpr"), "object": "realtime.item", "type": "mcp_approval_request",
                   "server_label": item["server_label"], "name": item["name"], "arguments": item["arguments"]}
        item["approval_request_id"] = request["id"]
        req_entry = ConversationItem(request)
        req_index = len(self.output)
        self.output.append(request)
        await self._item_added(req_entry, req_index)
        await self._event({"type": "response.output_item.done", "response_id": self.id,
                           "output_index": req_index, "item": dict(request)}, Channel.CONTROL)
        if self.params.in_conversation:
            await self._event({"type": "conversation.item.done", "item": dict(request)}, Channel.CONTROL)
        self.host.mcp.hold(request["id"], entry, index, binding)

    async def _ensure_message(self, audio: bool) -> None:
        if self._msg is not None:
            return
        item: dict[str, Any] = {
            "id": new_id("item"), "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": [],
        }
        self._msg = ConversationItem(item)
        self._msg_index = len(self.output)
        self.output.append(item)
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        await self._item_added(self._msg, self._msg_index)
        await self._event({
            "type": "response.content_part.added", "response_id": self.id, "item_id": item["id"],
            "output_index": self._msg_index, "content_index": 0, "part": part,
        })

    async def _item_added(self, entry: ConversationItem, index: int, now: bool = False) -> None:
        item = entry.item
        snapshot = dict(item)
        route = Channel.CONTROL if item["type"] != "message" else Channel.EVENTS
        await self._event({"type": "response.output_item.added", "response_id": self.id,
                           "output_index": index, "item": snapshot}, route, now)
        if self.params.in_conversation:
            async def add() -> None:
                prev = self.host.conversation.insert(entry)
                await self.host.emit({"type": "conversation.item.created",
                                         "previous_item_id": prev, "item": snapshot}, route)
            await self._do(add, now)

    async def _text_delta(self, text: str) -> None:
        assert self._msg is not None
        self._text += text
        await self._event({
            "type": "response.text.delta", "response_id": self.id, "item_id": self._msg.id,
            "output_index": self._msg_index, "content_index": 0, "delta": text,
        })

    async def _tool_delta(self, ev: ToolCallDelta) -> None:
        if ev.index in self._mcp_calls or (ev.index not in self._calls and ev.name in self._mcp):
            await self._mcp_delta(ev)
            return
        if ev.index not in self._calls:
            item = {
                "id": new_id("item"), "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "call_id": ev.call_id or new_id("call"),
                "name": ev.name or "", "arguments": "",
            }
            entry = ConversationItem(item)
            self._calls[ev.index] = (entry, len(self.output))
            self.output.append(item)
            await self._item_added(entry, len(self.output) - 1)
        entry, index = self._calls[ev.index]
        if ev.name and not entry.item["name"]:
            entry.item["name"] = ev.name
        if ev.arguments:
            entry.item["arguments"] += ev.arguments
            await self._event({
                "type": "response.function_call_arguments.delta", "response_id": self.id,
                "item_id": entry.id, "output_index": index, "call_id": entry.item["call_id"],
                "delta": ev.arguments,
            }, Channel.CONTROL)

    async def _mcp_delta(self, ev: ToolCallDelta) -> None:
        if ev.index not in self._mcp_calls:
            binding = self._mcp[str(ev.name)]
            item = {"id": new_id("mcp"), "object": "realtime.item", "type": "mcp_call",
                    "server_label": binding.definition["server_label"], "name": binding.tool, "arguments": "",
                    "approval_request_id": None, "output": None, "error": None}
            entry = ConversationItem(item)
            self._mcp_calls[ev.index] = (entry, len(self.output), binding)
            self.output.append(item)
            await self._item_added(entry, len(self.output) - 1)
        entry, index, _ = self._mcp_calls[ev.index]
        if ev.arguments:
            entry.item["arguments"] += ev.arguments
            await self._event({"type": "response.mcp_call_arguments.delta", "response_id": self.id,
                               "item_id": entry.id, "output_index": index, "delta": ev.arguments},
                              Channel.CONTROL)

    async def _speak(self, clauses: asyncio.Queue[str | None]) -> None:

        async def _unmarked(gen: AsyncIterator[Int16Array]) -> AsyncIterator[tuple[Int16Array, ChunkMarks | None]]:
            async for chunk in gen:
                yield chunk, None

        tts = self.host.engines.tts
        resampler = audio_codec.StreamResampler(tts.sample_rate, 24000)
        first_clause = True
        words, visemes = self.context.word_timestamps, self.context.visemes
        # A TTS without alignment gets no timeline; the session warned when the client asked.
        aligned = tts if (words or visemes) and isinstance(tts, AlignedTTS) else None
        timeline = aligned.new_timeline() if aligned is not None else None
        while (clause := await clauses.get()) is not None:
            if not speakable(clause):
                continue
            # The turn's first clause goes first; a later one waits behind other callers' first
            # clauses once its answer is well ahead of what the caller has heard.
            priority = FIRST_CLAUSE if first_clause else self._later_clause_priority
            first_clause = False
            opts = SynthesisOptions(voice=self.context.voice, speed=self.params.speed, priority=priority)
            first = True
            chunks: AsyncIterator[tuple[Int16Array, ChunkMarks | None]] = (
                aligned.synthesize_aligned(clause, opts, self.host.id, timeline) if aligned is not None
                else _unmarked(tts.synthesize(clause, opts, self.host.id)))
            self._synth_chars += len(clause) + 1  # with the space that joins it to the next
            self._synth_progress.set()
            async for chunk, marks in chunks:
                self.timings.mark("tts_first_audio")
                pcm = resampler.process(chunk)
                if first:
                    first = False
                    if self._msg is None:
                        self.answer_audio.set()
                        await self._ensure_message(True)
                    await self._transcript_delta(clause)
                await self._audio(pcm)
                if marks is not None:
                    await self._marks(marks, words, visemes)
            if first:  # TTS produced nothing; the words still belong in the transcript
                await self._ensure_message(True)
                await self._transcript_delta(clause)
        tail = resampler.flush()
        if tail.size:
            await self._audio(tail)

    def _later_clause_priority(self) -> int:
        """RUNNING_OUT while the caller has less than LOW_WATER_MS of this answer still to hear."""
        if "first_audio_sent" not in self.timings.marks:
            return RUNNING_OUT
        return RUNNING_OUT if self._unplayed_ms() < LOW_WATER_MS else AHEAD

    async def _marks(self, marks: Any, words: bool, visemes: bool) -> None:
        """Word timestamps and visemes of the audio just sent (offsets in the item's audio)."""
        assert self._msg is not None
        ids = {"response_id": self.id, "item_id": self._msg.id, "output_index": self._msg_index,
               "content_index": 0}
        if words:
            self._sent_marks.add("word")
            for w in marks.words:
                await self._event({"type": "response.audio_timestamp.delta", **ids,
                                   "audio_offset_ms": w.audio_offset_ms, "audio_duration_ms": w.audio_duration_ms,
                                   "text": w.text, "timestamp_type": "word"})
        if visemes:
            self._sent_marks.add("viseme")
            for v in marks.visemes:
                await self._event({"type": "response.animation_viseme.delta", **ids,
                                   "audio_offset_ms": v.audio_offset_ms, "viseme_id": v.viseme_id})

    async def _transcript_delta(self, clause: str) -> None:
        assert self._msg is not None
        # Decided now, not when sent: a gated (speculative) run queues its clauses first.
        delta = clause if not self._clauses_queued else " " + clause
        self._clauses_queued += 1
        msg = self._msg
        offset = int(self._audio_ms)

        async def send() -> None:
            self._text += delta
            msg.clause_marks.append((offset, delta))
            await self.host.emit({
                "type": "response.audio_transcript.delta", "response_id": self.id, "item_id": msg.id,
                "output_index": self._msg_index, "content_index": 0, "delta": delta,
            })

        await self._do(send)

    async def _audio(self, pcm: npt.NDArray[np.int16]) -> None:
        if pcm.size == 0:
            return
        assert self._msg is not None
        msg, index = self._msg, self._msg_index
        self._audio_ms += pcm.size * 1000 / 24000
        self.answer_audio.set()

        async def send() -> None:
            if self.cancel_reason is not None:
                return  # held behind a filler when the response was cancelled: never heard
            await self.send_audio(msg, index, pcm)

        await self._do(send)

    async def send_audio(self, msg: ConversationItem, index: int, pcm: npt.NDArray[np.int16]) -> None:
        """An item's audio to the client: over the transport's media, or as audio delta events."""
        if self._silent or pcm.size == 0:
            return
        msg.audio.append(pcm)
        self.host.audio_sent(msg.id, pcm)
        if not self._first_audio_sent:
            self._first_audio_sent = True
            self.timings.mark("first_audio_sent")
        transport = self.host.transport
        if not transport.audio_in_events:
            await transport.play_audio(self.id, msg.id, pcm)
            return
        out = audio_codec.resample(pcm, 24000, self._out_rate)
        data = audio_codec.encode(out, self._codec)
        # Split so every frame stays well under the client's limit (4 MiB for the Voice Live SDK).
        step = max(2, (self.context.max_audio_delta_bytes * 3 // 4) // 2 * 2)
        for i in range(0, len(data), step):
            await self.host.emit({
                "type": "response.audio.delta", "response_id": self.id, "item_id": msg.id,
                "output_index": index, "content_index": 0,
                "delta": base64.b64encode(data[i:i + step]).decode("ascii"),
            })

    # ------------------------------------------------------------ finish

    async def _finish(self) -> None:
        audio = "audio" in self.params.modalities
        item_status = "completed" if self.status == "completed" else "incomplete"
        if self._msg is not None:
            msg, idx = self._msg, self._msg_index
            ids = {"response_id": self.id, "item_id": msg.id, "output_index": idx, "content_index": 0}
            if audio:
                part = {"type": "audio", "transcript": self._text}
                if self.host.transport.audio_in_events:
                    await self.host.emit({"type": "response.audio.done", **ids})
                else:
                    await self.host.transport.end_audio(self.id, msg.id)
                await self.host.emit({"type": "response.audio_transcript.done", **ids,
                                         "transcript": self._text})
                if "word" in self._sent_marks:
                    await self.host.emit({"type": "response.audio_timestamp.done", **ids})
                if "viseme" in self._sent_marks:
                    await self.host.emit({"type": "response.animation_viseme.done", **ids})
            else:
                part = {"type": "text", "text": self._text}
                await self.host.emit({"type": "response.text.done", **ids, "text": self._text})
            msg.item["content"] = [part]
            msg.item["status"] = item_status
            self.output[idx] = msg.item
            await self.host.emit({"type": "response.content_part.done", **ids, "part": part})
            await self.host.emit({"type": "response.output_item.done", "response_id": self.id,
                                     "output_index": idx, "item": dict(msg.item)})
            if self.params.in_conversation:
                await self.host.emit({"type": "conversation.item.done", "item": dict(msg.item)})
        for entry, idx in self._calls.values():
            item = entry.item
            item["status"] = item_status
            if self.status == "completed" or self.status == "incomplete":
                await self.host.emit({
                    "type": "response.function_call_arguments.done", "response_id": self.id,
                    "item_id": item["id"], "output_index": idx, "call_id": item["call_id"],
                    "name": item["name"], "arguments": item["arguments"],
                }, Channel.CONTROL)
            self.output[idx] = item
            await self.host.emit({"type": "response.output_item.done", "response_id": self.id,
                                     "output_index": idx, "item": dict(item)}, Channel.CONTROL)
            if self.params.in_conversation:
                await self.host.emit({"type": "conversation.item.done", "item": dict(item)}, Channel.CONTROL)
        for entry, idx, _ in self._mcp_calls.values():
            self.output[idx] = entry.item
            await self.host.emit({"type": "response.output_item.done", "response_id": self.id,
                                  "output_index": idx, "item": dict(entry.item)}, Channel.CONTROL)
            if self.params.in_conversation:
                await self.host.emit({"type": "conversation.item.done", "item": dict(entry.item)}, Channel.CONTROL)
        filler = self._interim.entry if self._interim is not None else None
        if self._msg is None and filler is not None and filler.audio and not self.host.transport.audio_in_events:
            await self.host.transport.end_audio(self.id, filler.id)  # the filler was the response's audio
        if self.status == "failed" and self.status_details:
            err = self.status_details["error"]
            await self.host.emit({"type": "error", "error": {**err, "param": None, "event_id": None}})
        await self.host.emit({"type": "response.done", "response": self.resource(final=True)})
        RESPONSES_TOTAL.labels(self.status).inc()


async def _pre_generated(text: str) -> AsyncIterator[LLMEvent]:
    """`pre_generated_assistant_message`: the given text, as the LLM would stream it (word by word,
    so that it is cut into clauses and spoken like any answer), with no model call."""
    for i, word in enumerate(text.split(" ")):
        yield TextDelta(word if i == 0 else " " + word)
    yield Finish("stop", input_tokens=0, output_tokens=0)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
