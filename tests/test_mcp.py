"""MCP tools in realtime sessions, end to end: a real MCP server (the `mcp` SDK's MCPServer over
Streamable HTTP, on 127.0.0.1) and the real livevox server, with the *scripted stand-in engines*
for VAD/STT/LLM/TTS (`ScriptedLLM.tool_call` makes the stand-in LLM call a tool). Voice Live over
a raw WebSocket; OpenAI GA through the unmodified openai SDK, whose typed models must parse every
MCP event."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from openai import AsyncOpenAI
from openai.types.realtime import (
    ConversationItemAdded,
    ConversationItemDone,
    McpListToolsCompleted,
    McpListToolsFailed,
    McpListToolsInProgress,
    RealtimeMcpApprovalRequest,
    RealtimeMcpApprovalResponse,
    RealtimeMcpListTools,
    RealtimeMcpToolCall,
    RealtimeMcpToolExecutionError,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseMcpCallArgumentsDelta,
    ResponseMcpCallArgumentsDone,
    ResponseMcpCallCompleted,
    ResponseMcpCallFailed,
    ResponseMcpCallInProgress,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    SessionUpdatedEvent,
)
from starlette.responses import PlainTextResponse

from livevox.engines.scripted import ScriptedLLM, ScriptedToolCall
from livevox.mcp.hosts import HostNotAllowed, check_url
from livevox.realtime.mcp_tools import function_name, is_allowed, needs_approval, validate_mcp_tool
from livevox.realtime.ports import Channel, channel_of
from livevox.settings import McpSettings
from server_harness import ServerThread, free_port, scripted_settings
from wsclient import RealtimeClient, silence, tone, types

pytestmark = pytest.mark.usefixtures("fresh_scripts")

LIST_TIMEOUT, CALL_TIMEOUT, MAX_OUTPUT, APPROVAL_TIMEOUT = 1.5, 1.5, 4096, 4.0


# ------------------------------------------------------------------ the MCP server under test


class McpTestServer:
    """MCPServer with a few tools, behind a recorder of every HTTP request; `/junk` answers HTML
    (not MCP), `/hang` never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bookings: list[str] = []
        mcp = MCPServer("kitchen")

        @mcp.tool(description="The weather in a city", annotations=ToolAnnotations(readOnlyHint=True))
        def get_weather(city: str) -> str:
            return f"Sunny and 21 degrees in {city}"

        @mcp.tool(description="Book a table")
        def book_table(restaurant: str, people: int) -> str:
            self.bookings.append(restaurant)
            return f"Booked {restaurant} for {people}"

        @mcp.tool(description="Always fails")
        def broken(reason: str) -> str:
            raise ToolError(f"no luck: {reason}")

        @mcp.tool(description="Takes its time")
        async def slow_tool() -> str:
            await asyncio.sleep(10)
            return "late"

        @mcp.tool(description="A very long answer")
        def big_output() -> str:
            return "x" * 100_000

        inner = mcp.streamable_http_app(host="127.0.0.1")

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                self.requests.append((scope["path"], headers))
                if scope["path"] == "/junk":
                    await PlainTextResponse("<html>no MCP here</html>", media_type="text/html")(scope, receive, send)
                    return
                if scope["path"] == "/hang":
                    await asyncio.sleep(LIST_TIMEOUT + 2)
                    return
            await inner(scope, receive, send)

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="mcp-test-server")

    def url(self, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> McpTestServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    srv = McpTestServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(mcp={"list_timeout_seconds": LIST_TIMEOUT,
                                              "call_timeout_seconds": CALL_TIMEOUT,
                                              "max_output_bytes": MAX_OUTPUT,
                                              "max_servers_per_session": 4,
                                              "approval_timeout_seconds": APPROVAL_TIMEOUT})).start()
    yield srv
    srv.stop()


@pytest.fixture
async def vl(server: ServerThread) -> AsyncIterator[RealtimeClient]:
    c = await RealtimeClient.connect(server.ws)
    yield c
    await c.close()


def kitchen(mcp_server: McpTestServer, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "kitchen", "server_url": mcp_server.url(), **extra}


async def discovered(c: RealtimeClient, label: str) -> dict[str, Any]:
    """Voice Live order: in_progress, then the item (with its tools or error), then completed|failed."""
    evs = await c.until("mcp_list_tools.completed")
    seq = [e for e in evs if e["type"].startswith("mcp_list_tools") or e["type"] == "conversation.item.created"]
    assert types(seq) == ["mcp_list_tools.in_progress", "conversation.item.created", "mcp_list_tools.completed"]
    item = seq[1]["item"]
    assert item["type"] == "mcp_list_tools" and item["server_label"] == label
    assert seq[0]["item_id"] == item["id"] == seq[2]["item_id"]
    return item  # type: ignore[no-any-return]


async def say(c: RealtimeClient, text: str, response: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    await c.send({"type": "response.create", **({"response": response} if response else {})})
    return await c.until("response.done")


async def text_answer_works(c: RealtimeClient) -> None:
    """The session goes on: a further text response completes."""
    evs = await say(c, "tell me a story", {"modalities": ["text"]})
    done = evs[-1]["response"]
    assert done["status"] == "completed", done
    assert any(e["type"] == "response.text.done" and e["text"] for e in evs)


# ------------------------------------------------------------------ Voice Live (raw WebSocket)


async def test_discovery_lists_allowed_tools_once_and_the_llm_sees_them(
        vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    tool = kitchen(mcp_server, headers={"X-Tenant": "t1"}, authorization="tok123",
                   allowed_tools=["get_weather", "book_table", "broken", "slow_tool"])
    before = len(mcp_server.requests)
    session = await vl.update({"tools": [tool]})
    assert session["tools"][0]["require_approval"] == "always"  # the default
    # Credentials are write-only: the session object never echoes them.
    assert "authorization" not in session["tools"][0] and session["tools"][0]["headers"] == {"X-Tenant": "***"}
    item = await discovered(vl, "kitchen")
    tools = {t["name"]: t for t in item["tools"]}
    assert set(tools) == {"get_weather", "book_table", "broken", "slow_tool"}  # allowed_tools applied
    assert tools["get_weather"]["input_schema"]["properties"]["city"]["type"] == "string"
    assert tools["get_weather"]["annotations"]["readOnlyHint"] is True
    assert tools["get_weather"]["description"] == "The weather in a city"
    sent = mcp_server.requests[before:]
    assert sent and all(h.get("authorization") == "Bearer tok123" and h.get("x-tenant") == "t1" for _, h in sent)
    # The same configuration again: no second discovery.
    await vl.update({"tools": [tool], "instructions": "Be brief."})
    assert not [e for e in await vl.quiet(0.5) if e["type"].startswith("mcp_list_tools")]
    evs = await say(vl, "hello there", {"modalities": ["text"]})
    assert evs[-1]["response"]["status"] == "completed"
    names = {t["function"]["name"] for t in ScriptedLLM.calls[-1].tools}
    assert names == {"kitchen__get_weather", "kitchen__book_table", "kitchen__broken", "kitchen__slow_tool"}


async def test_call_without_approval_then_the_next_response_speaks_the_result(
        vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    await vl.update({"tools": [kitchen(mcp_server, require_approval="never")]})
    await discovered(vl, "kitchen")
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__get_weather", {"city": "Paris"}, when="weather")
    evs = await say(vl, "what is the weather in Paris?")
    seq = [t for t in types(evs) if not t.startswith("response.audio")]
    assert seq == [
        "conversation.item.created",  # the user's message
        "response.created", "response.output_item.added", "conversation.item.created",
        "response.mcp_call_arguments.delta", "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress", "response.mcp_call.completed",
        "response.output_item.done", "response.done",
    ], seq
    added = next(e for e in evs if e["type"] == "response.output_item.added")["item"]
    assert added["type"] == "mcp_call" and added["name"] == "get_weather" and added["server_label"] == "kitchen"
    args_done = next(e for e in evs if e["type"] == "response.mcp_call_arguments.done")
    assert args_done["arguments"] == '{"city": "Paris"}' and args_done["item_id"] == added["id"]
    done_item = next(e for e in evs if e["type"] == "response.output_item.done")["item"]
    assert done_item["output"] == "Sunny and 21 degrees in Paris" and done_item["error"] is None
    response = evs[-1]["response"]
    assert response["status"] == "completed" and [o["type"] for o in response["output"]] == ["mcp_call"]
    # The service does not keep generating: the client asks for the spoken answer.
    await vl.send({"type": "response.create"})
    evs = await vl.until("response.done")
    assert evs[-1]["response"]["status"] == "completed"
    msgs = ScriptedLLM.calls[-1].messages
    call = next(m for m in msgs if m.get("tool_calls"))
    assert call["tool_calls"][0]["function"]["name"] == "kitchen__get_weather"
    assert msgs[-1] == {"role": "tool", "tool_call_id": added["id"], "content": "Sunny and 21 degrees in Paris"}
    assert any(e["type"] == "response.audio.delta" for e in evs)


async def test_tool_errors_timeouts_and_output_cap(vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    await vl.update({"tools": [kitchen(mcp_server, require_approval="never")]})
    await discovered(vl, "kitchen")
    # A tool that reports an error: tool_execution_error with its message.
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__broken", {"reason": "closed"}, when="broken")
    evs = await say(vl, "try the broken tool", {"modalities": ["text"]})
    assert "response.mcp_call.failed" in types(evs) and "response.mcp_call.completed" not in types(evs)
    item = next(e for e in evs if e["type"] == "response.output_item.done")["item"]
    assert item["output"] is None
    assert item["error"]["type"] == "tool_execution_error" and "no luck: closed" in item["error"]["message"]
    await text_answer_works(vl)
    # A tool slower than mcp.call_timeout_seconds.
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__slow_tool", {}, when="slow")
    t0 = time.monotonic()
    evs = await say(vl, "run the slow tool", {"modalities": ["text"]})
    assert time.monotonic() - t0 < CALL_TIMEOUT + 3
    item = next(e for e in evs if e["type"] == "response.output_item.done")["item"]
    assert "response.mcp_call.failed" in types(evs)
    assert item["error"]["type"] == "http_error" and item["error"]["code"] == 504
    assert "mcp.call_timeout_seconds" in item["error"]["message"]
    await text_answer_works(vl)
    # A long output is cut to mcp.max_output_bytes, and says so.
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__big_output", {}, when="big")
    evs = await say(vl, "the big one", {"modalities": ["text"]})
    item = next(e for e in evs if e["type"] == "response.output_item.done")["item"]
    assert len(item["output"].encode()) <= MAX_OUTPUT and "mcp.max_output_bytes" in item["output"]
    await text_answer_works(vl)


async def test_discovery_failures_each_leave_the_session_working(
        vl: RealtimeClient, mcp_server: McpTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[Any] = []
    real = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    tools = [
        {"type": "mcp", "server_label": "down", "server_url": f"http://127.0.0.1:{free_port()}/mcp",
         "require_approval": "never"},
        {"type": "mcp", "server_label": "slow", "server_url": mcp_server.url("/hang")},
        {"type": "mcp", "server_label": "junk", "server_url": mcp_server.url("/junk")},
        {"type": "mcp", "server_label": "far", "server_url": "http://example.invalid/mcp"},
    ]
    t0 = time.monotonic()
    await vl.update({"tools": tools})
    # Discovery runs in the background: a response meanwhile is not held up by the slow server.
    await vl.send({"type": "response.create", "response": {"modalities": ["text"]}})
    events: list[dict[str, Any]] = []
    while sum(e["type"] in ("mcp_list_tools.failed", "mcp_list_tools.completed", "response.done")
              for e in events) < 5:
        events.append(await vl.recv(LIST_TIMEOUT + 2.0))
    answered = next(i for i, e in enumerate(events) if e["type"] == "response.done")
    assert events[answered]["response"]["status"] == "completed"
    assert answered < max(i for i, e in enumerate(events) if e["type"] == "mcp_list_tools.failed")
    failed = {e["item_id"] for e in events if e["type"] == "mcp_list_tools.failed"}
    items = {e["item"]["server_label"]: e["item"] for e in events
             if e["type"] == "conversation.item.created" and e["item"]["type"] == "mcp_list_tools"}
    assert set(items) == {"down", "slow", "junk", "far"} and failed == {i["id"] for i in items.values()}
    assert not [e for e in events if e["type"] == "mcp_list_tools.completed"]
    assert time.monotonic() - t0 < LIST_TIMEOUT + 4  # in parallel, each under its deadline
    assert items["down"]["error"]["type"] == "http_error" and items["down"]["error"]["code"] == 502
    assert items["slow"]["error"]["code"] == 504 and "mcp.list_timeout_seconds" in items["slow"]["error"]["message"]
    assert items["junk"]["error"]["type"] == "protocol_error"
    assert items["far"]["error"]["code"] == 403 and "mcp.allowed_hosts" in items["far"]["error"]["message"]
    assert all(i["tools"] == [] for i in items.values())
    # The host outside the allow-list: an error event naming the setting and the param...
    err = next(e["error"] for e in events if e["type"] == "error")
    assert err["code"] == "mcp_host_not_allowed" and err["param"] == "session.tools[3].server_url"
    assert "mcp.allowed_hosts" in err["message"] and err["type"] == "invalid_request_error"
    assert set(err) == {"type", "code", "message", "param", "event_id"}
    # ...and no connection, not even a name lookup, towards it.
    assert not [h for h in looked_up if "example.invalid" in str(h)]
    assert not [p for p, h in mcp_server.requests if "example.invalid" in h.get("host", "")]
    await text_answer_works(vl)
    # The failed servers' tools are not offered to the LLM.
    assert not ScriptedLLM.calls[-1].tools


async def test_invalid_definitions_name_the_param(vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    cases = [
        ({"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"},
         "unsupported_feature", "session.tools[0].connector_id"),
        ({"type": "mcp", "server_label": "x", "tunnel_id": "t_1"}, "unsupported_feature", "session.tools[0].tunnel_id"),
        ({"type": "mcp", "server_url": mcp_server.url()}, "invalid_value", "session.tools[0].server_label"),
        ({"type": "mcp", "server_label": "x"}, "invalid_value", "session.tools[0].server_url"),
        (kitchen(mcp_server, require_approval="sometimes"), "invalid_value", "session.tools[0].require_approval"),
        (kitchen(mcp_server, require_approval={"never": {"tool_names": "a"}}), "invalid_value",
         "session.tools[0].require_approval.never.tool_names"),
        (kitchen(mcp_server, allowed_tools={"read_only": "yes"}), "invalid_value",
         "session.tools[0].allowed_tools.read_only"),
        (kitchen(mcp_server, headers={"X-A": 1}), "invalid_value", "session.tools[0].headers.X-A"),
        (kitchen(mcp_server, flavour="spicy"), "unknown_parameter", "session.tools[0].flavour"),
    ]
    for tool, code, param in cases:
        await vl.send({"type": "session.update", "event_id": "ev_1", "session": {"tools": [tool]}})
        err = await vl.error()
        assert (err["code"], err["param"], err["event_id"]) == (code, param, "ev_1"), (tool, err)
    five = [{"type": "mcp", "server_label": f"s{i}", "server_url": mcp_server.url()} for i in range(5)]
    await vl.send({"type": "session.update", "session": {"tools": five}})
    err = await vl.error()
    assert err["param"] == "session.tools" and "mcp.max_servers_per_session" in err["message"]
    await vl.send({"type": "session.update", "session": {"tools": [kitchen(mcp_server), kitchen(mcp_server)]}})
    assert (await vl.error())["param"] == "session.tools[1].server_label"
    await vl.send({"type": "response.create", "response": {"tools": [{"type": "mcp", "server_label": "x"}]}})
    assert (await vl.error())["param"] == "response.tools[0].server_url"
    await vl.send({"type": "conversation.item.create", "item": {
        "type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}})
    assert (await vl.error())["param"] == "item.approval_request_id"
    await vl.send({"type": "conversation.item.create", "item": {
        "type": "mcp_call", "server_label": "kitchen", "name": "x", "arguments": "{}"}})
    assert (await vl.error())["param"] == "item.type"
    assert not [e for e in await vl.quiet(0.3) if e["type"].startswith("mcp_list_tools")]
    await text_answer_works(vl)


async def test_response_level_mcp_tool_is_discovered_then_called(
        vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__get_weather", {"city": "Oslo"}, when="weather")
    evs = await say(vl, "weather in Oslo?", {"modalities": ["text"],
                                             "tools": [kitchen(mcp_server, require_approval="never")]})
    seq = types(evs)
    assert seq.index("mcp_list_tools.completed") < seq.index("response.mcp_call.in_progress")
    item = next(e for e in evs if e["type"] == "response.output_item.done")["item"]
    assert item["output"] == "Sunny and 21 degrees in Oslo"


async def test_voice_live_approval_with_list_form_and_retrieve(vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    await vl.update({"tools": [kitchen(mcp_server, require_approval={"never": ["get_weather"],
                                                                     "always": ["book_table"]})]})
    await discovered(vl, "kitchen")
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__book_table", {"restaurant": "Da Mario", "people": 4},
                                             when="book")
    before = len(mcp_server.bookings)
    evs = await say(vl, "book a table please", {"modalities": ["text"]})
    seq = types(evs)
    assert "response.mcp_call.in_progress" not in seq
    request = next(e["item"] for e in evs if e["type"] == "conversation.item.created"
                   and e["item"]["type"] == "mcp_approval_request")
    call = next(e["item"] for e in evs if e["type"] == "response.output_item.done" and e["item"]["type"] == "mcp_call")
    assert call["approval_request_id"] == request["id"] and call["output"] is None
    assert seq.index("response.mcp_call_arguments.done") < seq.index("response.done")
    assert evs[-1]["response"]["status"] == "completed" and len(mcp_server.bookings) == before
    await vl.send({"type": "conversation.item.create", "item": {
        "type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}})
    evs = await vl.until("response.mcp_call.completed")
    assert types(evs)[-2:] == ["response.mcp_call.in_progress", "response.mcp_call.completed"]
    assert evs[-1]["item_id"] == call["id"] and len(mcp_server.bookings) == before + 1
    # Voice Live has no conversation.item.done: the output is read back with retrieve.
    await vl.send({"type": "conversation.item.retrieve", "item_id": call["id"]})
    got = (await vl.until("conversation.item.retrieved"))[-1]["item"]
    assert got["output"] == "Booked Da Mario for 4"
    # A second answer to the same request: nothing is pending any more.
    await vl.send({"type": "conversation.item.create", "item": {
        "type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}})
    assert (await vl.error())["param"] == "item.approval_request_id"
    assert len(mcp_server.bookings) == before + 1
    await text_answer_works(vl)
    # A request nobody answers fails after mcp.approval_timeout_seconds, without running.
    evs = await say(vl, "book again", {"modalities": ["text"]})
    call = next(e["item"] for e in evs if e["type"] == "response.output_item.done" and e["item"]["type"] == "mcp_call")
    t0 = time.monotonic()
    evs = await vl.until("response.mcp_call.failed", timeout=APPROVAL_TIMEOUT + 5)
    assert APPROVAL_TIMEOUT - 0.5 <= time.monotonic() - t0 <= APPROVAL_TIMEOUT + 3
    assert evs[-1]["item_id"] == call["id"] and "response.mcp_call.in_progress" not in types(evs)
    await vl.send({"type": "conversation.item.retrieve", "item_id": call["id"]})
    got = (await vl.until("conversation.item.retrieved"))[-1]["item"]
    assert "mcp.approval_timeout_seconds" in got["error"]["message"]
    assert len(mcp_server.bookings) == before + 1
    await text_answer_works(vl)


async def test_tool_choice_mcp_and_cancel_during_a_call(vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    await vl.update({"tools": [kitchen(mcp_server, require_approval="never")]})
    await discovered(vl, "kitchen")
    evs = await say(vl, "hello", {"modalities": ["text"],
                                  "tool_choice": {"type": "mcp", "server_label": "kitchen", "name": "get_weather"}})
    assert evs[-1]["response"]["status"] == "completed"
    request = ScriptedLLM.calls[-1]
    assert [t["function"]["name"] for t in request.tools] == ["kitchen__get_weather"]
    assert request.tool_choice == {"type": "function", "function": {"name": "kitchen__get_weather"}}
    # response.cancel while the tool runs: the call is cut, the item says so, the session goes on.
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__slow_tool", {}, when="slow")
    await vl.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "slow please"}]}})
    await vl.send({"type": "response.create", "response": {"modalities": ["text"]}})
    await vl.until("response.mcp_call.in_progress")
    await vl.send({"type": "response.cancel"})
    evs = await vl.until("response.done")
    assert "response.mcp_call.failed" in types(evs)
    item = next(e["item"] for e in evs if e["type"] == "response.output_item.done")
    assert item["error"]["type"] == "tool_execution_error" and "cancelled" in item["error"]["message"]
    assert evs[-1]["response"]["status"] == "cancelled"
    await text_answer_works(vl)


async def test_legacy_sse_transport(vl: RealtimeClient) -> None:
    mcp = MCPServer("legacy")

    @mcp.tool(description="Echo")
    def echo(text: str) -> str:
        return f"echo: {text}"

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(mcp.sse_app(host="127.0.0.1"), host="127.0.0.1", port=port,
                                        log_level="warning", timeout_graceful_shutdown=1))
    started = threading.Event()
    thread = threading.Thread(target=lambda: (srv.run(), started.set()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started and not started.is_set():  # started: run() returned (a failure)
            assert time.monotonic() < deadline, "the SSE server did not start"
            await asyncio.to_thread(started.wait, 0.05)
        assert srv.started
        await vl.update({"tools": [{"type": "mcp", "server_label": "legacy", "require_approval": "never",
                                    "server_url": f"http://127.0.0.1:{port}/sse"}]})
        item = await discovered(vl, "legacy")
        assert [t["name"] for t in item["tools"]] == ["echo"]
        ScriptedLLM.tool_call = ScriptedToolCall("legacy__echo", {"text": "hi"}, when="echo")
        evs = await say(vl, "echo this", {"modalities": ["text"]})
        item = next(e["item"] for e in evs if e["type"] == "response.output_item.done")
        assert item["output"] == "echo: hi"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


async def test_voicelive_sdk_parses_discovery_call_and_approval(server: ServerThread,
                                                                  mcp_server: McpTestServer) -> None:
    """The unmodified azure-ai-voicelive SDK: its own MCP classes for every event and item."""
    from azure.ai.voicelive.aio import connect
    from azure.ai.voicelive.models import (
        InputTextContentPart,
        MCPApprovalResponseRequestItem,
        MCPServer,
        Modality,
        RequestSession,
        ResponseMCPApprovalRequestItem,
        ResponseMCPCallItem,
        ResponseMCPListToolItem,
        ServerEventConversationItemCreated,
        ServerEventMcpListToolsCompleted,
        ServerEventMcpListToolsInProgress,
        ServerEventResponseCreated,
        ServerEventResponseDone,
        ServerEventResponseMcpCallArgumentsDelta,
        ServerEventResponseMcpCallArgumentsDone,
        ServerEventResponseMcpCallCompleted,
        ServerEventResponseMcpCallInProgress,
        ServerEventResponseOutputItemAdded,
        ServerEventResponseOutputItemDone,
        ServerEventSessionUpdated,
        UserMessageItem,
    )
    from azure.core.credentials import AzureKeyCredential

    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__book_table", {"restaurant": "Sdk", "people": 3}, when="book")

    async with connect(endpoint=server.http, credential=AzureKeyCredential("k"), model="gpt-realtime") as conn:
        events = aiter(conn)

        async def expect(cls: type) -> Any:
            while True:
                ev = await asyncio.wait_for(events.__anext__(), 10)
                if ev.type.startswith(("response.text", "response.content_part", "session.created")) or (
                        getattr(ev, "item", None) is not None and ev.item.type == "message"):
                    continue
                assert isinstance(ev, cls), (cls, ev)
                return ev

        await conn.session.update(session=RequestSession(modalities=[Modality.TEXT], tools=[MCPServer(
            server_label="kitchen", server_url=mcp_server.url(), require_approval={"always": ["book_table"]})]))
        await expect(ServerEventSessionUpdated)
        await expect(ServerEventMcpListToolsInProgress)
        listed = await expect(ServerEventConversationItemCreated)
        assert isinstance(listed.item, ResponseMCPListToolItem) and "book_table" in {t.name for t in listed.item.tools}
        await expect(ServerEventMcpListToolsCompleted)
        await conn.conversation.item.create(item=UserMessageItem(content=[InputTextContentPart(text="book it")]))
        await conn.response.create()
        await expect(ServerEventResponseCreated)
        call = (await expect(ServerEventResponseOutputItemAdded)).item
        assert isinstance(call, ResponseMCPCallItem)
        await expect(ServerEventConversationItemCreated)
        for _ in range(3):
            await expect(ServerEventResponseMcpCallArgumentsDelta)
        await expect(ServerEventResponseMcpCallArgumentsDone)
        request = (await expect(ServerEventResponseOutputItemAdded)).item
        assert isinstance(request, ResponseMCPApprovalRequestItem)
        await expect(ServerEventConversationItemCreated)
        await expect(ServerEventResponseOutputItemDone)
        await expect(ServerEventResponseOutputItemDone)
        await expect(ServerEventResponseDone)
        await conn.conversation.item.create(item=MCPApprovalResponseRequestItem(
            approval_request_id=request.id, approve=True))
        await expect(ServerEventConversationItemCreated)
        assert (await expect(ServerEventResponseMcpCallInProgress)).item_id == call.id
        await expect(ServerEventResponseMcpCallCompleted)
    assert "Sdk" in mcp_server.bookings


async def test_a_spoken_turn_runs_the_tool_once(vl: RealtimeClient, mcp_server: McpTestServer) -> None:
    """Server VAD computes the answer speculatively during the end-of-turn silence: the tool runs
    only once the turn is really over, and exactly once."""
    await vl.update({"tools": [kitchen(mcp_server, require_approval="never")]})
    await discovered(vl, "kitchen")
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__book_table", {"restaurant": "Spoken", "people": 1})
    # The pause that starts the speculation, time for it to reach the tool call, then the end of the turn.
    await vl.append(np.concatenate([silence(0.3), tone(1.0), silence(0.3)]))
    await asyncio.sleep(0.5)
    assert "response.mcp_call.in_progress" not in types(await vl.quiet(0.2))
    await vl.append(silence(0.9))
    evs = await vl.until("response.done", timeout=20)
    seq = types(evs)
    assert seq.index("input_audio_buffer.committed") < seq.index("response.mcp_call.in_progress")
    assert evs[-1]["response"]["output"][0]["output"] == "Booked Spoken for 1"
    await vl.quiet(0.5)
    assert mcp_server.bookings.count("Spoken") == 1


# ------------------------------------------------------------------ OpenAI GA (the openai SDK)


async def next_of(events: Any, *classes: type) -> Any:
    """The next event, which must be of one of `classes` and valid for it (all fields checked)."""
    while True:
        ev = await asyncio.wait_for(events.__anext__(), 10)
        if isinstance(ev, ResponseOutputItemAddedEvent | ResponseOutputItemDoneEvent | ConversationItemAdded
                      | ConversationItemDone) and ev.item.type == "message":
            continue
        if ev.type.startswith(("response.output_text", "response.content_part", "response.output_audio")):
            continue
        assert isinstance(ev, classes), (classes, ev)
        type(ev).model_validate(ev.to_dict())  # parsed, and complete: every required field present
        return ev


async def test_openai_sdk_approval_approve_and_deny(server: ServerThread, mcp_server: McpTestServer) -> None:
    client = AsyncOpenAI(api_key="k", base_url=server.http + "/v1", websocket_base_url=server.ws + "/v1")
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__book_table", {"restaurant": "Chez Nous", "people": 2},
                                             when="book")
    before = len(mcp_server.bookings)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = aiter(conn)
        first = await asyncio.wait_for(events.__anext__(), 10)
        assert first.type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [
            {"type": "mcp", "server_label": "kitchen", "server_url": mcp_server.url(),
             "require_approval": {"never": {"read_only": True}}}]})
        updated = await next_of(events, SessionUpdatedEvent)
        assert updated.session.tools[0].type == "mcp"
        added = await next_of(events, ConversationItemAdded)
        assert isinstance(added.item, RealtimeMcpListTools) and added.item.tools == []
        assert (await next_of(events, McpListToolsInProgress)).item_id == added.item.id
        done = await next_of(events, ConversationItemDone)
        assert isinstance(done.item, RealtimeMcpListTools)
        assert "book_table" in {t.name for t in done.item.tools}
        assert (await next_of(events, McpListToolsCompleted)).item_id == added.item.id

        async def ask_for_booking() -> RealtimeMcpApprovalRequest:
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "book a table"}]})
            await conn.response.create()
            await next_of(events, ResponseCreatedEvent)
            call = (await next_of(events, ResponseOutputItemAddedEvent)).item
            assert isinstance(call, RealtimeMcpToolCall) and call.name == "book_table"
            assert (await next_of(events, ConversationItemAdded)).item.id == call.id
            for _ in range(3):
                assert (await next_of(events, ResponseMcpCallArgumentsDelta)).item_id == call.id
            args = await next_of(events, ResponseMcpCallArgumentsDone)
            assert args.arguments == '{"restaurant": "Chez Nous", "people": 2}'
            request = (await next_of(events, ResponseOutputItemAddedEvent)).item
            assert isinstance(request, RealtimeMcpApprovalRequest) and request.arguments == args.arguments
            assert isinstance((await next_of(events, ConversationItemAdded)).item, RealtimeMcpApprovalRequest)
            assert isinstance((await next_of(events, ResponseOutputItemDoneEvent)).item, RealtimeMcpApprovalRequest)
            assert isinstance((await next_of(events, ConversationItemDone)).item, RealtimeMcpApprovalRequest)
            pending = (await next_of(events, ResponseOutputItemDoneEvent)).item
            assert isinstance(pending, RealtimeMcpToolCall) and pending.approval_request_id == request.id
            assert pending.output is None and pending.error is None
            await next_of(events, ConversationItemDone)
            resp = await next_of(events, ResponseDoneEvent)  # the response ends while approval is pending
            assert resp.response.status == "completed"
            assert len(mcp_server.bookings) == before + booked  # not run before the answer
            return request

        booked = 0
        request = await ask_for_booking()
        # Approve, the way agents-js does: no item id, previous_item_id set to the request.
        await conn.conversation.item.create(previous_item_id=request.id, item={
            "type": "mcp_approval_response", "approval_request_id": request.id, "approve": True})
        answer = await next_of(events, ConversationItemAdded)
        assert isinstance(answer.item, RealtimeMcpApprovalResponse) and answer.item.id  # an id was generated
        await next_of(events, ConversationItemDone)
        running = await next_of(events, ResponseMcpCallInProgress)
        await next_of(events, ResponseMcpCallCompleted)
        final = (await next_of(events, ConversationItemDone)).item
        assert isinstance(final, RealtimeMcpToolCall) and final.id == running.item_id
        assert final.output == "Booked Chez Nous for 2" and final.approval_request_id == request.id
        assert len(mcp_server.bookings) == before + 1
        await conn.response.create()
        await next_of(events, ResponseCreatedEvent)
        assert (await next_of(events, ResponseDoneEvent)).response.status == "completed"
        assert ScriptedLLM.calls[-1].messages[-1]["content"] == "Booked Chez Nous for 2"

        # Deny: the call fails without running.
        booked = 1
        request = await ask_for_booking()
        await conn.conversation.item.create(item={"type": "mcp_approval_response", "id": "mcpa_mine",
                                                  "approval_request_id": request.id, "approve": False,
                                                  "reason": "too expensive"})
        assert (await next_of(events, ConversationItemAdded)).item.id == "mcpa_mine"
        await next_of(events, ConversationItemDone)
        await next_of(events, ResponseMcpCallFailed)  # no in_progress: nothing ran
        final = (await next_of(events, ConversationItemDone)).item
        assert isinstance(final, RealtimeMcpToolCall) and isinstance(final.error, RealtimeMcpToolExecutionError)
        assert "too expensive" in final.error.message
        assert len(mcp_server.bookings) == before + 1
        await conn.response.create()
        await next_of(events, ResponseCreatedEvent)
        assert (await next_of(events, ResponseDoneEvent)).response.status == "completed"


async def test_openai_sdk_read_only_tool_runs_without_approval(server: ServerThread,
                                                               mcp_server: McpTestServer) -> None:
    client = AsyncOpenAI(api_key="k", base_url=server.http + "/v1", websocket_base_url=server.ws + "/v1")
    ScriptedLLM.tool_call = ScriptedToolCall("kitchen__get_weather", {"city": "Rome"}, when="weather")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = aiter(conn)
        assert (await asyncio.wait_for(events.__anext__(), 10)).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [
            {"type": "mcp", "server_label": "kitchen", "server_url": mcp_server.url(),
             "require_approval": {"never": {"read_only": True}}}]})
        await next_of(events, SessionUpdatedEvent)
        await next_of(events, ConversationItemAdded)
        await next_of(events, McpListToolsInProgress)
        await next_of(events, ConversationItemDone)
        await next_of(events, McpListToolsCompleted)
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "weather in Rome"}]})
        await conn.response.create()
        await next_of(events, ResponseCreatedEvent)
        call = (await next_of(events, ResponseOutputItemAddedEvent)).item
        assert isinstance(call, RealtimeMcpToolCall)
        await next_of(events, ConversationItemAdded)
        for _ in range(3):
            await next_of(events, ResponseMcpCallArgumentsDelta)
        await next_of(events, ResponseMcpCallArgumentsDone)
        progress = await next_of(events, ResponseMcpCallInProgress)
        assert (progress.item_id, progress.output_index) == (call.id, 0)
        await next_of(events, ResponseMcpCallCompleted)
        out = (await next_of(events, ResponseOutputItemDoneEvent)).item
        assert isinstance(out, RealtimeMcpToolCall) and out.output == "Sunny and 21 degrees in Rome"
        await next_of(events, ConversationItemDone)
        done = await next_of(events, ResponseDoneEvent)
        assert isinstance(done.response.output[0], RealtimeMcpToolCall)


async def test_openai_sdk_failed_discovery_and_failed_call(server: ServerThread, mcp_server: McpTestServer) -> None:
    client = AsyncOpenAI(api_key="k", base_url=server.http + "/v1", websocket_base_url=server.ws + "/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = aiter(conn)
        assert (await asyncio.wait_for(events.__anext__(), 10)).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [
            {"type": "mcp", "server_label": "down", "server_url": f"http://127.0.0.1:{free_port()}/mcp"}]})
        await next_of(events, SessionUpdatedEvent)
        added = await next_of(events, ConversationItemAdded)
        await next_of(events, McpListToolsInProgress)
        done = await next_of(events, ConversationItemDone)
        assert isinstance(done.item, RealtimeMcpListTools) and done.item.tools == []
        assert done.item.to_dict()["error"]["code"] == 502  # the reason, beside the SDK's fields
        assert (await next_of(events, McpListToolsFailed)).item_id == added.item.id
        # Another server, whose tool fails: the SDK's typed error.
        ScriptedLLM.tool_call = ScriptedToolCall("kitchen__broken", {"reason": "sdk"}, when="broken")
        await conn.session.update(session={"type": "realtime", "tools": [
            {"type": "mcp", "server_label": "kitchen", "server_url": mcp_server.url(), "require_approval": "never"}]})
        await next_of(events, SessionUpdatedEvent)
        for cls in (ConversationItemAdded, McpListToolsInProgress, ConversationItemDone, McpListToolsCompleted):
            await next_of(events, cls)
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "use broken"}]})
        await conn.response.create()
        await next_of(events, ResponseCreatedEvent)
        await next_of(events, ResponseOutputItemAddedEvent)
        await next_of(events, ConversationItemAdded)
        for _ in range(3):
            await next_of(events, ResponseMcpCallArgumentsDelta)
        await next_of(events, ResponseMcpCallArgumentsDone)
        await next_of(events, ResponseMcpCallInProgress)
        await next_of(events, ResponseMcpCallFailed)
        item = (await next_of(events, ResponseOutputItemDoneEvent)).item
        assert isinstance(item, RealtimeMcpToolCall) and isinstance(item.error, RealtimeMcpToolExecutionError)
        await next_of(events, ConversationItemDone)
        await next_of(events, ResponseDoneEvent)
        await conn.response.create()
        await next_of(events, ResponseCreatedEvent)
        assert (await next_of(events, ResponseDoneEvent)).response.status == "completed"


# ------------------------------------------------------------------ units


def test_default_allow_list_is_loopback_only() -> None:
    allowed = McpSettings().allowed_hosts
    for url in ("http://127.0.0.1:9/mcp", "http://[::1]:9/mcp", "https://localhost/mcp"):
        check_url(url, allowed)
    for url in ("http://example.invalid/mcp", "http://10.0.0.1/mcp", "http://127.0.0.2/mcp",
                "http://localhost.example.com/mcp", "file:///etc/passwd", "ftp://127.0.0.1/x"):
        with pytest.raises(HostNotAllowed):
            check_url(url, allowed)
    check_url("http://10.1.2.3/mcp", ["10.0.0.0/8"])
    check_url("https://a.tools.internal/mcp", ["*.tools.internal"])


def test_approval_and_allowed_filters_in_both_shapes() -> None:
    weather = {"name": "get_weather", "annotations": {"readOnlyHint": True}}
    book = {"name": "book_table"}

    def tool(**kw: Any) -> dict[str, Any]:
        return validate_mcp_tool({"type": "mcp", "server_label": "k", "server_url": "http://127.0.0.1/mcp", **kw},
                                 "session.tools[0]")

    assert needs_approval(tool(), book) and not needs_approval(tool(require_approval="never"), book)
    vl = tool(require_approval={"never": ["get_weather"], "always": ["book_table"]})  # Voice Live lists
    assert not needs_approval(vl, weather) and needs_approval(vl, book)
    assert needs_approval(tool(require_approval={"never": ["other"]}), book)  # in neither list: asked
    oa = tool(require_approval={"never": {"read_only": True}})  # OpenAI filter objects
    assert not needs_approval(oa, weather) and needs_approval(oa, book)
    assert is_allowed(tool(allowed_tools={"read_only": True}), weather)
    assert not is_allowed(tool(allowed_tools={"read_only": True}), book)
    assert not is_allowed(tool(allowed_tools=["get_weather"]), book)


def test_function_names_fit_openai_rules() -> None:
    taken: set[str] = set()
    assert function_name("kitchen", "get_weather", taken) == "kitchen__get_weather"
    long = function_name("a" * 60, "tool.with spaces/and-more", taken)
    assert len(long) <= 64 and all(c.isalnum() or c in "_-" for c in long)
    again = function_name("kitchen", "get_weather", taken)  # a collision gets a distinct name
    assert again != "kitchen__get_weather" and len(again) <= 64


def test_mcp_events_go_on_the_control_channel() -> None:
    for etype in ("mcp_list_tools.in_progress", "mcp_list_tools.completed", "mcp_list_tools.failed",
                  "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
                  "response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed"):
        assert channel_of({"type": etype}) is Channel.CONTROL, etype
    for kind in ("mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"):
        assert channel_of({"type": "conversation.item.created", "item": {"type": kind}}) is Channel.CONTROL
