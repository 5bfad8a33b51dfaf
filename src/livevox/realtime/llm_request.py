"""The LLM request of a response: its history cut to the model's context by `session.truncation`,
the answer's tokens reserved, and one retry with a shorter history when the engine reports an
overflow before its first token."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..engines.base import ChatRequest, ContextOverflow, LLMEngine, LLMEvent
from . import truncation
from .conversation import dumps, tool_choice_for_chat, tool_for_chat
from .mcp_session import McpBinding, is_mcp

if TYPE_CHECKING:
    from .mcp_session import McpTools
    from .response_params import ResponseContext, ResponseParams

log = logging.getLogger("livevox.response")

#: Prompt tokens a request carries beyond its messages' own (the generation prompt, a chat
#: template's default system line); counted against the context on top of the messages.
PROMPT_MARGIN_TOKENS = 32
#: Upper bound on the correction learnt when an engine counted a prompt longer than we did.
_MAX_SCALE = 4.0


def build_request(p: ResponseParams, ctx: ResponseContext, llm: LLMEngine, messages: list[dict[str, Any]],
                  state: truncation.State, response_id: str) -> tuple[ChatRequest, int, int]:
    """The LLM request, its history cut to the context by `session.truncation`; its prompt
    tokens as counted, and the context used. Raises ContextOverflow when even the kept part
    does not fit."""
    tools = [tool_for_chat(t) for t in p.tools]
    shares = p.in_conversation or p.extends_conversation
    max_tokens = ctx.max_tokens
    req = ChatRequest(
        messages=messages, tools=tools,
        tool_choice=tool_choice_for_chat(p.tool_choice) if p.tools else "none",
        temperature=p.temperature, max_tokens=max_tokens,
        parallel_tool_calls=ctx.parallel_tool_calls, reasoning_effort=p.reasoning_effort,
        conversation=shares,
    )
    known = [n for n in (llm.context_tokens(), state.window) if n is not None]
    if not known:
        return req, 0, 0
    window = min(known)
    # The answer's tokens are reserved from the context (at most half of it, so that a
    # client's large max_output_tokens still leaves room for a conversation).
    reserve = min(max_tokens, window // 2)
    budget = window - reserve - PROMPT_MARGIN_TOKENS
    counts = [round(n * state.scale) for n in state.cache.count(messages, llm.count_tokens)]
    fixed = round(llm.count_tokens({"role": "system", "content": dumps(tools)}) * state.scale) if tools else 0
    pol = truncation.policy(ctx.truncation, ctx.auto_retention_ratio)
    res = truncation.truncate(messages, counts, fixed, budget, pol, state.cut if shares else None)
    if not res.fits:
        what = ("the conversation" if pol.kind == "disabled" else "the instructions and the latest turn")
        raise ContextOverflow(
            "llm", f"{what} need about {res.tokens} tokens, but the model's context is {window} tokens: "
            f"{res.limit} for the prompt after {reserve} reserved for the answer"
            + (" (session.truncation is 'disabled': delete items, or enable truncation)"
               if pol.kind == "disabled" else ""), res.tokens, res.limit)
    if p.in_conversation:
        state.cut = res.cut
    if res.dropped:
        log.info("response %s: truncation dropped the %d oldest messages (%d prompt tokens kept of %d)",
                 response_id, res.dropped, res.tokens, res.limit)
    req.messages = res.messages
    # Never ask for more than the context has left, so llama.cpp ends the answer at
    # `max_tokens` ("incomplete") instead of at the end of its context.
    req.max_tokens = max(1, min(max_tokens, window - res.tokens - PROMPT_MARGIN_TOKENS))
    return req, res.tokens, window

async def llm_events(p: ResponseParams, ctx: ResponseContext, llm: LLMEngine, messages: list[dict[str, Any]],
                     state: truncation.State, session_id: str, response_id: str) -> AsyncIterator[LLMEvent]:
    """The LLM's events. An overflow the engine reports before its first token is retried
    once with a history cut to what the engine said (unless truncation is disabled)."""
    for attempt in (1, 2):
        req, counted, window = build_request(p, ctx, llm, messages, state, response_id)
        stream = llm.stream(req, session_id)
        started = False
        try:
            async for ev in stream:
                started = True
                yield ev
            return
        except ContextOverflow as exc:
            if started or attempt == 2 or ctx.truncation == "disabled":
                raise
            learn(exc, state, counted, window)
            log.info("response %s: the engine reported an overflow (%s); retrying with a shorter history",
                     response_id, exc.message)
        finally:
            await close_stream(stream)  # stops generation at once on cancel (barge-in)


async def listed_tools(p: ResponseParams, mcp: McpTools, wait: bool) -> tuple[ResponseParams, dict[str, McpBinding]]:
    """`p` with its MCP tools replaced by the functions their servers list, and those functions'
    bindings; `p` itself, without bindings, when it has no MCP tools. `wait`: discover them first."""
    if not any(is_mcp(t) for t in p.tools):
        return p, {}
    plan = await mcp.plan(p.tools, p.tool_choice, wait=wait)
    return dataclasses.replace(p, tools=plan.functions, tool_choice=plan.tool_choice), plan.bindings


async def prefill(p: ResponseParams, ctx: ResponseContext, llm: LLMEngine, messages: list[dict[str, Any]],
                  state: truncation.State, session_id: str) -> None:
    """Evaluate the prompt a response on `messages` would send into the engine's cache, if the
    engine keeps one (`Prefills`); the conversation's truncation `state` is not moved."""
    fill = getattr(llm, "prefill", None)
    if fill is None:
        return
    try:
        req, _, _ = build_request(p, ctx, llm, messages, dataclasses.replace(state), "prefill")
    except ContextOverflow:
        return  # the response will say so
    await fill(req, session_id)


async def close_stream(stream: AsyncIterator[LLMEvent]) -> None:
    """Close an LLM event stream early (an async generator's aclose; engines stop generating)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()

def learn(exc: ContextOverflow, state: truncation.State, counted: int, window: int) -> None:
    """Take the engine's figures: its context size, and how much longer it counts prompts."""
    if exc.limit is not None:
        state.window = min(state.window or exc.limit, exc.limit)
    if exc.prompt_tokens is not None and counted and exc.prompt_tokens > counted:
        state.scale = min(_MAX_SCALE, state.scale * exc.prompt_tokens / counted * 1.05)
    elif exc.limit is None or not window or exc.limit >= window:
        state.scale = min(_MAX_SCALE, state.scale * 1.25)  # no better figure: count longer
    state.cut = truncation.Cut()  # the next cut is a fresh one
