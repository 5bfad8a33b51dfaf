"""`POST /v1/chat/completions`: streaming (SSE) and not, tools and tool calls."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ...core.ids import new_id
from ...engines.base import (
    ChatRequest,
    EngineError,
    Finish,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
)

if TYPE_CHECKING:
    from ..state import LivevoxState

from .common import (
    ApiError,
    _aclose,
    _first,
    _float,
    _guard,
    _int,
    _json_body,
    engine_failure,
)

log = logging.getLogger("livevox.engine_api")

# ---------------------------------------------------------------- chat completions


def chat_request(body: dict[str, Any]) -> ChatRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array.", code="invalid_value", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"'messages[{i}]' must be an object with a 'role'.", code="invalid_value",
                           param=f"messages[{i}]")
        content = m.get("content")
        if not (content is None or isinstance(content, str)
                or (isinstance(content, list) and all(isinstance(p, dict) for p in content))):
            raise ApiError(400, f"'messages[{i}].content' must be a string, an array of content parts "
                           "or null.", code="invalid_type", param=f"messages[{i}].content")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or any(not isinstance(t, dict) for t in tools):
        raise ApiError(400, "'tools' must be an array of objects.", code="invalid_value", param="tools")
    n = body.get("n", 1)
    if n != 1:
        raise ApiError(400, "Only n = 1 is supported.", code="invalid_value", param="n")
    max_tokens = _int(body, "max_completion_tokens", 1, 1 << 20) or _int(body, "max_tokens", 1, 1 << 20)
    return ChatRequest(
        messages=messages,
        tools=tools,
        tool_choice=body.get("tool_choice", "auto") if tools else "none",
        temperature=_float(body, "temperature", 0.0, 2.0),
        max_tokens=max_tokens,
        parallel_tool_calls=bool(body.get("parallel_tool_calls", True)),
    )


class _ChatStream:
    """Turns LLM events into chat.completion chunks (and, for non-streaming, one completion)."""

    def __init__(self, model: str) -> None:
        self.id = new_id("chatcmpl")
        self.created = int(time.time())
        self.model = model
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: Finish | None = None

    def chunk(self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None,
              choices: bool = True) -> str:
        c: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "system_fingerprint": None,
                             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                             if choices else []}
        if usage is not None:
            c["usage"] = usage
        return f"data: {json.dumps(c)}\n\n"

    def delta(self, ev: LLMEvent) -> dict[str, Any] | None:
        if isinstance(ev, TextDelta):
            if not ev.text:
                return None
            self.text.append(ev.text)
            return {"content": ev.text}
        if isinstance(ev, ToolCallDelta):
            call = self.calls.get(ev.index)
            piece: dict[str, Any] = {"index": ev.index}
            if call is None:
                call = self.calls[ev.index] = {"id": ev.call_id or new_id("call"), "type": "function",
                                               "function": {"name": ev.name or "", "arguments": ""}}
                piece.update(id=call["id"], type="function", function={"name": ev.name or "", "arguments": ""})
            elif ev.name and not call["function"]["name"]:
                call["function"]["name"] = ev.name
                piece["function"] = {"name": ev.name}
            if ev.arguments:
                call["function"]["arguments"] += ev.arguments
                piece.setdefault("function", {})["arguments"] = ev.arguments
            return {"tool_calls": [piece]}
        self.finish = ev
        return None

    @property
    def finish_reason(self) -> str:
        return self.finish.reason if self.finish is not None else ("tool_calls" if self.calls else "stop")

    def usage(self) -> dict[str, int]:
        f = self.finish
        i, o = (f.input_tokens, f.output_tokens) if f is not None else (0, 0)
        return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) if self.text else None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}],
                "usage": self.usage()}


async def chat_completions(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    body = await _json_body(request, state)
    req = chat_request(body)
    model = body.get("model") or engines.llm.name
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string.", code="invalid_type", param="model")
    stream = bool(body.get("stream", False))
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", code="invalid_type", param="stream_options")
    include_usage = bool(options.get("include_usage", False))
    out = _ChatStream(model)
    gen = engines.llm.stream(req, new_id("api"))
    if not stream:
        try:
            async for ev in gen:
                out.delta(ev)
        except EngineError as exc:
            raise engine_failure(exc) from None
        finally:
            await _aclose(gen)
        return JSONResponse(out.completion())
    first: LLMEvent | None = await _first(gen)

    async def sse() -> AsyncIterator[str]:
        try:
            yield out.chunk({"role": "assistant", "content": ""})
            if first is not None:
                d = out.delta(first)
                if d:
                    yield out.chunk(d)
                async for ev in gen:
                    d = out.delta(ev)
                    if d:
                        yield out.chunk(d)
            yield out.chunk({}, out.finish_reason)
            if include_usage:
                yield out.chunk({}, usage=out.usage(), choices=False)
            yield "data: [DONE]\n\n"
        except EngineError as exc:
            err = engine_failure(exc)
            log.warning("chat stream failed after it began: %s", exc)
            yield f"data: {json.dumps({'error': {'message': err.message, 'type': err.type, 'code': err.code}})}\n\n"
        finally:
            await _aclose(gen)

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
