"""A session's MCP servers: discovery (once per server configuration, in the background), the
functions the LLM sees for them, tool calls, and calls that wait for the client's approval.

Event order and the choices where the references are silent: docs/protocol.md, "MCP tools".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import ProtocolError
from ..core.ids import new_id
from ..mcp.client import McpClient, McpEndpoint, McpFailure
from ..mcp.hosts import HostNotAllowed
from .conversation import ConversationItem
from .mcp_tools import function_name, is_allowed, needs_approval
from .ports import Channel

if TYPE_CHECKING:
    from ..settings import McpSettings
    from .conversation import Conversation

log = logging.getLogger("livevox.mcp")
CONTROL = Channel.CONTROL


class McpHost(Protocol):
    conversation: Conversation

    @property
    def item_done_events(self) -> bool:
        """The dialect has `conversation.item.done` (OpenAI GA)."""
        ...

    async def emit(self, event: dict[str, Any], route: Channel | None = None) -> None: ...

    async def send_error(self, err: ProtocolError, event_id: str | None) -> None: ...

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]: ...


def _key(definition: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a server's listing different: where it is and how it is asked."""
    return (definition["server_label"], definition["server_url"],
            tuple(sorted((definition.get("headers") or {}).items())), definition.get("authorization"))


@dataclass
class Discovery:
    key: tuple[Any, ...]
    endpoint: McpEndpoint
    definition: dict[str, Any]  # as it was when listed: the item shows its allowed tools
    item: dict[str, Any]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    tools: list[dict[str, Any]] | None = None  # set once listed
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class McpBinding:
    """One MCP tool as the LLM sees it: a function name bound to a server's tool."""

    definition: dict[str, Any]
    endpoint: McpEndpoint
    tool: str
    approval: bool


@dataclass
class ToolPlan:
    """The LLM's tools for one response: functions, and which of them are MCP tools."""

    functions: list[dict[str, Any]]
    tool_choice: Any
    bindings: dict[str, McpBinding]


@dataclass
class _Pending:
    entry: ConversationItem  # the mcp_call item
    output_index: int
    binding: McpBinding
    timer: asyncio.Task[Any] | None = None


def is_mcp(tool: dict[str, Any]) -> bool:
    return tool.get("type") == "mcp"


class McpTools:
    def __init__(self, host: McpHost, settings: McpSettings) -> None:
        self.host = host
        self.settings = settings
        self.client = McpClient(settings)
        self._servers: dict[str, Discovery] = {}  # label -> its latest discovery
        self._pending: dict[str, _Pending] = {}  # approval_request_id -> the call it holds
        self.calls = 0

    # ------------------------------------------------------------ definitions

    def check(self, tools: list[dict[str, Any]], prefix: str) -> None:
        """Limits and uniqueness of a tools list's MCP servers."""
        labels: set[str] = set()
        for i, tool in enumerate(tools):
            if not is_mcp(tool):
                continue
            if tool["server_label"] in labels:
                raise ProtocolError("invalid_value", f"Invalid value for '{prefix}.tools[{i}].server_label': "
                                    f"{tool['server_label']!r} is used by another MCP tool",
                                    param=f"{prefix}.tools[{i}].server_label")
            labels.add(tool["server_label"])
            if len(labels) > self.settings.max_servers_per_session:
                raise ProtocolError("invalid_value", f"Invalid value for '{prefix}.tools': more than "
                                    f"{self.settings.max_servers_per_session} MCP servers "
                                    "(mcp.max_servers_per_session)", param=f"{prefix}.tools")

    def configure(self, tools: list[dict[str, Any]], prefix: str = "session") -> None:
        """Start the discovery of every MCP server not listed yet with this configuration."""
        for i, tool in enumerate(tools):
            if is_mcp(tool):
                self._ensure(tool, f"{prefix}.tools[{i}].server_url")

    def _ensure(self, definition: dict[str, Any], param: str) -> Discovery:
        key = _key(definition)
        known = self._servers.get(definition["server_label"])
        if known is not None and known.key == key:
            return known
        endpoint = McpEndpoint(definition["server_label"], definition["server_url"],
                               dict(definition.get("headers") or {}), definition.get("authorization"))
        item = {"id": new_id("mcpl"), "object": "realtime.item", "type": "mcp_list_tools",
                "server_label": definition["server_label"], "tools": []}
        d = Discovery(key, endpoint, definition, item)
        self._servers[definition["server_label"]] = d
        refused: ProtocolError | None = None
        try:
            self.client.check(endpoint.url)
        except HostNotAllowed as exc:  # refused here: no connection is ever attempted
            d.error = {"type": "http_error", "code": 403, "message": str(exc)}
            refused = ProtocolError("mcp_host_not_allowed", str(exc), param=param)
        self.host._spawn(self._discover(d, refused))
        return d

    async def _discover(self, d: Discovery, refused: ProtocolError | None) -> None:
        host = self.host
        entry = ConversationItem(d.item)
        ga = host.item_done_events
        try:
            if refused is not None:
                await host.send_error(refused, None)
            if ga:  # the item first, so that `in_progress` names an item the client has
                prev = host.conversation.insert(entry)
                await host.emit({"type": "conversation.item.created", "previous_item_id": prev,
                                 "item": dict(d.item)}, CONTROL)
            await host.emit({"type": "mcp_list_tools.in_progress", "item_id": d.item["id"]}, CONTROL)
            if d.error is None:
                try:
                    d.tools = await self.client.list_tools(d.endpoint)
                except McpFailure as exc:
                    d.error = exc.error
                    log.info("MCP server %r: discovery failed: %s", d.endpoint.label, exc.error["message"])
            d.item["tools"] = [t for t in d.tools or [] if is_allowed(d.definition, t)]
            if d.error is not None:
                d.item["error"] = d.error
            if ga:
                await host.emit({"type": "conversation.item.done", "item": dict(d.item)}, CONTROL)
            else:  # Voice Live: the item, with its tools, announces the finished discovery
                prev = host.conversation.insert(entry)
                await host.emit({"type": "conversation.item.created", "previous_item_id": prev,
                                 "item": dict(d.item)}, CONTROL)
            state = "completed" if d.error is None else "failed"
            await host.emit({"type": f"mcp_list_tools.{state}", "item_id": d.item["id"]}, CONTROL)
        finally:
            d.done.set()

    # ------------------------------------------------------------ the LLM's view

    async def plan(self, tools: list[dict[str, Any]], tool_choice: Any, wait: bool) -> ToolPlan:
        """The functions the LLM sees. `wait`: a response's own MCP tools are discovered first;
        otherwise only servers already listed contribute (a response created during discovery
        goes without them)."""
        functions = [t for t in tools if not is_mcp(t)]
        taken = {str(t.get("name")) for t in functions}
        bindings: dict[str, McpBinding] = {}
        by_label: dict[str, list[str]] = {}
        for i, definition in enumerate(tools):
            if not is_mcp(definition):
                continue
            d: Discovery | None
            if wait:
                d = self._ensure(definition, f"response.tools[{i}].server_url")
                await d.done.wait()
            else:
                known = self._servers.get(definition["server_label"])
                d = known if known is not None and known.key == _key(definition) else None
            if d is None or d.tools is None:
                continue
            for tool in d.tools:
                if not is_allowed(definition, tool):
                    continue
                name = function_name(definition["server_label"], tool["name"], taken)
                description = tool.get("description") or ""
                if definition.get("server_description"):
                    description = f"{description} (MCP server: {definition['server_description']})".strip()
                functions.append({"type": "function", "name": name, "description": description or None,
                                  "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}})
                bindings[name] = McpBinding(definition, d.endpoint, tool["name"], needs_approval(definition, tool))
                by_label.setdefault(definition["server_label"], []).append(name)
        choice = tool_choice
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "mcp":
            # Forcing an MCP server (and maybe one of its tools): the LLM sees only those.
            names = by_label.get(str(tool_choice.get("server_label")), [])
            wanted = tool_choice.get("name")
            if wanted is not None:
                names = [n for n in names if bindings[n].tool == wanted]
            functions = [f for f in functions if f.get("name") in names]
            choice = {"type": "function", "name": names[0]} if wanted is not None and names else "required"
            if not names:
                choice = "none"
        return ToolPlan(functions, choice, bindings)

    # ------------------------------------------------------------ calls

    async def run(self, entry: ConversationItem, output_index: int, binding: McpBinding) -> None:
        """Call the tool: `response.mcp_call.in_progress`, then `.completed` or `.failed`, the item
        holding `output` or `error`."""
        item = entry.item
        ids = {"item_id": item["id"], "output_index": output_index}
        await self.host.emit({"type": "response.mcp_call.in_progress", **ids}, CONTROL)
        try:
            args = json.loads(item["arguments"] or "{}")
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            item["error"] = {"type": "protocol_error", "code": -32602,
                             "message": f"the tool arguments are not a JSON object: {exc}"}
        else:
            if self.calls >= self.settings.max_calls_per_session:
                item["error"] = {"type": "tool_execution_error", "message": (
                    f"this session made {self.calls} tool calls, the limit (mcp.max_calls_per_session)")}
            else:
                self.calls += 1
                try:
                    item["output"] = await self.client.call_tool(binding.endpoint, binding.tool, args)
                except McpFailure as exc:
                    item["error"] = exc.error
                except asyncio.CancelledError:  # the response was cancelled (barge-in): the call is cut
                    item["error"] = {"type": "tool_execution_error",
                                     "message": "The response was cancelled while the tool ran."}
                    await self.host.emit({"type": "response.mcp_call.failed", **ids}, CONTROL)
                    raise
        self.host.conversation.touch()
        state = "completed" if item.get("error") is None else "failed"
        await self.host.emit({"type": f"response.mcp_call.{state}", **ids}, CONTROL)

    def hold(self, request_id: str, entry: ConversationItem, output_index: int, binding: McpBinding) -> None:
        """The call waits for the client's `mcp_approval_response`."""
        pending = _Pending(entry, output_index, binding)
        self._pending[request_id] = pending
        pending.timer = self.host._spawn(self._expire(request_id))

    async def _expire(self, request_id: str) -> None:
        seconds = self.settings.approval_timeout_seconds
        await asyncio.sleep(seconds)
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            await self._fail_unrun(pending, f"The approval request was not answered within {seconds:g} s "
                                   "(mcp.approval_timeout_seconds).")

    def check_answer(self, item: dict[str, Any]) -> None:
        if item["approval_request_id"] not in self._pending:
            raise ProtocolError("invalid_value", f"No MCP approval request '{item['approval_request_id']}' "
                                "is waiting for an answer.", param="item.approval_request_id")

    def answer(self, item: dict[str, Any]) -> None:
        """Approved: the call runs (in the background); denied: it fails without running."""
        pending = self._pending.pop(item["approval_request_id"])
        if pending.timer is not None:
            pending.timer.cancel()
        self.host._spawn(self._answered(pending, bool(item["approve"]), item.get("reason")))

    async def _answered(self, pending: _Pending, approve: bool, reason: str | None) -> None:
        if not approve:
            await self._fail_unrun(pending, "The client did not approve the call" + (f": {reason}" if reason else "."))
            return
        await self.run(pending.entry, pending.output_index, pending.binding)
        await self.host.emit({"type": "conversation.item.done", "item": dict(pending.entry.item)}, CONTROL)

    async def _fail_unrun(self, pending: _Pending, message: str) -> None:
        """Denied or never answered: `.failed` without `.in_progress`; nothing reached the server."""
        item = pending.entry.item
        item["error"] = {"type": "tool_execution_error", "message": message}
        self.host.conversation.touch()
        await self.host.emit({"type": "response.mcp_call.failed", "item_id": item["id"],
                              "output_index": pending.output_index}, CONTROL)
        await self.host.emit({"type": "conversation.item.done", "item": dict(item)}, CONTROL)
