"""Dialect mappers: Voice Live, OpenAI beta and OpenAI GA, over one canonical event set.

The canonical set is the Voice Live / OpenAI beta naming. A dialect translates client events
into it (`inbound`), server events out of it (`outbound`) and renders the session object in its
own shape (`session_view`). The engine never branches on the dialect.
"""

from __future__ import annotations

import copy
from typing import Any

from ..core.errors import ProtocolError, unsupported
from ..core.protocol_names import GA_EVENT_NAMES, is_voice_live_path
from .config import OUTPUT_FORMATS

#: Canonical events that exist only for some dialects.
_GA_ONLY = {"conversation.item.done"}


class Dialect:
    name = "voicelive"
    #: Input transcription events are sent even when the session set no `input_audio_transcription`
    #: (Voice Live transcribes every turn; OpenAI only when asked).
    transcribes_by_default = True
    #: The dialect has `conversation.item.done` (an item's final state after its creation).
    item_done_events = False

    def inbound(self, event: dict[str, Any]) -> dict[str, Any]:
        return event

    def outbound(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if event["type"] in _GA_ONLY:
            return None
        return event

    def session_view(self, cfg: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        view = {**extra, **copy.deepcopy(cfg)}
        view["object"] = "realtime.session"
        return view

class VoiceLiveDialect(Dialect):
    name = "voicelive"


class OpenAIBetaDialect(Dialect):
    name = "openai-beta"
    transcribes_by_default = False

    def session_view(self, cfg: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        view = super().session_view(cfg, extra)
        # Beta has no Voice Live extensions; drop the ones that are unset to keep the shape familiar.
        for key in ("animation", "output_audio_timestamp_types", "avatar", "interim_response",
                    "reasoning_effort", "input_audio_echo_cancellation", "input_audio_sampling_rate"):
            if view.get(key) is None or key == "input_audio_sampling_rate":
                view.pop(key, None)
        return view


def _ga_format_in(fmt: Any, param: str) -> tuple[str, int | None]:
    if not isinstance(fmt, dict):
        raise ProtocolError("invalid_value", f"'{param}' must be an object", param=param)
    kind = fmt.get("type")
    if kind == "audio/pcm":
        rate = fmt.get("rate", 24000)
        if rate != 24000:
            raise ProtocolError("invalid_value", f"'{param}.rate' must be 24000", param=f"{param}.rate")
        return "pcm16", 24000
    if kind == "audio/pcmu":
        return "g711_ulaw", 8000
    if kind == "audio/pcma":
        return "g711_alaw", 8000
    raise ProtocolError(
        "invalid_value",
        f"Invalid value for '{param}.type': {kind!r}; expected audio/pcm, audio/pcmu or audio/pcma",
        param=f"{param}.type",
    )


def _ga_format_out(codec: str, rate: int) -> dict[str, Any]:
    if codec == "g711_ulaw":
        return {"type": "audio/pcmu"}
    if codec == "g711_alaw":
        return {"type": "audio/pcma"}
    return {"type": "audio/pcm", "rate": rate}


_GA_SESSION_KEYS = {
    "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
    "max_output_tokens", "tracing", "truncation", "prompt", "include", "parallel_tool_calls",
    "reasoning", "id", "object", "expires_at", "metadata", "temperature",
}


class OpenAIGADialect(Dialect):
    name = "openai-ga"
    transcribes_by_default = False
    item_done_events = True

    def session_in(self, s: Any, prefix: str = "session") -> dict[str, Any]:
        """GA session object -> canonical session update."""
        if not isinstance(s, dict):
            raise ProtocolError("invalid_type", f"'{prefix}' must be an object", param=prefix)
        if s.get("type") not in (None, "realtime"):
            raise ProtocolError(
                "invalid_value",
                f"Invalid value for '{prefix}.type': only 'realtime' sessions are supported",
                param=f"{prefix}.type",
            )
        out: dict[str, Any] = {}
        for key in s:
            if key not in _GA_SESSION_KEYS:
                raise ProtocolError(
                    "unknown_parameter", f"Unknown parameter: '{prefix}.{key}'.", param=f"{prefix}.{key}"
                )
        for key in ("model", "instructions", "tools", "tool_choice", "tracing", "include",
                    "parallel_tool_calls", "metadata", "temperature", "truncation"):
            if key in s:
                out[key] = s[key]
        if s.get("prompt") is not None:
            raise unsupported("Stored prompt templates (session.prompt)", f"{prefix}.prompt")
        if "reasoning" in s:
            out["reasoning_effort"] = _ga_reasoning_in(s["reasoning"], f"{prefix}.reasoning")
        if "output_modalities" in s:
            mods = s["output_modalities"]
            if not isinstance(mods, list):
                raise ProtocolError("invalid_type", f"'{prefix}.output_modalities' must be an array",
                                    param=f"{prefix}.output_modalities")
            out["modalities"] = ["text", "audio"] if "audio" in mods else ["text"]
        if "max_output_tokens" in s:
            out["max_response_output_tokens"] = s["max_output_tokens"]
        audio = s.get("audio")
        if audio is not None:
            if not isinstance(audio, dict):
                raise ProtocolError("invalid_type", f"'{prefix}.audio' must be an object", param=f"{prefix}.audio")
            inp = audio.get("input") or {}
            outp = audio.get("output") or {}
            if "format" in inp:
                codec, rate = _ga_format_in(inp["format"], f"{prefix}.audio.input.format")
                out["input_audio_format"] = codec
                out["input_audio_sampling_rate"] = rate
            if "transcription" in inp:
                out["input_audio_transcription"] = inp["transcription"]
            if "noise_reduction" in inp:
                out["input_audio_noise_reduction"] = inp["noise_reduction"]
            if "turn_detection" in inp:
                out["turn_detection"] = inp["turn_detection"]
            if "format" in outp:
                codec, _ = _ga_format_in(outp["format"], f"{prefix}.audio.output.format")
                out["output_audio_format"] = codec
            if "voice" in outp:
                out["voice"] = outp["voice"]
            if "speed" in outp:
                out["speed"] = outp["speed"]
        return out

    def inbound(self, event: dict[str, Any]) -> dict[str, Any]:
        t = event.get("type")
        if t == "session.update" and "session" in event:
            return {**event, "session": self.session_in(event["session"])}
        if t == "response.create" and isinstance(event.get("response"), dict):
            r = dict(event["response"])
            if "output_modalities" in r:
                mods = r.pop("output_modalities")
                r["modalities"] = ["text", "audio"] if isinstance(mods, list) and "audio" in mods else ["text"]
            if "reasoning" in r:
                r["reasoning_effort"] = _ga_reasoning_in(r.pop("reasoning"), "response.reasoning")
            audio = r.pop("audio", None)
            if isinstance(audio, dict) and isinstance(audio.get("output"), dict):
                o = audio["output"]
                if "voice" in o:
                    r["voice"] = o["voice"]
                if "format" in o:
                    r["output_audio_format"] = _ga_format_in(o["format"], "response.audio.output.format")[0]
            return {**event, "response": r}
        if t == "conversation.item.create" and isinstance(event.get("item"), dict):
            return {**event, "item": _ga_item_in(event["item"])}
        return event

    def outbound(self, event: dict[str, Any]) -> dict[str, Any] | None:
        t = event["type"]
        if t in ("session.created", "session.updated"):
            return event  # session already rendered by session_view
        ev = dict(event)
        ev["type"] = GA_EVENT_NAMES.get(t, t)
        if "item" in ev and isinstance(ev["item"], dict):
            ev["item"] = _ga_item_out(ev["item"])
        if "response" in ev and isinstance(ev["response"], dict):
            ev["response"] = _ga_response_out(ev["response"])
        if t == "response.content_part.added" or t == "response.content_part.done":
            pass
        return ev

    def session_view(self, cfg: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        codec_in = cfg["input_audio_format"]
        codec_out, rate_out = OUTPUT_FORMATS[cfg["output_audio_format"]]
        view: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            **{k: v for k, v in extra.items() if k in ("id", "expires_at")},
            "model": cfg.get("model"),
            "output_modalities": ["audio"] if "audio" in cfg["modalities"] else ["text"],
            "instructions": cfg["instructions"],
            "audio": {
                "input": {
                    "format": _ga_format_out(codec_in, cfg["input_audio_sampling_rate"]),
                    "transcription": cfg.get("input_audio_transcription"),
                    "noise_reduction": cfg.get("input_audio_noise_reduction"),
                    "turn_detection": cfg.get("turn_detection"),
                },
                "output": {
                    "format": _ga_format_out(codec_out, 24000 if codec_out == "pcm16" else rate_out),
                    "voice": cfg["voice"],
                    "speed": cfg.get("speed", 1.0),
                },
            },
            "tools": cfg["tools"],
            "tool_choice": cfg["tool_choice"],
            "max_output_tokens": cfg["max_response_output_tokens"],
            "tracing": cfg.get("tracing"),
            "truncation": cfg.get("truncation", "auto"),
            "prompt": None,
            "include": cfg.get("include"),
        }
        if cfg.get("reasoning_effort") is not None:
            view["reasoning"] = {"effort": cfg["reasoning_effort"]}
        return view


def _ga_reasoning_in(value: Any, param: str) -> Any:
    """GA `reasoning: {effort}` -> the canonical `reasoning_effort` (its value is checked there)."""
    if value is None:
        return None
    if not isinstance(value, dict) or any(k != "effort" for k in value):
        raise ProtocolError("invalid_value", f"'{param}' must be an object with only 'effort'", param=param)
    return value.get("effort")


def _ga_item_in(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if isinstance(content, list):
        new = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("output_text", "output_audio"):
                part = {**part, "type": "text" if part["type"] == "output_text" else "audio"}
            new.append(part)
        return {**item, "content": new}
    return item


def _ga_item_out(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("role") != "assistant" or not isinstance(item.get("content"), list):
        return item
    content = []
    for part in item["content"]:
        if part.get("type") == "text":
            part = {**part, "type": "output_text"}
        elif part.get("type") == "audio":
            part = {**part, "type": "output_audio"}
        content.append(part)
    return {**item, "content": content}


def _ga_response_out(resp: dict[str, Any]) -> dict[str, Any]:
    r = dict(resp)
    if "modalities" in r:
        r["output_modalities"] = ["audio"] if "audio" in r.pop("modalities") else ["text"]
    if "output" in r:
        r["output"] = [_ga_item_out(i) for i in r["output"]]
    if "max_response_output_tokens" in r:
        r["max_output_tokens"] = r.pop("max_response_output_tokens")
    return r


def dialect_for(path: str, beta: bool) -> Dialect:
    """Voice Live on its paths; OpenAI's beta dialect when the client asked for it, else GA."""
    if is_voice_live_path(path):
        return VoiceLiveDialect()
    return OpenAIBetaDialect() if beta else OpenAIGADialect()
