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

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .audio import speech, transcriptions
from .chat import chat_completions
from .common import ApiError, Refused
from .models import models, voices

if TYPE_CHECKING:
    from ..state import LivevoxState

log = logging.getLogger("livevox.engine_api")


def _route(path: str, handler: Any, state: LivevoxState, method: str) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request, state)
            return response
        except ApiError as err:
            return err.response()
        except Refused as refused:
            return refused.response
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
