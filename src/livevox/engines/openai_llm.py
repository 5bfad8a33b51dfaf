"""LLM over an OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
llama.cpp's server, another livevox with `--role engine`), streamed over SSE.

- `tools`, `tool_choice` and `parallel_tool_calls` are passed through; tool calls that arrive as
  streamed deltas are emitted as `ToolCallDelta` pieces as they arrive, and assembled here too, so
  a call that never got a name is reported as a bad response.
- Deadlines: connect, first token, idle gap between chunks, total (see `openai_http.Deadlines`).
- Retries happen only before the first token (connection failures, 429, 5xx).
- Closing the iterator (`aclose`, on barge-in or cancel) closes the HTTP stream at once: the
  engine sees the connection go and stops generating.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from ..core.ids import new_id
from ..engine_settings import OpenAILLMSettings
from .base import (
    ChatRequest,
    EngineError,
    Finish,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    cached_prompt_tokens,
    estimate_message_tokens,
    overflow_from,
    warmup_request,
)
from .openai_http import Deadlines, OpenAIEndpoint, OpenAIEngine

log = logging.getLogger(__name__)

#: The end-of-turn question a remote chat model answers with one token; its `top_logprobs` give
#: P(yes) / (P(yes) + P(no)). A chat endpoint cannot continue the user's message, so the template's
#: end token is out of reach; this is the same signal asked in words.
EOT_JUDGE = ("You listen to a voice assistant's user. Below is what they said so far, before a short "
             "silence. Have they finished what they wanted to say? Answer only yes or no.")
EOT_TIMEOUT_S = 0.6  # the policy waits for the signal a moment only; later it is of no use
#: A prefill that takes longer than this is not helping the answer it prepares.
PREFILL_TIMEOUT_S = 30.0

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
           "content_filter": "stop", "eos": "stop"}


@dataclass(slots=True)
class _Call:
    call_id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class SSEParser:
    """Server-sent events, line by line: yields each event's `data` (multi-line data joined)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """One line (without its newline). Returns a complete event's data at a blank line.
        Raises ValueError on a line that is not SSE."""
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, sep, value = line.partition(":")
        if not sep and name not in ("data", "event", "id", "retry"):
            raise ValueError(f"not a server-sent-events line: {line[:80]!r}")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name not in ("event", "id", "retry"):
            raise ValueError(f"not a server-sent-events line: {line[:80]!r}")
        return None

    def end(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


class OpenAILLM(OpenAIEngine):
    """One OpenAI-compatible chat endpoint, shared by all sessions."""

    name = "openai-llm"

    def __init__(self, settings: OpenAILLMSettings, *, max_tokens: int = 256, default_instructions: str = "") -> None:
        self.settings = settings
        self.max_tokens = max_tokens
        self.default_instructions = default_instructions
        self.endpoint = OpenAIEndpoint("llm", settings, "chat/completions")
        self._eot_logprobs: bool | None = None  # whether the server gave logprobs (None: not tried)

    @property
    def model_file(self) -> str:
        return f"{self.settings.deployment or self.settings.model or '(server default)'} @ {self.endpoint.where}"

    def context_tokens(self) -> int | None:
        return self.settings.context_window

    def count_tokens(self, message: dict[str, Any]) -> int:
        return estimate_message_tokens(message)

    async def end_of_turn_probability(self, transcript: str, session_id: str) -> float | None:
        """P(the user finished) from the server's `logprobs` of a one-token yes/no answer, or None
        (no logprobs offered: the policy keeps to Smart Turn and its transcript rules; a server
        that answered once without them is not asked again)."""
        if self._eot_logprobs is False or not transcript.strip():
            return None
        s = self.settings
        body: dict[str, Any] = {"messages": [{"role": "system", "content": EOT_JUDGE},
                                             {"role": "user", "content": transcript.strip()}],
                                "stream": False, "logprobs": True, "top_logprobs": 10, "temperature": 0,
                                s.max_tokens_param: 1}
        if s.model:
            body["model"] = s.model
        try:
            async with asyncio.timeout(EOT_TIMEOUT_S):
                deadlines = Deadlines("llm", s)
                async with self.endpoint.request(deadlines, json=body) as response:
                    raw = await self.endpoint.read(deadlines, _whole(response))
            data = json.loads(raw)
        except (EngineError, TimeoutError, ValueError) as exc:
            log.debug("llm: end-of-turn question to %s failed: %s", self.endpoint.where, exc)
            return None
        p = yes_probability(data)
        if p is None and self._eot_logprobs is None:
            log.info("llm: %s gives no logprobs; end of turn uses Smart Turn and the transcript rules",
                     self.endpoint.where)
        self._eot_logprobs = p is not None
        return p

    async def prefill(self, request: ChatRequest, session_id: str) -> None:
        """The prompt sent ahead with one token to generate, so that a server with a prefix cache
        (vLLM's automatic prefix caching, llama.cpp's server) holds it when the request that
        extends it comes. Best effort: a failure is not the engine's health."""
        try:
            async with asyncio.timeout(PREFILL_TIMEOUT_S):
                async for _ in self._stream(replace(request, max_tokens=1)):
                    pass
        except (EngineError, TimeoutError) as exc:
            log.debug("llm: prefill at %s failed: %s", self.endpoint.where, exc)

    async def warmup(self) -> None:
        if not self.settings.warmup:
            return
        # One token proves the server answers and has the model loaded.
        async for _ in self.stream(warmup_request(self.default_instructions), "_warmup"):
            pass

    def body(self, request: ChatRequest) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"messages": request.messages, "stream": True}
        if s.model:
            body["model"] = s.model
        if s.include_usage:
            body["stream_options"] = {"include_usage": True}
        max_tokens = request.max_tokens if request.max_tokens is not None else self.max_tokens
        body[s.max_tokens_param] = max(1, max_tokens)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = request.tools
            body["tool_choice"] = request.tool_choice
            body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.reasoning_effort is not None:
            body["reasoning_effort"] = request.reasoning_effort
        body.update(s.extra_body)
        return body

    async def stream(self, request: ChatRequest, session_id: str) -> AsyncIterator[LLMEvent]:
        started = False
        try:
            async for ev in self._stream(request):
                started = True
                yield ev
        except EngineError as exc:
            overflow = None if started else _overflow(exc)
            if overflow is not None:
                raise overflow from None  # the engine is fine: the request was too long
            self.endpoint.health.failure(exc)
            raise
        self.endpoint.health.success()

    async def _stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        ep = self.endpoint
        deadlines = Deadlines("llm", self.settings)
        async with ep.request(deadlines, json=self.body(request),
                              headers={"Accept": "text/event-stream"}) as response:
            ctype = response.headers.get("content-type", "")
            if ctype.startswith("application/json"):
                # A server that ignored "stream": true answered with one chat.completion.
                raw = await ep.read(deadlines, _whole(response))
                deadlines.got_first = True
                for ev in self._from_completion(raw):
                    yield ev
                return
            state = _StreamState()
            parser = SSEParser()
            lines = response.aiter_lines()
            done = False
            while not done:
                try:
                    line = await ep.read(deadlines, lines)
                except StopAsyncIteration:
                    data = parser.end()
                    if data is not None and data.strip() != "[DONE]":
                        for ev in self._chunk(data, state, deadlines):
                            yield ev
                    break
                try:
                    data = parser.feed(line)
                except ValueError as exc:
                    raise self._bad(str(exc)) from None
                if data is None:
                    continue
                if data.strip() == "[DONE]":
                    done = True
                    break
                for ev in self._chunk(data, state, deadlines):
                    yield ev
            if not done and state.finish is None:
                raise self._bad("the stream ended before a finish_reason or [DONE]")
        for ev in state.close(self._bad):
            yield ev

    def _bad(self, why: str) -> EngineError:
        return EngineError("llm", "llm_bad_response", f"malformed answer from {self.endpoint.where}: {why}")

    def _chunk(self, data: str, state: _StreamState, deadlines: Deadlines) -> list[LLMEvent]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self._bad(f"a stream chunk is not JSON: {data[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise self._bad(f"a stream chunk is not an object: {data[:80]!r}")
        if "error" in chunk:
            err = chunk["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise EngineError("llm", "llm_error", f"{self.endpoint.where} reported an error mid-stream: {msg}")
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            state.usage = usage
        if choices is None and usage is not None:
            return []
        if not isinstance(choices, list):
            raise self._bad("a stream chunk has no 'choices' list")
        out: list[LLMEvent] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise self._bad("a choice is not an object")
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never asked for
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise self._bad("'delta' is not an object")
            content = delta.get("content")
            if content:
                if not isinstance(content, str):
                    raise self._bad("'delta.content' is not a string")
                deadlines.got_first = True
                state.text.append(content)
                out.append(TextDelta(content))
            for tc in delta.get("tool_calls") or ():
                deadlines.got_first = True
                out.append(state.tool_delta(tc, self._bad))
            if choice.get("finish_reason"):
                state.finish = str(choice["finish_reason"])
        return out

    def _from_completion(self, raw: bytes) -> list[LLMEvent]:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise self._bad(f"not a chat.completion: {raw[:80]!r}") from None
        state = _StreamState()
        out: list[LLMEvent] = []
        if message.get("content"):
            state.text.append(str(message["content"]))
            out.append(TextDelta(str(message["content"])))
        for i, tc in enumerate(message.get("tool_calls") or ()):
            out.append(state.tool_delta({"index": i, **tc}, self._bad))
        state.finish = choice.get("finish_reason") or "stop"
        if isinstance(data.get("usage"), dict):
            state.usage = data["usage"]
        return out + state.close(self._bad)


class _StreamState:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def tool_delta(self, tc: Any, bad: Any) -> ToolCallDelta:
        if not isinstance(tc, dict):
            raise bad("a tool call delta is not an object")
        fn = tc.get("function") or {}
        if not isinstance(fn, dict):
            raise bad("'tool_calls[].function' is not an object")
        # Some servers omit `index` (Ollama before 0.5), or number every parallel call 0: a delta
        # with a new id is a new call; one without an id continues the last call.
        index = tc.get("index")
        cid = tc.get("id")
        if isinstance(index, int) and cid and index in self.calls and self.calls[index].call_id != str(cid):
            index = None
        if not isinstance(index, int):
            known = next((i for i, c in self.calls.items() if cid and c.call_id == str(cid)), None)
            if known is not None:
                index = known
            elif cid or not self.calls:
                index = max(self.calls) + 1 if self.calls else 0
            else:
                index = max(self.calls)
        args = fn.get("arguments") or ""
        if not isinstance(args, str):
            args = json.dumps(args)  # Ollama-style object arguments
        name = fn.get("name") or None
        call = self.calls.get(index)
        new = call is None
        if call is None:
            call = self.calls[index] = _Call(call_id=str(tc.get("id") or new_id("call")))
        if name and not call.name:
            call.name = str(name)
        call.arguments.append(args)
        return ToolCallDelta(index=index, call_id=call.call_id if new else None,
                             name=str(name) if name else None, arguments=args)

    def close(self, bad: Any) -> list[LLMEvent]:
        for index, call in self.calls.items():
            if not call.name:
                raise bad(f"tool call {index} ({call.call_id}) never got a function name")
        reason = _FINISH.get(self.finish or "stop", "stop")
        if self.calls and reason == "stop":
            reason = "tool_calls"
        usage = self.usage or {}
        text = "".join(self.text)
        return [Finish(
            reason,  # type: ignore[arg-type]
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or (max(1, len(text) // 4) if text else 0)),
            cached_tokens=cached_prompt_tokens(usage),
        )]


def _overflow(exc: EngineError) -> EngineError | None:
    """A refusal (HTTP 400, or an error chunk before any token) that says the prompt is too long."""
    if exc.code not in ("llm_bad_request", "llm_error"):
        return None
    # Only the engine's words: the "HTTP 400 from host:port/path: " prefix has numbers of its own.
    _, _, said = exc.message.partition(": ")
    return overflow_from("llm", said or exc.message)


def yes_probability(completion: Any) -> float | None:
    """P(yes) / (P(yes) + P(no)) from a chat.completion's first-token `top_logprobs` (None if it
    has none, or neither answer is among them)."""
    try:
        content = completion["choices"][0]["logprobs"]["content"]
        top = content[0]["top_logprobs"] if content else []
    except (KeyError, IndexError, TypeError):
        return None
    yes = no = 0.0
    for cand in top:
        word = str(cand.get("token", "")).strip().lower()
        p = math.exp(float(cand.get("logprob", -math.inf)))
        if word == "yes":
            yes += p
        elif word == "no":
            no += p
    return yes / (yes + no) if yes + no > 0 else None


async def _whole(response: httpx.Response) -> AsyncIterator[bytes]:
    yield await response.aread()
