"""`tools: [{type: "mcp", ...}]`: validation of the definition (both dialects' shapes), which of a
server's tools the LLM may see, which need the client's approval, and the function names the
LLM sees them by."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..core.errors import ProtocolError, unsupported

_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_FN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: OpenAI's function-name limit; the LLM sees `server_label__tool_name` within it.
MAX_FUNCTION_NAME = 64
_KNOWN = {"type", "server_label", "server_url", "connector_id", "tunnel_id", "authorization", "headers",
          "allowed_tools", "require_approval", "server_description", "defer_loading", "allowed_callers"}


def _bad(param: str, message: str, code: str = "invalid_value") -> ProtocolError:
    return ProtocolError(code, f"Invalid value for '{param}': {message}", param=param)


def _str_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(param, "must be an array of tool names (strings)")
    return list(value)


def _filter(value: Any, param: str) -> dict[str, Any]:
    """OpenAI's tool filter `{tool_names?, read_only?}`."""
    if not isinstance(value, dict):
        raise _bad(param, "must be an object {tool_names?, read_only?}")
    for key in value:
        if key not in ("tool_names", "read_only"):
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    out: dict[str, Any] = {}
    if value.get("tool_names") is not None:
        out["tool_names"] = _str_list(value["tool_names"], f"{param}.tool_names")
    if value.get("read_only") is not None:
        if not isinstance(value["read_only"], bool):
            raise _bad(f"{param}.read_only", "must be a boolean")
        out["read_only"] = value["read_only"]
    return out


def validate_mcp_tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    """The canonical MCP tool definition; raises ProtocolError naming the exact param."""
    for key in tool:
        if key not in _KNOWN:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    for key in ("connector_id", "tunnel_id"):
        if tool.get(key) is not None:
            raise unsupported(f"MCP '{key}' (OpenAI-hosted connectors and tunnels); give a server_url",
                              f"{param}.{key}")
    out: dict[str, Any] = {"type": "mcp"}
    label = tool.get("server_label")
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise _bad(f"{param}.server_label", "required: a letter, then up to 63 letters, digits, '_' or '-'")
    out["server_label"] = label
    url = tool.get("server_url")
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise _bad(f"{param}.server_url", "required: the MCP server's http(s) URL (at most 2048 characters)")
    out["server_url"] = url
    for key in ("authorization", "server_description"):
        if tool.get(key) is not None:
            if not isinstance(tool[key], str) or (key == "authorization" and "\n" in tool[key]):
                raise _bad(f"{param}.{key}", "must be a string")
            out[key] = tool[key]
    headers = tool.get("headers")
    if headers is not None:
        if not isinstance(headers, dict) or len(headers) > 64:
            raise _bad(f"{param}.headers", "must be an object of at most 64 string headers")
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise _bad(f"{param}.headers", f"{name!r} is not a valid HTTP header name")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise _bad(f"{param}.headers.{name}", "must be a string without line breaks")
        out["headers"] = dict(headers)
    allowed = tool.get("allowed_tools")
    if allowed is not None:
        out["allowed_tools"] = (_str_list(allowed, f"{param}.allowed_tools") if isinstance(allowed, list)
                                else _filter(allowed, f"{param}.allowed_tools"))
    out["require_approval"] = _approval(tool.get("require_approval"), f"{param}.require_approval")
    if tool.get("defer_loading"):
        raise unsupported("MCP 'defer_loading' (tool search)", f"{param}.defer_loading")
    callers = tool.get("allowed_callers")
    if callers is not None:
        if not isinstance(callers, list) or any(c not in ("direct", "programmatic") for c in callers):
            raise _bad(f"{param}.allowed_callers", "must be an array of 'direct' or 'programmatic'")
        if "programmatic" in callers:
            raise unsupported("MCP 'programmatic' callers", f"{param}.allowed_callers")
        out["allowed_callers"] = callers
    return out


def public_view(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the session object shows it: MCP credentials are write-only (the token is left
    out, header values are masked), so no echo of the session carries them."""
    if tool.get("type") != "mcp":
        return tool
    view = {k: v for k, v in tool.items() if k != "authorization"}
    if view.get("headers"):
        view["headers"] = {name: "***" for name in view["headers"]}
    return view


def _approval(value: Any, param: str) -> Any:
    if value is None:
        return "always"  # Voice Live's documented default, and the safe one
    if value in ("always", "never"):
        return value
    if not isinstance(value, dict):
        raise _bad(param, "must be 'always', 'never' or an object {always?, never?}")
    out: dict[str, Any] = {}
    for key, sub in value.items():
        if key not in ("always", "never"):
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
        if sub is None:
            continue
        # Voice Live: a list of tool names; OpenAI: a filter object.
        out[key] = _str_list(sub, f"{param}.{key}") if isinstance(sub, list) else _filter(sub, f"{param}.{key}")
    return out


def _matches(rule: list[str] | dict[str, Any], tool: dict[str, Any]) -> bool:
    """A list names tools; a filter matches when every criterion it has holds (none: nothing)."""
    if isinstance(rule, list):
        return tool["name"] in rule
    if not rule:
        return False
    if "tool_names" in rule and tool["name"] not in rule["tool_names"]:
        return False
    if "read_only" in rule and bool((tool.get("annotations") or {}).get("readOnlyHint")) != rule["read_only"]:
        return False
    return True


def is_allowed(definition: dict[str, Any], tool: dict[str, Any]) -> bool:
    rule = definition.get("allowed_tools")
    return rule is None or _matches(rule, tool)


def needs_approval(definition: dict[str, Any], tool: dict[str, Any]) -> bool:
    """`always` wins over `never`; a tool neither names is asked about (Voice Live's rule)."""
    rule = definition.get("require_approval", "always")
    if isinstance(rule, str):
        return rule != "never"
    if "always" in rule and _matches(rule["always"], tool):
        return True
    return not ("never" in rule and _matches(rule["never"], tool))


def function_name(label: str, tool: str, taken: set[str]) -> str:
    """`label__tool` in the OpenAI function-name charset and length; a unique hash suffix when it
    had to be cut or would collide."""
    name = _FN_UNSAFE.sub("_", f"{label}__{tool}")
    if len(name) > MAX_FUNCTION_NAME or name in taken:
        digest = hashlib.sha256(f"{label}\0{tool}".encode()).hexdigest()[:8]
        name = f"{name[:MAX_FUNCTION_NAME - 9]}_{digest}"
    taken.add(name)
    return name
