"""`response.create` / `response.cancel` / `output_audio_buffer.clear`, barge-in, and the speculative
response turn-taking asks for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...core.audio import SESSION_RATE
from ...core.errors import ProtocolError
from ...engines.base import free_roles
from .. import llm_request
from ..conversation import ConversationItem, normalize_client_item, to_messages
from ..metrics import TurnTimings
from ..response import ResponseRun
from ..response_params import ResponseContext, ResponseParams
from ..response_request import response_context, response_params, validate_response
from .base import SessionParts

MAX_ADDITIONAL_INSTRUCTIONS = 16_000


class ResponseEvents(SessionParts):
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
                await self._truncate(msg, 0, self.played_ms(msg.id), self._appended_text())
            return
        # A finished answer still playing out of the transport (WebRTC): the item keeps what was heard.
        if cut is not None and auto_truncate:
            with contextlib.suppress(ProtocolError):  # the item may be gone (deleted)
                entry = self.conversation.get(cut)
                if entry.audio:
                    await self._truncate(entry, 0, self.played_ms(cut), self._appended_text())

    def _appended_text(self) -> str | None:
        text = (self.config["turn_detection"] or {}).get("appended_text_after_truncation")
        return text if isinstance(text, str) else None

    def _answers_turns(self) -> bool:
        """The turn's end will start an answer (create_response, and none is running)."""
        td = self.config["turn_detection"] or {}
        return bool(td.get("create_response", True)) and not (self.response is not None and self.response.active)

    def _free_roles(self) -> bool:
        """Prompts may keep the conversation's cached prefix (`llm.chat_roles`)."""
        mode = self.settings.llm.chat_roles
        return mode == "free" or (mode == "auto" and free_roles(self.engines.llm))

    def _turn_messages(self, said: Awaitable[str]) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
        """The messages of an answer to the conversation as it is now, then the user's `said`."""
        snapshot = list(self.conversation.entries)
        instructions = self.config["instructions"]
        join = not self._free_roles()

        async def messages() -> list[dict[str, Any]]:
            text = await asyncio.shield(said)
            msgs = await to_messages(snapshot, instructions, join_users=join)
            if text:
                msgs.append({"role": "user", "content": text})
            return msgs

        return messages

    def speculate(self, stt: asyncio.Future[str]) -> ResponseRun | None:
        if not self._answers_turns():
            return None
        # The LLM may start too: nothing it does is visible until the turn really ends.
        # Its own timings: a discarded attempt must not leave its marks on the turn.
        params = response_params(self.config, {})
        run = ResponseRun(self, params, self._context(params), self._turn_messages(stt), TurnTimings(),
                          gated=True)
        run.start()
        return run

    def prefill(self, text: Callable[[], Awaitable[str]]) -> None:
        if not self.settings.llm.prefill_pieces or not self._answers_turns():
            return
        said = asyncio.ensure_future(text())
        messages = self._turn_messages(said)
        params = response_params(self.config, {})

        async def fill() -> None:
            msgs = await messages()
            if not said.result():
                return  # the pieces had no words (or one failed)
            p, _ = await llm_request.listed_tools(params, self.mcp, wait=False)  # as the answer will list them
            await llm_request.prefill(p, self._context(params), self.engines.llm, msgs,
                                      self.conversation.truncation, self.id)

        self._spawn(fill())

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        r = validate_response(self.config, event.get("response"), self.api_version, self.engines.voices)
        if "tools" in r:
            self.mcp.check(r["tools"], "response")
        extra = event.get("additional_instructions")
        if extra is not None and (not isinstance(extra, str) or len(extra) > MAX_ADDITIONAL_INSTRUCTIONS):
            raise ProtocolError("invalid_value", "'additional_instructions' must be a string of at most "
                                f"{MAX_ADDITIONAL_INSTRUCTIONS} characters", param="additional_instructions")
        params = response_params(self.config, r, extra, free_roles=self._free_roles())
        # Everything is checked before anything changes: a bad item leaves the session as it was.
        entries = None
        key = "input_items" if "input_items" in r else "input"
        if key in r:
            entries = [self._input_entry(raw, f"response.{key}[{i}]") for i, raw in enumerate(r[key])]
        appended = [self._client_item(raw, f"response.append_input_items[{i}]")
                    for i, raw in enumerate(r.get("append_input_items") or [])]
        if params.in_conversation and self.response is not None and self.response.active:
            if not r.get("cancel_previous"):
                raise ProtocolError("conversation_already_has_active_response",
                                    f"Conversation already has an active response in progress: {self.response.id}. "
                                    "Wait until the response is finished before creating a new one "
                                    "(or set response.cancel_previous).")
            self.transport.discard_pending_audio()
            self.audio.stop_far()
            await self.response.cancel("client_cancelled")
        if r.get("commit") and self.audio.size >= SESSION_RATE // 10:
            await self._on_commit({})  # the pending input audio becomes the user's item first
        for item in appended:
            await self._insert_item(item)
        await self._start_response(params, entries, TurnTimings())

    def _client_item(self, raw: Any, param: str) -> dict[str, Any]:
        try:
            return normalize_client_item(raw)
        except ProtocolError as err:
            err.param = f"{param}{err.param.removeprefix('item')}" if err.param else param
            raise

    def _input_entry(self, raw: Any, param: str) -> ConversationItem:
        if isinstance(raw, dict) and raw.get("type") == "item_reference":
            return self.conversation.get(raw.get("id"), f"{param}.id")
        return ConversationItem(self._client_item(raw, param))

    async def _start_response(self, params: ResponseParams, entries: list[ConversationItem] | None,
                              timings: TurnTimings) -> None:
        source = entries
        join = not self._free_roles()

        async def messages() -> list[dict[str, Any]]:
            items = source if source is not None else list(self.conversation.entries)
            return await to_messages(items, params.instructions, join_users=join,
                                     late_instructions=params.late_instructions)

        run = ResponseRun(self, params, self._context(params), messages, timings)
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
                                 "stages_ms": run.timings.relative_ms(), "jobs": run.timings.jobs_ms()})
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

    def _context(self, params: ResponseParams) -> ResponseContext:
        return response_context(self.config, self.settings, self.engines.voices, params)
