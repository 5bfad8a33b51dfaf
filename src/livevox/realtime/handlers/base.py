"""What the handler families share: the session's state, as `RealtimeSession` sets it up.

Each family (`input_audio`, `items`, `responses`) is a mixin of `RealtimeSession` over this
class; the annotations below are the whole of what they may touch, and the methods one family
calls in another are declared here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ...engines.base import EngineSet
from ..conversation import Conversation, ConversationItem
from ..dialects import Dialect
from ..input_audio import InputAudio
from ..mcp_session import McpTools
from ..metrics import TurnTimings
from ..ports import Channel, SessionTransport
from ..response import ResponseRun
from ..response_params import ResponseParams
from ..turn_taking import TurnTaking

if TYPE_CHECKING:
    from ...settings import Limits, Settings
    from ..tracing import TurnTracer


class SessionParts:
    id: str
    conversation_id: str
    api_version: str | None
    config: dict[str, Any]
    settings: Settings
    limits: Limits
    engines: EngineSet
    dialect: Dialect
    transport: SessionTransport
    conversation: Conversation
    mcp: McpTools
    audio: InputAudio
    turns: TurnTaking
    response: ResponseRun | None
    _side_responses: set[ResponseRun]
    _playback: dict[str, tuple[float, float]]
    latency_events: bool
    turn_tracer: TurnTracer | None
    closed: bool
    _last_activity: float

    async def emit(self, event: dict[str, Any], route: Channel | None = None) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        raise NotImplementedError

    # one family's methods that another calls

    async def _truncate(self, entry: ConversationItem, content_index: int, end_ms: int,
                        appended: str | None = None) -> None:
        raise NotImplementedError

    def played_ms(self, item_id: str) -> int:
        raise NotImplementedError

    def audio_sent(self, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        raise NotImplementedError

    async def _start_response(self, params: ResponseParams, entries: list[ConversationItem] | None,
                              timings: TurnTimings) -> None:
        raise NotImplementedError

    def _watch_response(self, run: ResponseRun) -> None:
        raise NotImplementedError

    async def _insert_item(self, item: dict[str, Any], prev_id: str | None = None) -> None:
        raise NotImplementedError

    async def _on_commit(self, event: dict[str, Any]) -> None:
        raise NotImplementedError
