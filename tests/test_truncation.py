"""The `session.truncation` policy on its own: which messages the LLM gets, and where it cuts."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from engine_standin import EngineStandIn
from livevox.engines.base import overflow_from
from livevox.engines.scripted import ScriptedLLM
from livevox.realtime import truncation
from livevox.realtime.truncation import Cut, Policy, PolicyError, truncate, validate
from server_harness import ServerThread, scripted_settings
from wsclient import VL_PATH, RealtimeClient

AUTO = Policy("auto", 0.5)


def convo(turns: int, words: int = 10) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
    for i in range(turns):
        msgs.append({"role": "user", "content": f"question {i}"})
        msgs.append({"role": "assistant", "content": f"answer {i} " + "w " * words})
    return msgs


def counts(msgs: list[dict[str, Any]]) -> list[int]:
    return [len(str(m.get("content") or "").split()) + 1 for m in msgs]


def test_everything_fits_nothing_dropped() -> None:
    msgs = convo(3)
    res = truncate(msgs, counts(msgs), 0, 1000, AUTO)
    assert res.messages == msgs and res.fits and res.dropped == 0


def test_overflow_keeps_instructions_and_latest_turn_and_cuts_to_the_ratio() -> None:
    msgs = [*convo(20), {"role": "user", "content": "latest question"}]
    c = counts(msgs)
    res = truncate(msgs, c, 0, 200, AUTO)
    assert res.fits
    assert res.messages[0] == msgs[0]
    assert res.messages[-1] == msgs[-1]
    assert res.messages[1]["role"] == "user"
    kept = res.tokens - c[0]
    assert kept <= 0.5 * (200 - c[0])
    assert res.messages[1:] == msgs[len(msgs) - len(res.messages) + 1:]  # a suffix of the conversation


def test_cut_is_stable_until_the_next_overflow() -> None:
    msgs = convo(20)
    res = truncate(msgs, counts(msgs), 0, 200, AUTO)
    first_kept = res.messages[1]
    cuts = 0
    prefixes_changed = 0
    cut = res.cut
    for turn in range(20, 60):
        msgs = [*msgs, {"role": "user", "content": f"question {turn}"},
                {"role": "assistant", "content": f"answer {turn} " + "w " * 10}]
        nxt = truncate(msgs, counts(msgs), 0, 200, AUTO, cut)
        assert nxt.fits
        if nxt.messages[1] != first_kept:
            prefixes_changed += 1
            first_kept = nxt.messages[1]
        if nxt.cut.dropped != cut.dropped:
            cuts += 1
        cut = nxt.cut
    # 40 turns of ~14 tokens into a ~190 token budget cut at 50%: a new cut every ~7 turns, not every turn.
    assert 3 <= prefixes_changed <= 10
    assert prefixes_changed == cuts


def test_cut_found_again_after_old_items_aged_out() -> None:
    msgs = convo(20)
    res = truncate(msgs, counts(msgs), 0, 200, AUTO)
    aged = [msgs[0], *msgs[5:]]  # four items popped by `limits.max_items`
    again = truncate(aged, counts(aged), 0, 200, AUTO, res.cut)
    assert again.messages == res.messages


def test_tool_results_never_lose_their_call() -> None:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "x"}]
    for i in range(30):
        msgs.append({"role": "assistant", "content": None,
                     "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": "result " * 5})
    msgs.append({"role": "user", "content": "go on"})
    res = truncate(msgs, [6] * len(msgs), 0, 60, AUTO)
    assert res.fits
    for i, m in enumerate(res.messages):
        if m["role"] == "tool":
            assert res.messages[i - 1].get("tool_calls"), "a tool result lost its call"


def test_disabled_sends_everything_and_reports_it_does_not_fit() -> None:
    msgs = convo(20)
    res = truncate(msgs, counts(msgs), 0, 100, Policy("disabled", 1.0))
    assert res.messages == msgs and not res.fits and res.tokens == sum(counts(msgs))


def test_post_instructions_caps_the_conversation() -> None:
    msgs = convo(10)
    c = counts(msgs)
    res = truncate(msgs, c, 0, 10_000, Policy("retention_ratio", 1.0, post_instructions=50))
    assert res.fits and res.dropped > 0 and res.tokens - c[0] <= 50


def test_latest_turn_alone_too_long_does_not_fit() -> None:
    msgs = [{"role": "system", "content": "x"}, {"role": "user", "content": "w " * 500}]
    res = truncate(msgs, counts(msgs), 0, 100, AUTO)
    assert not res.fits and res.messages[-1] == msgs[-1]


def test_fixed_tokens_count_against_the_budget() -> None:
    msgs = convo(5)
    total = sum(counts(msgs))
    assert truncate(msgs, counts(msgs), 0, total, AUTO).dropped == 0
    assert truncate(msgs, counts(msgs), 30, total, AUTO).dropped > 0


@pytest.mark.parametrize("value", ["auto", "disabled", {"type": "retention_ratio", "retention_ratio": 0.5},
                                   {"type": "retention_ratio", "retention_ratio": 1,
                                    "token_limits": {"post_instructions": 1000}},
                                   {"type": "retention_ratio", "retention_ratio": 0.0, "token_limits": {}}])
def test_valid_values(value: Any) -> None:
    assert validate(value) == value


@pytest.mark.parametrize(("value", "param"), [
    ("sometimes", "session.truncation"),
    (None, "session.truncation"),
    ({"type": "ratio", "retention_ratio": 0.5}, "session.truncation.type"),
    ({"type": "retention_ratio"}, "session.truncation.retention_ratio"),
    ({"type": "retention_ratio", "retention_ratio": 1.5}, "session.truncation.retention_ratio"),
    ({"type": "retention_ratio", "retention_ratio": True}, "session.truncation.retention_ratio"),
    ({"type": "retention_ratio", "retention_ratio": 0.5, "extra": 1}, "session.truncation.extra"),
    ({"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"post_instructions": 0}},
     "session.truncation.token_limits.post_instructions"),
    ({"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"pre": 1}},
     "session.truncation.token_limits.pre"),
])
def test_invalid_values_name_the_field(value: Any, param: str) -> None:
    with pytest.raises(PolicyError) as err:
        validate(value)
    assert err.value.param == param


def test_policy_of_each_shape() -> None:
    assert truncation.policy("auto", 0.7) == Policy("auto", 0.7)
    assert truncation.policy("disabled", 0.7).kind == "disabled"
    assert truncation.policy({"type": "retention_ratio", "retention_ratio": 0.25,
                              "token_limits": {"post_instructions": 99}}, 0.7) == Policy("retention_ratio", 0.25, 99)


def test_count_cache_counts_each_message_once() -> None:
    seen: list[str] = []

    def counter(m: dict[str, Any]) -> int:
        seen.append(str(m["content"]))
        return 3

    cache = truncation.CountCache()
    msgs = convo(2)
    assert cache.count(msgs, counter) == [3] * len(msgs)
    cache.count([*msgs, {"role": "user", "content": "new"}], counter)
    assert seen.count("new") == 1 and len(seen) == len(msgs) + 1


def test_unused_cut_is_harmless() -> None:
    msgs = convo(2)
    res = truncate(msgs, counts(msgs), 0, 1000, AUTO, Cut(7, {"role": "user", "content": "gone"}))
    assert res.messages == msgs


# ================================================================ over the WebSocket, real server

LONG_ANSWER = " ".join(f"word{i}" for i in range(40))
GA_PATH = "/v1/realtime?model=gpt-realtime"


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings()).start()
    yield srv
    srv.stop()


async def text_turn(c: RealtimeClient, text: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    await c.send({"type": "response.create"})
    return await c.until("response.done", timeout)


async def test_ga_truncation_is_echoed_and_parsed_by_the_openai_sdk(scripted_server: ServerThread) -> None:
    from openai.types.realtime import SessionUpdatedEvent
    from openai.types.realtime.realtime_truncation_retention_ratio import RealtimeTruncationRetentionRatio

    c = await RealtimeClient.connect(scripted_server.ws, GA_PATH, headers={"Authorization": "Bearer sk"}, first="")
    created = await c.recv()
    assert created["session"]["truncation"] == "auto"
    value = {"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"post_instructions": 2000}}
    await c.send({"type": "session.update", "session": {"type": "realtime", "truncation": value}})
    ev = (await c.until("session.updated"))[-1]
    parsed = SessionUpdatedEvent.model_validate(ev)
    trunc = parsed.session.truncation  # type: ignore[union-attr]
    assert isinstance(trunc, RealtimeTruncationRetentionRatio)
    assert trunc.retention_ratio == 0.5 and trunc.token_limits is not None
    assert trunc.token_limits.post_instructions == 2000
    await c.send({"type": "session.update", "session": {"truncation": "disabled"}})
    assert SessionUpdatedEvent.model_validate((await c.until("session.updated"))[-1]).session.truncation == "disabled"
    await c.close()


@pytest.mark.parametrize(("value", "param"), [
    ("never", "session.truncation"),
    ({"type": "retention_ratio", "retention_ratio": 2}, "session.truncation.retention_ratio"),
    ({"type": "last_n"}, "session.truncation.type"),
    ({"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"post_instructions": -1}},
     "session.truncation.token_limits.post_instructions"),
])
@pytest.mark.parametrize("path", [GA_PATH, VL_PATH])
async def test_bad_truncation_is_an_invalid_request(scripted_server: ServerThread, path: str, value: Any,
                                                    param: str) -> None:
    c = await RealtimeClient.connect(scripted_server.ws, path, headers={"Authorization": "Bearer sk"}, first="")
    before = (await c.recv())["session"]["truncation"]
    await c.send({"type": "session.update", "session": {"truncation": value}})
    err = await c.error()
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    # The config is untouched and the session answers.
    await c.send({"type": "session.update", "session": {"instructions": "x"}})
    assert (await c.until("session.updated"))[-1]["session"]["truncation"] == before
    await c.close()


async def test_voice_live_dialect_accepts_truncation(scripted_server: ServerThread) -> None:
    c = await RealtimeClient.connect(scripted_server.ws)
    s = await c.update({"truncation": {"type": "retention_ratio", "retention_ratio": 0.25}})
    assert s["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.25}
    await c.close()


@pytest.mark.usefixtures("fresh_scripts")
async def test_disabled_overflow_is_a_clear_error_and_the_session_stays_usable(scripted_server: ServerThread) -> None:
    ScriptedLLM.context_window = 200
    ScriptedLLM.reply = LONG_ANSWER
    c = await RealtimeClient.connect(scripted_server.ws)
    await c.update({"turn_detection": None, "modalities": ["text"], "truncation": "disabled",
                    "max_response_output_tokens": 40})
    failed = None
    for turn in range(20):
        done = (await text_turn(c, f"question {turn}"))[-1]["response"]
        if done["status"] == "failed":
            failed = done
            break
        assert done["status"] == "completed", done
    assert failed is not None, "the conversation never overflowed 200 tokens"
    err = failed["status_details"]["error"]
    assert err["code"] == "context_length_exceeded"
    assert "200 tokens" in err["message"] and "disabled" in err["message"], err
    # A failing request never reached the model; deleting old items makes room again.
    items = [e["item"]["id"] for e in c.events if e["type"] == "conversation.item.created"]
    for item_id in items[:-1]:
        await c.send({"type": "conversation.item.delete", "item_id": item_id})
        await c.until("conversation.item.deleted")
    await c.send({"type": "response.create"})
    assert (await c.until("response.done"))[-1]["response"]["status"] == "completed"
    # And auto from here on never fails.
    await c.update({"truncation": "auto"})
    for turn in range(20):
        assert (await text_turn(c, f"again {turn}"))[-1]["response"]["status"] == "completed"
    await c.close()


def first_kept(messages: list[dict[str, Any]]) -> str:
    """The first message after the instructions: what changes when a cut moves."""
    rest = [m for m in messages if m.get("role") != "system"]
    return json.dumps(rest[0]) if rest else ""


async def long_session(c: RealtimeClient, turns: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    dones = []
    for turn in range(turns):
        done = (await text_turn(c, f"Tell me more, part {turn}.", timeout))[-1]["response"]
        assert done["status"] in ("completed", "incomplete"), (turn, done)
        dones.append(done)
    return dones


# ---------------------------------------------------------------- a remote engine with a small context


@pytest.mark.parametrize("configured", [True, False], ids=["context_window", "learnt_from_the_error"])
async def test_200_turns_through_a_remote_engine_with_a_small_context(standin: EngineStandIn,
                                                                     configured: bool) -> None:
    standin.reset()
    standin.context_size = 3000
    standin.reply = " ".join(f"w{i}" for i in range(60))
    openai: dict[str, Any] = {"base_url": standin.base_url, "warmup": False}
    if configured:
        openai["context_window"] = 3000
    srv = ServerThread(scripted_settings(llm={"engine": "openai", "openai": openai})).start()
    try:
        c = await RealtimeClient.connect(srv.ws)
        await c.update({"turn_detection": None, "modalities": ["text"], "max_response_output_tokens": 50})
        dones = await long_session(c, 200)
        await c.close()
    finally:
        srv.stop()
    assert {d["status"] for d in dones} <= {"completed", "incomplete"}
    answered = [r for r in standin.requests if standin.prompt_tokens(r.body) <= 3000]
    assert len(answered) == 200
    # The history (~140 stand-in tokens a turn) went over the context many times; the model saw
    # only the latest part, and the engine refused a prompt only until livevox learnt its count.
    assert len(answered[-1].body["messages"]) < 100
    assert 1 <= standin.overflows <= 3
    # Cut in chunks: a cut frees 20% of the context, several turns' worth, so the prompt's prefix
    # stays put for turns between cuts (cutting just enough would move it every turn).
    prefixes = [first_kept(r.body["messages"]) for r in answered]
    changes = sum(a != b for a, b in itertools.pairwise(prefixes))
    assert 5 <= changes <= 200 // 3, changes


# ---------------------------------------------------------------- the embedded llama.cpp model


async def test_200_long_answer_turns_on_the_embedded_llm() -> None:
    # The smallest context (256 tokens, one slot) and short answers, so that 200 turns cross it
    # about every other turn in minutes; one thread, as the test machine is shared.
    settings = scripted_settings(llm={"engine": "llamacpp", "n_ctx": 256, "threads": 1, "max_tokens": 256})
    srv = ServerThread(settings).start(timeout=300)
    try:
        c = await RealtimeClient.connect(srv.ws)
        await c.update({"turn_detection": None, "modalities": ["text"], "max_response_output_tokens": 16,
                        "instructions": "You are a storyteller. Always answer with at least 150 words."})
        dones = await long_session(c, 200, timeout=120)
        await c.close()
    finally:
        srv.stop()
    usage = [d["usage"] for d in dones]
    assert all(u["input_tokens"] + u["output_tokens"] <= 256 for u in usage), usage
    assert all(u["output_tokens"] > 0 for u in usage)
    # Each cut shows as a prompt shorter than the turn before's: many cuts, each in a chunk.
    prompts = [u["input_tokens"] for u in usage]
    cuts = sum(b < a for a, b in itertools.pairwise(prompts))
    assert 20 <= cuts < 150, prompts
    # Between cuts the prefix is stable, so llama.cpp's prompt cache serves it: a turn that did
    # not cut evaluates only what is new (the last answer and the question), as response.done's
    # usage reports (`input_token_details.cached_tokens`, from llama.cpp's own count).
    cached = [u["input_token_details"]["cached_tokens"] for u in usage]
    assert all(0 <= k <= p for k, p in zip(cached, prompts, strict=True)), (cached, prompts)
    grew = [i for i in range(1, len(prompts)) if prompts[i] > prompts[i - 1]]
    served = [i for i in grew if cached[i] >= prompts[i - 1] - 8]
    assert len(served) >= 0.9 * len(grew), [(prompts[i - 1], prompts[i], cached[i]) for i in grew]


@pytest.mark.parametrize(("message", "prompt", "limit"), [
    ("llama.cpp: request (4134 tokens) exceeds the available context size (4096 tokens), try increasing it",
     4134, 4096),
    ("This model's maximum context length is 8192 tokens. However, your messages resulted in 9,001 tokens. "
     "Please reduce the length of the messages. (context_length_exceeded)", 9001, 8192),
    ("This model's maximum context length is 4096 tokens. However, you requested 4134 tokens "
     "(3878 in the messages, 256 in the completion).", 4134, 4096),
])
def test_engine_overflow_messages_are_recognised(message: str, prompt: int, limit: int) -> None:
    err = overflow_from("llm", message)
    assert err is not None and err.code == "context_length_exceeded"
    assert (err.prompt_tokens, err.limit) == (prompt, limit)
    assert overflow_from("llm", "HTTP 400: 'messages' must be an array") is None
