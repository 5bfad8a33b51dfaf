"""The embedded llama.cpp's prompt cache through the real server: a conversation cut by
truncation, an exchange the client deletes and an out-of-band response are served from the
session's own slot (engines/llama_slots.py, `llm.cache_reuse`), as response.done's
`usage.input_token_details.cached_tokens` (llama.cpp's own count) shows; and a response asked
right after the agent's own message is a new message. Real LLM (SmolLM2-135M), scripted STT/TTS
(text turns only)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient


@contextlib.asynccontextmanager
async def text_session(max_tokens: int, instructions: str | None = None, *, cache_reuse: int = 64,
                       n_ctx: int = 512, chat_roles: str = "auto") -> AsyncIterator[RealtimeClient]:
    """A text-only session without turn detection on a server of its own, stopped after it."""
    # A small context so that the conversation is cut within a few turns; one thread, as the
    # test machine is shared; four slots, as on a 2-core box by default.
    llm = {"engine": "llamacpp", "n_ctx": n_ctx, "threads": 1, "parallel": 4, "cache_reuse": cache_reuse,
           "chat_roles": chat_roles}
    srv = ServerThread(scripted_settings(llm=llm)).start(timeout=300)
    try:
        c = await RealtimeClient.connect(srv.ws)
        session: dict[str, Any] = {"turn_detection": None, "modalities": ["text"],
                                   "max_response_output_tokens": max_tokens}
        if instructions is not None:
            session["instructions"] = instructions
        await c.update(session)
        try:
            yield c
        finally:
            await c.close()
    finally:
        srv.stop()


def text_of(done: dict[str, Any]) -> str:
    return str(done["output"][0]["content"][0]["text"]) if done["output"] else ""


async def ask(c: RealtimeClient, text: str | None, response: dict[str, Any] | None = None,
              **event: Any) -> dict[str, Any]:
    return (await exchange(c, text, response, **event))[-1]["response"]


async def exchange(c: RealtimeClient, text: str | None, response: dict[str, Any] | None = None,
                   **event: Any) -> list[dict[str, Any]]:
    """A user message (if any) and a response: the events up to its response.done."""
    if text is not None:
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    await c.send({"type": "response.create", **({"response": response} if response else {}), **event})
    evs = await c.until("response.done", 120)
    done = evs[-1]["response"]
    assert done["status"] in ("completed", "incomplete"), done
    return evs


def usage(done: dict[str, Any]) -> tuple[int, int]:
    u = done["usage"]
    cached = u["input_token_details"]["cached_tokens"]
    assert 0 <= cached <= u["input_tokens"], u
    return u["input_tokens"], cached


async def cut_turns(c: RealtimeClient, turns: int) -> list[tuple[int, int, int]]:
    """(previous prompt, prompt, cached) of each turn whose prompt was shorter than the one before."""
    rows = [usage(await ask(c, f"Tell me a fact about the number {i}.")) for i in range(turns)]
    return [(a[0], b[0], b[1]) for a, b in itertools.pairwise(rows) if b[0] < a[0]]


@pytest.mark.parametrize("cache_reuse", [64, 0], ids=["reuse", "off"])
async def test_a_cut_conversation_is_served_from_the_cache(cache_reuse: int) -> None:
    async with text_session(40, cache_reuse=cache_reuse) as c:
        cuts = await cut_turns(c, 24)
    assert cuts, "the conversation was never cut: the test did not test anything"
    # After a cut the prompt keeps the recent turns, which the slot already holds: with reuse,
    # llama.cpp shifts them into place and evaluates little more than the new question; without
    # it, everything after the instructions is evaluated again.
    served = [cached >= prompt // 2 for _, prompt, cached in cuts]
    if cache_reuse:
        assert all(served), cuts
    else:
        assert not any(served), cuts


async def test_deletes_and_out_of_band_responses_keep_the_conversation_cached() -> None:
    async with text_session(30) as c:
        ids: list[str] = []
        # Seven exchanges: what follows the deleted second one (five of them) is well over the
        # 64-token chunk that cache reuse needs, however short the answers.
        for i in range(7):
            evs = await exchange(c, f"Tell me a fact about the number {i}.")
            ids += [e["item"]["id"] for e in evs if e["type"] == "conversation.item.created"]
        for item_id in ids[2:4]:  # the client forgets the second exchange, question and answer
            await c.send({"type": "conversation.item.delete", "item_id": item_id})
            await c.until("conversation.item.deleted", 10)
        after_delete = usage(await ask(c, "And then?"))
        # An out-of-band response with other instructions: a side prompt, kept out of the
        # conversation's slot.
        oob = await ask(c, None, {"conversation": "none", "instructions": "Answer in French.", "modalities": ["text"]})
        after_oob = usage(await ask(c, "Go on."))
    assert text_of(oob).strip(), oob
    # What follows the deleted exchange was shifted into place, not evaluated again.
    assert after_delete[1] >= after_delete[0] // 2, after_delete
    assert after_oob[1] >= after_oob[0] // 2, after_oob


async def test_a_response_after_the_agents_own_message_is_a_new_message() -> None:
    async with text_session(30) as c:
        first = await ask(c, "Tell me a fact about cats.")
        again = await ask(c, None)  # a second response.create, no new input
        oob = await ask(c, None, {"conversation": "none", "instructions": "Say hello in French.",
                                  "modalities": ["text"]})
    for done in (first, again, oob):
        assert text_of(done).strip(), done  # llama.cpp went on from the last answer and stopped at once


@pytest.mark.parametrize("chat_roles", ["auto", "strict"])
async def test_a_responses_own_instructions_keep_the_conversation_cached(chat_roles: str) -> None:
    """ChatML (the embedded model, `llm.chat_roles` "auto"): a response's own instructions follow
    the conversation, and a deleted lone answer leaves its two user messages apart, so each
    prompt starts as the cached one. "strict" (templates that want one system message first and
    alternation) evaluates those prompts again: the comparison shows the test can tell."""
    async with text_session(30, "You are a helpful assistant. Answer in one short sentence.", n_ctx=2048,
                            chat_roles=chat_roles) as c:
        answers: list[str] = []
        for i in range(7):
            evs = await exchange(c, f"Tell me a fact about the number {i}.")
            answers += [e["item"]["id"] for e in evs if e["type"] == "conversation.item.created"
                        and e["item"]["role"] == "assistant"]
        # Out of band, with other instructions (a summary the client asks on the side).
        oob = await ask(c, None, {"conversation": "none", "instructions": "Summarize the conversation in one sentence.",
                                  "modalities": ["text"]})
        after_oob = usage(await ask(c, "Which number came first?"))
        # In band, Voice Live's `additional_instructions` for this response only.
        extra = await ask(c, "And the last one?", additional_instructions="Start your answer with 'Well'.")
        # The answer of the second exchange is deleted: its question and the next one now meet.
        await c.send({"type": "conversation.item.delete", "item_id": answers[1]})
        await c.until("conversation.item.deleted", 10)
        after_delete = usage(await ask(c, "Thanks."))
    assert text_of(oob).strip() and text_of(extra).strip(), (oob, extra)
    assert after_oob[1] >= after_oob[0] // 2, after_oob  # the side response left the conversation cached
    served = [cached >= prompt // 2 for prompt, cached in (usage(oob), usage(extra), after_delete)]
    if chat_roles == "auto":
        assert all(served), (usage(oob), usage(extra), after_delete)
    else:
        assert not any(served), (usage(oob), usage(extra), after_delete)


async def test_a_turn_with_its_own_instructions_answers_the_users_words() -> None:
    """Per-response instructions on a spoken agent's turn (some clients steer every answer so):
    placed after the user's words, SmolLM2-135M answered the instructions ("I'm ready to help.
    What's your question?"); before them, it answers the question."""
    async with text_session(30, "You are a friendly assistant.", n_ctx=2048) as c:
        answers = []
        for q, word in (("What is the capital of France?", "paris"), ("How many legs does a spider have?", "eight"),
                        ("What is the capital of Italy?", "rome")):
            done = await ask(c, q, {"instructions": "Answer in one short sentence."})
            answers.append((word, text_of(done).lower().replace("8", "eight")))
    assert sum(word in text for word, text in answers) >= 2, answers
