"""What the engine endpoints share: OpenAI-shaped errors, admission, bounded JSON bodies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from ...core.errors import ProtocolError
from ...engines.base import (
    EngineError,
)
from ...realtime import jsonguard

log = logging.getLogger("livevox.engine_api")

if TYPE_CHECKING:
    from ...engines.registry import Engines
    from ..state import LivevoxState



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


class Refused(Exception):
    """The server's own admission answer (401, 503), sent as it is."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _guard(request: Request, state: LivevoxState) -> Engines:
    refusal = state.refusal(request.headers, request.query_params, needs="engines")
    if refusal is not None:
        raise Refused(refusal)
    assert state.engines is not None  # ready
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
