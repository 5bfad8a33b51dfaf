"""Listing and calling one MCP server's tools through the `mcp` SDK, each under a deadline.

Every operation opens its own connection (handshake, request, close): a session's MCP servers
hold no sockets between calls, and a server that went away costs nothing until it is used.
Failures come back as `McpFailure` carrying the `mcp_call.error` object of the protocol.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError

from ..settings import McpSettings
from .hosts import HostNotAllowed, check_url

#: `http_error` codes for failures without an HTTP answer (gateway conventions).
UNREACHABLE, TIMED_OUT = 502, 504
_MAX_PAGES = 100  # a paginating server that never ends cannot hang discovery


@dataclass(frozen=True)
class McpEndpoint:
    label: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    authorization: str | None = None

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.authorization:
            headers["Authorization"] = f"Bearer {self.authorization}"
        return headers


class McpFailure(Exception):
    """An MCP operation failed; `error` is the protocol's error object
    (`{type: protocol_error|tool_execution_error|http_error, code?, message}`)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


def _leaf(exc: BaseException) -> BaseException:
    """The SDK reports failures inside (nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure_of(exc: BaseException, url: str) -> McpFailure:
    exc = _leaf(exc)
    if isinstance(exc, McpFailure):
        return exc
    if isinstance(exc, HostNotAllowed):
        return McpFailure({"type": "http_error", "code": 403, "message": str(exc)})
    if isinstance(exc, MCPError):
        return McpFailure({"type": "protocol_error", "code": int(exc.code), "message": exc.message})
    if isinstance(exc, httpx2.HTTPStatusError):
        return McpFailure({"type": "http_error", "code": exc.response.status_code,
                           "message": f"HTTP {exc.response.status_code} from {url}"})
    if isinstance(exc, httpx2.TimeoutException):
        return McpFailure({"type": "http_error", "code": TIMED_OUT, "message": f"{url} timed out"})
    if isinstance(exc, httpx2.TransportError):
        return McpFailure({"type": "http_error", "code": UNREACHABLE,
                           "message": f"cannot reach {url}: {exc or type(exc).__name__}"})
    if isinstance(exc, ValidationError | json.JSONDecodeError | ValueError):
        return McpFailure({"type": "protocol_error", "code": -32700,
                           "message": f"{url} did not answer in MCP: {type(exc).__name__}"})
    return McpFailure({"type": "protocol_error", "code": -32603,
                       "message": f"MCP request to {url} failed: {type(exc).__name__}: {exc}"})


class McpClient:
    """The server's MCP client, configured once from `[mcp]` settings."""

    def __init__(self, settings: McpSettings) -> None:
        self.settings = settings

    def check(self, url: str) -> None:
        """Raises HostNotAllowed unless the operator allows the URL's host."""
        check_url(url, self.settings.allowed_hosts)

    @asynccontextmanager
    async def _connect(self, ep: McpEndpoint, seconds: float) -> AsyncIterator[Client]:
        check_url(ep.url, self.settings.allowed_hosts)  # before any socket is opened
        headers = ep.request_headers()
        timeout = httpx2.Timeout(seconds)

        def http_client(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                        auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
            # No proxy from the environment: the connection goes to the allowed host itself.
            return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, trust_env=False)

        if urlsplit(ep.url).path.rstrip("/").endswith("/sse"):  # the legacy HTTP+SSE transport
            transport: Any = sse_client(ep.url, headers=headers, timeout=seconds, sse_read_timeout=seconds,
                                        httpx_client_factory=http_client)
            async with Client(transport, read_timeout_seconds=seconds, cache=None) as client:
                yield client
            return
        async with http_client(headers=headers, timeout=timeout) as http:
            transport = streamable_http_client(ep.url, http_client=http,
                                               max_sse_event_size=self.settings.max_reply_bytes)
            async with Client(transport, read_timeout_seconds=seconds, cache=None) as client:
                yield client

    async def list_tools(self, ep: McpEndpoint) -> list[dict[str, Any]]:
        """The server's tools as `mcp_list_tools.tools` entries. Raises McpFailure."""
        s = self.settings
        tools: list[dict[str, Any]] = []
        try:
            with anyio.fail_after(s.list_timeout_seconds):
                async with self._connect(ep, s.list_timeout_seconds) as client:
                    cursor: str | None = None
                    for _ in range(_MAX_PAGES):
                        page = await client.list_tools(cursor=cursor)
                        for tool in page.tools:
                            entry: dict[str, Any] = {"name": tool.name, "input_schema": tool.input_schema}
                            if tool.description:
                                entry["description"] = tool.description
                            if tool.annotations is not None:
                                entry["annotations"] = tool.annotations.model_dump(mode="json", by_alias=True,
                                                                                   exclude_none=True)
                            tools.append(entry)
                        if len(tools) > s.max_tools_per_server:
                            raise McpFailure({"type": "protocol_error", "code": -32600, "message": (
                                f"{ep.url} lists more than {s.max_tools_per_server} tools "
                                "(mcp.max_tools_per_server)")})
                        cursor = page.next_cursor
                        if cursor is None:
                            break
        except TimeoutError:
            raise McpFailure({"type": "http_error", "code": TIMED_OUT, "message": (
                f"listing the tools of {ep.url} took longer than {s.list_timeout_seconds:g} s "
                "(mcp.list_timeout_seconds)")}) from None
        except Exception as exc:
            raise failure_of(exc, ep.url) from None
        return tools

    async def call_tool(self, ep: McpEndpoint, name: str, arguments: dict[str, Any]) -> str:
        """The tool's output as text (capped at `mcp.max_output_bytes`). Raises McpFailure."""
        s = self.settings
        try:
            with anyio.fail_after(s.call_timeout_seconds):
                async with self._connect(ep, s.call_timeout_seconds) as client:
                    result = await client.call_tool(name, arguments)
        except TimeoutError:
            raise McpFailure({"type": "http_error", "code": TIMED_OUT, "message": (
                f"the call of {name!r} on {ep.url} took longer than {s.call_timeout_seconds:g} s "
                "(mcp.call_timeout_seconds)")}) from None
        except Exception as exc:
            raise failure_of(exc, ep.url) from None
        text = cap(result_text(result), s.max_output_bytes)
        if result.is_error:
            raise McpFailure({"type": "tool_execution_error", "message": text or f"{name} failed"})
        return text


def result_text(result: CallToolResult) -> str:
    """Text blocks as they are; other blocks (images, resources) and structured content as JSON."""
    pieces: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            pieces.append(block.text)
        else:
            pieces.append(json.dumps(block.model_dump(mode="json", exclude_none=True), ensure_ascii=False))
    if not pieces and result.structured_content is not None:
        pieces.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(pieces)


def cap(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary and marked as cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = f"\n[output truncated: {len(data)} bytes, limit {limit} (mcp.max_output_bytes)]"
    keep = max(0, limit - len(marker.encode()))
    return data[:keep].decode("utf-8", "ignore") + marker
