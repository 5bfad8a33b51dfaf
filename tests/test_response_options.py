"""`response.create`'s options beyond the OpenAI beta set, through the real server on loopback:
`pre_generated_assistant_message` (spoken without the LLM), `input_items` / `append_input_items`,
`cancel_previous`, `commit`, top-level `additional_instructions`, `reasoning_effort` (and GA
`reasoning`), `parallel_tool_calls`; and their bad values. Scripted stand-in engines (canned STT and
LLM, a tone per word for TTS) make the requests the LLM gets exact; the azure-ai-voicelive and openai
SDKs are the unmodified clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.ai.voicelive.aio import connect
from azure.ai.voicelive.models import (
    AssistantMessageItem,
    OutputTextContentPart,
    RequestSession,
    ResponseCreateParams,
)
from azure.core.credentials import AzureKeyCredential

from livevox.engines.base import ChatRequest
from livevox.engines.openai_llm import OpenAILLM
from livevox.engines.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS
from livevox.settings import OpenAILLMSettings
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient, silence, tone, types

pytestmark = pytest.mark.usefixtures("fresh_scripts")

TEXT = "Welcome back. How can I help you today?"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings()).start()
    yield srv
    srv.stop()


async def text_session(server: ServerThread) -> RealtimeClient:
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None, "instructions": "Be brief."})
    return c


def user_texts(req: ChatRequest) -> str:
    """What the user said, as the LLM got it (consecutive user messages are merged into one)."""
    return " ".join(m["content"] for m in req.messages if m.get("role") == "user")


# ------------------------------------------------------------------ pre-generated message


async def test_pre_generated_message_is_spoken_without_the_llm(server: ServerThread) -> None:
    c = await text_session(server)
    try:
        calls = len(ScriptedLLM.calls)
        await c.send({"type": "response.create", "response": {"pre_generated_assistant_message": {
            "type": "message", "role": "assistant", "content": [{"type": "text", "text": TEXT}]}}})
        evs = await c.until("response.done")
        assert len(ScriptedLLM.calls) == calls  # no model call
        done = evs[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["content"][0]["transcript"] == TEXT
        assert next(e for e in evs if e["type"] == "response.audio_transcript.done")["transcript"] == TEXT
        assert "response.audio.delta" in types(evs)
        assert " ".join(ScriptedTTS.calls).split() == TEXT.split()  # its words, all spoken
        # it is the conversation's assistant item, and the next response's LLM sees it
        item_id = done["output"][0]["id"]
        await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
        got = (await c.until("conversation.item.retrieved"))[-1]["item"]
        assert got["role"] == "assistant" and got["content"][0]["transcript"] == TEXT
        await c.send({"type": "response.create"})
        await c.until("response.done")
        assistant = [m["content"] for m in ScriptedLLM.calls[-1].messages if m["role"] == "assistant"]
        assert TEXT in assistant
    finally:
        await c.close()


async def test_pre_generated_message_through_the_voicelive_sdk(server: ServerThread) -> None:
    calls = len(ScriptedLLM.calls)
    async with connect(endpoint=server.http, credential=AzureKeyCredential("k"), model="gpt-realtime") as conn:
        await conn.session.update(session=RequestSession(turn_detection=None))
        await conn.response.create(response=ResponseCreateParams(
            pre_generated_assistant_message=AssistantMessageItem(content=[OutputTextContentPart(text=TEXT)])))
        transcript, audio = "", b""
        async for ev in conn:
            if ev.type == "response.audio.delta":
                audio += ev.delta
            elif ev.type == "response.audio_transcript.done":
                transcript = ev.transcript
            elif ev.type == "response.done":
                status = ev.response.status
                break
    assert transcript == TEXT and status == "completed"
    assert len(audio) // 2 >= 24000 * 0.06 * len(TEXT.split())  # 60 ms of tone per word
    assert len(ScriptedLLM.calls) == calls


@pytest.mark.parametrize(("message", "param"), [
    ("hello", "response.pre_generated_assistant_message"),
    ({"role": "user", "content": [{"type": "text", "text": "x"}]}, "response.pre_generated_assistant_message.role"),
    ({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
     "response.pre_generated_assistant_message.content"),
    ({"content": [{"type": "text", "text": "  "}]}, "response.pre_generated_assistant_message.content[0].text"),
    ({"content": [{"type": "audio", "audio": "AAAA"}]}, "response.pre_generated_assistant_message.content[0]"),
])
async def test_bad_pre_generated_message(server: ServerThread, message: Any, param: str) -> None:
    c = await text_session(server)
    try:
        await c.send({"type": "response.create", "event_id": "evt_pre",
                      "response": {"pre_generated_assistant_message": message}})
        err = await c.error()
        assert err["param"] == param and err["event_id"] == "evt_pre", err
        await c.send({"type": "response.create"})  # the session goes on
        assert (await c.until("response.done"))[-1]["response"]["status"] == "completed"
    finally:
        await c.close()


# ------------------------------------------------------------------ context: input items


async def test_append_input_items_join_the_conversation_first(server: ServerThread) -> None:
    c = await text_session(server)
    try:
        await c.send({"type": "response.create", "response": {"append_input_items": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first note"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second note"}]}]}})
        evs = await c.until("response.done")
        seq = types(evs)
        assert seq.count("conversation.item.created") >= 3  # the two items, then the answer
        assert seq.index("conversation.item.created") < seq.index("response.created")
        assert user_texts(ScriptedLLM.calls[-1]) == "first note second note"
        await c.send({"type": "response.create"})  # they stay in the conversation
        await c.until("response.done")
        assert user_texts(ScriptedLLM.calls[-1]) == "first note second note"
    finally:
        await c.close()


@pytest.mark.parametrize("key", ["input_items", "input"])
async def test_input_items_replace_the_context_for_one_response(server: ServerThread, key: str) -> None:
    c = await text_session(server)
    try:
        await c.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "in the conversation"}]}})
        await c.until("conversation.item.created")
        await c.send({"type": "response.create", "response": {key: [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "only this"}]}]}})
        await c.until("response.done")
        assert user_texts(ScriptedLLM.calls[-1]) == "only this"
        await c.send({"type": "response.create", "response": {key: []}})  # [] clears the context
        await c.until("response.done")
        assert user_texts(ScriptedLLM.calls[-1]) == ""
        await c.send({"type": "response.create"})
        await c.until("response.done")
        assert user_texts(ScriptedLLM.calls[-1]) == "in the conversation"
    finally:
        await c.close()


async def test_a_bad_appended_item_leaves_the_conversation_as_it_was(server: ServerThread) -> None:
    c = await text_session(server)
    try:
        await c.send({"type": "response.create", "event_id": "evt_app", "response": {"append_input_items": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fine"}]},
            {"type": "bogus"}]}})
        evs = await c.until("error")
        assert evs[-1]["error"]["param"] == "response.append_input_items[1].type", evs[-1]
        assert "conversation.item.created" not in types(evs)
        await c.send({"type": "response.create"})
        await c.until("response.done")
        assert user_texts(ScriptedLLM.calls[-1]) == ""
    finally:
        await c.close()


# ------------------------------------------------------------------ cancel_previous, commit


async def test_cancel_previous(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join(["word"] * 80) + "."
    ScriptedLLM.token_delay = 0.05  # 4 s of generation: still active when the next request comes
    c = await text_session(server)
    try:
        await c.send({"type": "response.create"})
        first = (await c.until("response.created"))[-1]["response"]["id"]
        await c.send({"type": "response.create", "event_id": "evt_busy"})
        err = await c.error()
        assert err["code"] == "conversation_already_has_active_response" and err["event_id"] == "evt_busy"
        ScriptedLLM.token_delay = 0.0
        await c.send({"type": "response.create", "response": {"cancel_previous": True}})
        evs = await c.until("response.created")
        done_first = next(e for e in evs if e["type"] == "response.done")
        assert done_first["response"]["id"] == first
        assert done_first["response"]["status"] == "cancelled"
        second = evs[-1]["response"]["id"]
        done = await c.until("response.done")
        assert done[-1]["response"]["id"] == second and done[-1]["response"]["status"] == "completed"
    finally:
        await c.close()


async def test_commit_commits_the_pending_audio_first(server: ServerThread) -> None:
    ScriptedSTT.script(["what time is it"])
    c = await text_session(server)
    try:
        await c.append(tone(0.5))
        await c.append(silence(0.2))
        await c.send({"type": "response.create", "response": {"commit": True}})
        evs = await c.until("response.done")
        seq = types(evs)
        assert seq.index("input_audio_buffer.committed") < seq.index("response.created")
        assert user_texts(ScriptedLLM.calls[-1]) == "what time is it"
        # nothing pending: commit is a no-op, not an error
        await c.send({"type": "response.create", "response": {"commit": True}})
        evs = await c.until("response.done")
        assert "input_audio_buffer.committed" not in types(evs) and "error" not in types(evs)
    finally:
        await c.close()


# ------------------------------------------------------------------ instructions and engine options


async def test_additional_instructions_for_one_response(server: ServerThread) -> None:
    c = await text_session(server)
    try:
        await c.send({"type": "response.create", "additional_instructions": "Answer in French."})
        await c.until("response.done")
        system = ScriptedLLM.calls[-1].messages[0]
        assert system["role"] == "system" and system["content"].startswith("Be brief.")
        assert system["content"].endswith("Answer in French.")
        await c.send({"type": "response.create"})
        await c.until("response.done")
        assert ScriptedLLM.calls[-1].messages[0]["content"] == "Be brief."
        await c.send({"type": "response.create", "event_id": "evt_ai", "additional_instructions": 7})
        assert (await c.error())["param"] == "additional_instructions"
    finally:
        await c.close()


@pytest.mark.parametrize("chat_roles", ["free", "strict"])
async def test_a_responses_own_instructions_follow_the_conversation_where_the_template_allows(
        chat_roles: str) -> None:
    """`llm.chat_roles` "free" (ChatML): the session's instructions stay first, as the cached
    prompt has them, and the response's own (`instructions`, `additional_instructions`) come in
    a system message after the conversation (before the turn it answers; last when the agent
    has answered the last turn); user messages are not joined. "strict": one system
    message first, consecutive user messages joined (the scripted engine is the stand-in)."""
    srv = ServerThread(scripted_settings(llm={"engine": "scripted", "chat_roles": chat_roles})).start()
    try:
        c = await text_session(srv)
        for text in ("One.", "Two."):
            await c.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        await c.send({"type": "response.create", "additional_instructions": "Answer in French."})
        await c.until("response.done")
        extra = ScriptedLLM.calls[-1].messages
        await c.send({"type": "response.create", "response": {"conversation": "none", "instructions": "Summarize."}})
        await c.until("response.done")
        oob = ScriptedLLM.calls[-1]
        await c.send({"type": "response.create", "response": {
            "conversation": "none", "instructions": "Translate.",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]}]}})
        await c.until("response.done")
        own_input = ScriptedLLM.calls[-1]
        await c.close()
    finally:
        srv.stop()
    roles = [m["role"] for m in extra]
    if chat_roles == "free":
        # Before the turn it answers (the two user messages), so the model answers the user.
        assert roles == ["system", "system", "user", "user"], extra
        assert extra[0]["content"] == "Be brief." and extra[1]["content"] == "Answer in French."
        assert oob.messages[0]["content"] == "Be brief."
        assert oob.messages[-1] == {"role": "system", "content": "Summarize."}
        assert oob.conversation  # it runs where the conversation is cached
    else:
        assert roles == ["system", "user"], extra
        assert extra[0]["content"] == "Be brief.\n\nAnswer in French." and extra[1]["content"] == "One. Two."
        assert oob.messages[0]["content"] == "Summarize." and oob.messages[-1]["role"] != "system"
        assert not oob.conversation
    # A response with its own input is a new context either way: its instructions come first.
    assert [m["role"] for m in own_input.messages] == ["system", "user"], own_input.messages
    assert own_input.messages[0]["content"] == "Translate." and not own_input.conversation


async def test_reasoning_effort_and_parallel_tool_calls_reach_the_llm(server: ServerThread) -> None:
    c = await text_session(server)
    try:
        await c.update({"reasoning_effort": "low"})
        await c.send({"type": "response.create"})
        await c.until("response.done")
        assert ScriptedLLM.calls[-1].reasoning_effort == "low"
        tool = {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}
        await c.send({"type": "response.create", "response": {"reasoning_effort": "high", "tools": [tool],
                                                              "parallel_tool_calls": False}})
        await c.until("response.done")
        assert ScriptedLLM.calls[-1].reasoning_effort == "high"
        assert ScriptedLLM.calls[-1].parallel_tool_calls is False
        await c.send({"type": "response.create", "event_id": "evt_re", "response": {"reasoning_effort": "max"}})
        assert (await c.error())["param"] == "response.reasoning_effort"
    finally:
        await c.close()


async def test_ga_reasoning_maps_to_reasoning_effort(server: ServerThread) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="k", base_url=f"{server.http}/v1", websocket_base_url=f"{server.ws}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "reasoning": {"effort": "minimal"}})
        async for ev in conn:
            if ev.type == "session.updated":
                assert ev.session.model_dump().get("reasoning") == {"effort": "minimal"}
                break
        await conn.response.create(response={"reasoning": {"effort": "medium"}})
        async for ev in conn:
            if ev.type == "response.done":
                break
    assert ScriptedLLM.calls[-1].reasoning_effort == "medium"


def test_openai_compatible_engine_sends_reasoning_effort() -> None:
    llm = OpenAILLM(OpenAILLMSettings(base_url="http://127.0.0.1:9/v1"))
    assert llm.body(ChatRequest(messages=[], reasoning_effort="low"))["reasoning_effort"] == "low"
    assert "reasoning_effort" not in llm.body(ChatRequest(messages=[]))


@pytest.mark.parametrize(("response", "code", "param"), [
    ({"commit": "yes"}, "invalid_type", "response.commit"),
    ({"cancel_previous": 1}, "invalid_type", "response.cancel_previous"),
    ({"input_items": {}}, "invalid_type", "response.input_items"),
    ({"prompt": {"id": "pmpt_1"}}, "unsupported_feature", "response.prompt"),
    ({"invoke_input": {"a": 1}}, "unsupported_feature", "response.invoke_input"),
    ({"input_audio_format": "g711_ulaw"}, "unsupported_feature", "response.input_audio_format"),
])
async def test_bad_options_name_their_param(server: ServerThread, response: dict[str, Any], code: str,
                                            param: str) -> None:
    c = await text_session(server)
    try:
        await c.send({"type": "response.create", "event_id": "evt_bad", "response": response})
        err = await c.error()
        assert (err["code"], err["param"], err["event_id"]) == (code, param, "evt_bad"), err
        await c.send({"type": "response.create"})
        assert (await c.until("response.done"))[-1]["response"]["status"] == "completed"
    finally:
        await c.close()


async def test_pre_generated_message_has_word_timestamps_and_visemes(piper_server: ServerThread) -> None:
    """With a real voice, a pre-generated message gets the marks any answer gets."""
    c = await RealtimeClient.connect(piper_server.ws)
    try:
        await c.update({"turn_detection": None, "output_audio_timestamp_types": ["word"],
                        "animation": {"outputs": ["viseme_id"]}})
        await c.send({"type": "response.create", "response": {"pre_generated_assistant_message": {
            "content": [{"type": "text", "text": "Hello there, welcome back."}]}}})
        evs = await c.until("response.done", timeout=30)
        words = [e["text"] for e in evs if e["type"] == "response.audio_timestamp.delta"]
        assert [w.strip(",.").lower() for w in words] == ["hello", "there", "welcome", "back"], words
        assert "response.animation_viseme.delta" in types(evs)
        assert evs[-1]["response"]["output"][0]["content"][0]["transcript"] == "Hello there, welcome back."
    finally:
        await c.close()


async def test_the_options_through_the_voicelive_sdk(server: ServerThread) -> None:
    """The unmodified SDK's own spelling of append_input_items, cancel_previous, commit and
    additional_instructions (its ResponseCreateParams and ResponseResource.create)."""
    from azure.ai.voicelive.models import InputTextContentPart, UserMessageItem

    ScriptedLLM.reply = " ".join(["word"] * 60) + "."
    ScriptedLLM.token_delay = 0.05
    async with connect(endpoint=server.http, credential=AzureKeyCredential("k"), model="gpt-realtime") as conn:
        await conn.session.update(session=RequestSession(turn_detection=None, instructions="Be brief."))
        await conn.response.create()
        statuses: dict[str, str] = {}
        first = None
        async for ev in conn:
            if ev.type == "response.created" and first is None:
                first = ev.response.id
                ScriptedLLM.token_delay = 0.0
                await conn.response.create(response=ResponseCreateParams(
                    cancel_previous=True, commit=True,
                    append_input_items=[UserMessageItem(content=[InputTextContentPart(text="a note")])]),
                    additional_instructions="Answer in French.")
            elif ev.type == "response.done":
                statuses[ev.response.id] = ev.response.status
                if len(statuses) == 2:
                    break
    assert statuses[first] == "cancelled"
    assert [s for r, s in statuses.items() if r != first] == ["completed"]
    req = ScriptedLLM.calls[-1]
    assert user_texts(req) == "a note" and req.messages[0]["content"].endswith("Answer in French.")


def test_late_instructions_go_before_the_turn_they_answer() -> None:
    from livevox.realtime.conversation import late_position

    sys_msg = {"role": "system", "content": "Be brief."}
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "12 C"}
    assert late_position([sys_msg]) == 1
    assert late_position([sys_msg, {"role": "user", "content": "Hi."}]) == 1
    # A turn with its tool call and result: before the user's words, so the answer uses the result.
    assert late_position([sys_msg, {"role": "user", "content": "Weather?"}, call, result]) == 1
    # The agent has answered the last turn: the instructions are the response's task, last.
    answered = [sys_msg, {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    assert late_position(answered) == 3
    assert late_position([*answered, {"role": "user", "content": "One."}, {"role": "user", "content": "Two."}]) == 3
