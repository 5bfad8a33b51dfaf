"""`GET /v1/models` and `GET /v1/voices`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from ..state import LivevoxState

from ...engines.base import DescribesModel
from .common import _guard

log = logging.getLogger("livevox.engine_api")

# ---------------------------------------------------------------- models, voices


async def models(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    created = int(state.started)
    data = []
    for stage in ("llm", "stt", "tts"):
        engine = engines.engine(stage)
        model = engine.model_file if isinstance(engine, DescribesModel) else engine.name
        data.append({"id": str(model), "object": "model", "created": created,
                     "owned_by": "livevox", "livevox": {"stage": stage, "engine": engine.name}})
    return JSONResponse({"object": "list", "data": data})


async def voices(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    return JSONResponse(engines.voices.listing())
