"""livevox as an engine server: OpenAI-compatible model endpoints backed by the loaded engines.

    GET  /v1/models                 the loaded LLM, STT and TTS engines
    POST /v1/chat/completions       streaming (SSE) and not, tools and tool calls
    POST /v1/audio/transcriptions   multipart WAV upload -> {"text": ...}
    POST /v1/audio/speech           text -> raw 24 kHz PCM16 (`pcm`, streamed) or `wav`
    GET  /v1/voices                 the voice map (every role)

Any `model` name is accepted: each stage has one engine (or one fallback chain). Errors are
OpenAI-shaped `{"error": {"message", "type", "param", "code"}}` with the matching status. An
engine failure before the first result keeps its own code (`llm_timeout`, ...) and maps to 503
(unavailable), 504 (timeout) or 502 (bad upstream answer); after streaming began, a chat stream
ends with an `error` SSE event and no `[DONE]`. API keys work as on the realtime endpoints.
"""

from __future__ import annotations

import io
import json
import logging
import time
import wave
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..core import audio as audio_codec
from ..core.audio import ITEM_RATE
from ..core.errors import ProtocolError
from ..core.ids import new_id
from ..engines.base import (
    STT_RATE,
    ChatRequest,
    EngineError,
    Finish,
    LLMEvent,
    SynthesisOptions,
    TextDelta,
    ToolCallDelta,
    TranscribeOptions,
)
from ..realtime import jsonguard
from .auth import AUTH_MESSAGE, is_authorized

if TYPE_CHECKING:
    from ..engines.registry import Engines
    from .state import LivevoxState

log = logging.getLogger("livevox.engine_api")

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's own limit for transcriptions
MAX_SPEECH_CHARS = 4096
SPEECH_FORMATS = ("pcm", "wav")
_STATUS = {"unavailable": 503, "timeout": 504, "bad_response": 502, "auth_failed": 502, "bad_request": 400}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


def engine_failure(exc: EngineError) -> ApiError:
    suffix = exc.code.split("_", 1)[1] if "_" in exc.code else exc.code
    status = _STATUS.get(suffix, 500)
    return ApiError(status, f"{exc.stage} engine failed: {exc.message}", code=exc.code,
                    type_="invalid_request_error" if status == 400 else "server_error")


def _guard(request: Request, state: LivevoxState) -> Engines:
    if not is_authorized(state.settings.api_keys, request.headers, request.query_params):
        raise ApiError(401, AUTH_MESSAGE, code="invalid_api_key")
    if state.engines is None or not state.ready:
        raise ApiError(503, "The engines are still loading; see /readyz.", code="engines_loading",
                       type_="server_error")
    return state.engines


_JSON_TYPES = ("", "application/json", "text/plain")


async def _json_body(request: Request, state: LivevoxState) -> dict[str, Any]:
    """The request's JSON object, read and parsed within the client-input limits."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise ApiError(415, f"Unsupported Content-Type {jsonguard.safe_text(ctype)!r}: send a JSON body "
                       "(Content-Type: application/json).", code="unsupported_content_type")
    limits = state.settings.limits
    declared = request.headers.get("content-length", "")
    body = bytearray()
    if not (declared.isdigit() and int(declared) > limits.max_frame_bytes):
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_frame_bytes:
                break
    if len(body) > limits.max_frame_bytes or (declared.isdigit() and int(declared) > limits.max_frame_bytes):
        raise ApiError(413, f"The request body is larger than {limits.max_frame_bytes} bytes "
                       "(limits.max_frame_bytes).", code="request_too_large")
    try:
        text = jsonguard.as_text(bytes(body), "The request body")
        parsed = jsonguard.loads(text, jsonguard.JsonBounds.of(limits), "The request body")
        bad = jsonguard.invalid_string_path(parsed, text)
        if bad is not None:
            raise jsonguard.surrogate_error(bad)
    except ProtocolError as err:
        raise ApiError(400, err.message, code=err.code, param=err.param) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return parsed


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ApiError(400, f"'{key}' must be an integer from {lo} to {hi}.", code="invalid_value", param=key)
    return v


def _float(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= float(v) <= hi:
        raise ApiError(400, f"'{key}' must be a number from {lo:g} to {hi:g}.", code="invalid_value", param=key)
    return float(v)


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


T = TypeVar("T")


async def _first(gen: AsyncIterator[T]) -> T | None:
    """The stream's first item (None if it is empty), awaited before answering 200 so that a
    failing engine still gets an HTTP error status; the stream is closed if it fails."""
    try:
        return await anext(gen)
    except StopAsyncIteration:
        return None
    except EngineError as exc:
        await _aclose(gen)
        raise engine_failure(exc) from None


async def _aclose(gen: Any) -> None:
    # Shielded: on client disconnect Starlette cancels the response task, and the engine's own
    # cleanup (closing an upstream HTTP stream, stopping a generation) must still run.
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


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


# ---------------------------------------------------------------- transcriptions


def decode_wav(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A WAV upload (8/16/24/32-bit PCM, any rate, any channels) as 16 kHz mono float32."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ApiError(400, "Unsupported audio format: upload a WAV file (PCM).", code="invalid_value",
                       param="file")
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ApiError(400, f"The WAV file cannot be read: {exc}", code="invalid_value", param="file") from None
    if width == 1:
        pcm = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        pcm = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16))
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        pcm = ints.astype(np.float32) / float(1 << 23)
    else:
        pcm = np.frombuffer(frames, "<i4").astype(np.float32) / float(1 << 31)
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
    if rate != STT_RATE:
        import soxr

        pcm = soxr.resample(pcm, rate, STT_RATE).astype(np.float32)
    return np.ascontiguousarray(pcm, dtype=np.float32)


async def transcriptions(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 65536:
        raise ApiError(413, f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.",
                       code="file_too_large", param="file")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, "Send the audio as multipart/form-data with a 'file' part.",
                       code="unsupported_content_type")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except (MultiPartException, HTTPException) as exc:
        detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise ApiError(400, f"Bad multipart body: {detail}", code="invalid_multipart") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "Missing required parameter: 'file'.", code="missing_required_parameter",
                           param="file")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.",
                           code="file_too_large", param="file")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()
    fmt = fields.get("response_format", "json")
    if fmt not in ("json", "text", "verbose_json"):
        raise ApiError(400, f"Unsupported response_format {fmt!r}: use json, text or verbose_json.",
                       code="invalid_value", param="response_format")
    if fields.get("stream", "false").lower() == "true":
        raise ApiError(400, "Streaming transcription is not supported.", code="invalid_value", param="stream")
    audio = decode_wav(data)
    opts = TranscribeOptions(language=fields.get("language") or None, prompt=fields.get("prompt") or None,
                             model=fields.get("model") or None)
    gen = engines.stt.transcribe(audio, opts, new_id("api"))
    try:
        text = "".join([piece async for piece in gen]).strip()
    except EngineError as exc:
        raise engine_failure(exc) from None
    finally:
        await _aclose(gen)
    if fmt == "text":
        return Response(text + "\n", media_type="text/plain; charset=utf-8")
    if fmt == "verbose_json":
        return JSONResponse({"task": "transcribe", "language": opts.language or "", "duration":
                             round(len(audio) / STT_RATE, 3), "text": text, "segments": []})
    return JSONResponse({"text": text})


# ---------------------------------------------------------------- speech


def _wav_header(rate: int, nbytes: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.setnframes(nbytes // 2)
        w.writeframes(b"")
    header = bytearray(buf.getvalue())
    header[4:8] = (36 + nbytes).to_bytes(4, "little")
    header[40:44] = nbytes.to_bytes(4, "little")
    return bytes(header)


async def speech(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    body = await _json_body(request, state)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "'input' must be a non-empty string.", code="invalid_value", param="input")
    if len(text) > MAX_SPEECH_CHARS:
        raise ApiError(400, f"'input' is longer than {MAX_SPEECH_CHARS} characters.", code="invalid_value",
                       param="input")
    fmt = body.get("response_format", "mp3")
    if fmt not in SPEECH_FORMATS:
        raise ApiError(400, f"Unsupported response_format {fmt!r}: this server speaks "
                       f"{' and '.join(SPEECH_FORMATS)} (24 kHz, 16-bit mono).", code="invalid_value",
                       param="response_format")
    if body.get("stream_format", "audio") != "audio":
        raise ApiError(400, "Only stream_format 'audio' is supported.", code="invalid_value", param="stream_format")
    voice = body.get("voice")
    if isinstance(voice, dict) and "id" in voice and "name" not in voice:
        voice = {**voice, "name": voice["id"]}
    if voice is None:
        raise ApiError(400, "Missing required parameter: 'voice'.", code="missing_required_parameter", param="voice")
    try:
        engine_voice = engines.voices.resolve(voice, param="voice")
    except ProtocolError as err:
        raise ApiError(400, err.message, code=err.code, param=err.param) from None
    speed = _float(body, "speed", 0.25, 4.0) or 1.0
    tts = engines.tts
    gen = tts.synthesize(text, SynthesisOptions(voice=engine_voice, speed=speed), new_id("api"))
    resampler = audio_codec.StreamResampler(tts.sample_rate, ITEM_RATE) if tts.sample_rate != ITEM_RATE else None

    def pcm_bytes(chunk: Any, last: bool = False) -> bytes:
        if resampler is not None:
            chunk = resampler.process(chunk, last=last)
        return bytes(np.asarray(chunk, dtype="<i2").tobytes())

    if fmt == "wav":  # the whole file, so that its header states the true length
        try:
            pcm = b"".join([pcm_bytes(c) async for c in gen])
        except EngineError as exc:
            raise engine_failure(exc) from None
        finally:
            await _aclose(gen)
        if resampler is not None:
            pcm += pcm_bytes(np.zeros(0, np.int16), last=True)
        return Response(_wav_header(ITEM_RATE, len(pcm)) + pcm, media_type="audio/wav")
    first = await _first(gen)

    async def audio() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield pcm_bytes(first)
                async for chunk in gen:
                    data = pcm_bytes(chunk)
                    if data:
                        yield data
            if resampler is not None:
                tail = pcm_bytes(np.zeros(0, np.int16), last=True)
                if tail:
                    yield tail
        except EngineError as exc:
            # The status line is gone: end the body early; the client sees a short stream.
            log.warning("speech stream failed after it began: %s", exc)
        finally:
            await _aclose(gen)

    return StreamingResponse(audio(), media_type="audio/pcm",
                             headers={"X-Sample-Rate": str(ITEM_RATE), "X-Accel-Buffering": "no"})


# ---------------------------------------------------------------- models, voices


async def models(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    created = int(state.started)
    data = []
    for stage in ("llm", "stt", "tts"):
        engine = engines.engine(stage)
        data.append({"id": str(getattr(engine, "model_file", engine.name)), "object": "model", "created": created,
                     "owned_by": "livevox", "livevox": {"stage": stage, "engine": engine.name}})
    return JSONResponse({"object": "list", "data": data})


async def voices(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    return JSONResponse(engines.voices.listing())


def _route(path: str, handler: Any, state: LivevoxState, method: str) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request, state)
            return response
        except ApiError as err:
            return err.response()
        except Exception as exc:  # still an OpenAI-shaped answer
            log.exception("%s failed", path)
            return ApiError(500, f"internal error: {type(exc).__name__}", code="server_error",
                            type_="server_error").response()

    return Route(path, endpoint, methods=[method])


def engine_routes(state: LivevoxState) -> list[BaseRoute]:
    """The OpenAI-compatible model endpoints (role "engine" or "all")."""
    return [
        _route("/v1/models", models, state, "GET"),
        _route("/v1/chat/completions", chat_completions, state, "POST"),
        _route("/v1/audio/transcriptions", transcriptions, state, "POST"),
        _route("/v1/audio/speech", speech, state, "POST"),
    ]


def voices_route(state: LivevoxState) -> BaseRoute:
    """`GET /v1/voices`: the names clients may send and the engine voices they become (every role)."""
    return _route("/v1/voices", voices, state, "GET")
