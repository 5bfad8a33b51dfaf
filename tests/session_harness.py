"""An in-process harness for `RealtimeSession`: no sockets, no server, no wall-clock sleeps.

The session runs on the scripted stand-in engines (`engines/scripted.py`: an RMS VAD, an STT and
LLM that answer at once, a tone TTS), which take no worker threads, so everything a test
triggers happens within a few turns of the event loop. A `FakeTransport` records what the
session sends; `PlayoutTransport` also queues the answer's audio for playout, as the WebRTC
transport does, so barge-in over audio that is still playing can be tested.

Audio is fed with `feed(session, pcm)` in 20 ms appends at the session's input rate (24 kHz);
`speech(s)` is a tone the scripted VAD hears as speech, `silence(s)` is zeros.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

from livevox.engines.registry import Engines
from livevox.engines.scripted import reset_scripted
from livevox.realtime.dialects import VoiceLiveDialect
from livevox.realtime.ports import Channel, SessionTransport
from livevox.realtime.session import RealtimeSession
from livevox.settings import Settings, load_settings
from support_audio import tone

RATE = 24000
APPEND = RATE // 50  # 20 ms


def speech(seconds: float) -> npt.NDArray[np.int16]:
    """A tone the scripted VAD hears as speech (RMS well above its 0.02 threshold)."""
    return tone(seconds, RATE)


class FakeTransport(SessionTransport):
    """Records every event the session sends; audio travels inside events (as on a WebSocket)."""

    audio_in_events = True

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.routes: list[Channel] = []
        self.closed = False

    async def send_event(self, event: dict[str, Any], route: Channel) -> None:
        self.events.append(event)
        self.routes.append(route)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]


class PlayoutTransport(FakeTransport):
    """Audio goes to a playout queue, not into events (as over WebRTC). Nothing plays unless a
    test calls `play(ms)`, so the answer's audio stays pending for as long as the test wants."""

    audio_in_events = False

    def __init__(self) -> None:
        super().__init__()
        self.queued: dict[str, int] = {}  # item -> samples queued (24 kHz)
        self.sent: dict[str, int] = {}  # item -> samples played
        self.order: list[str] = []
        self.discarded: list[str] = []

    async def play_audio(self, response_id: str, item_id: str, pcm24k: npt.NDArray[np.int16]) -> None:
        if item_id not in self.queued:
            self.order.append(item_id)
        self.queued[item_id] = self.queued.get(item_id, 0) + pcm24k.size

    def play(self, ms: int) -> None:
        """`ms` of the oldest pending item's audio reach the user."""
        item = self.pending_audio()
        if item is not None:
            self.sent[item] = min(self.queued[item], self.sent.get(item, 0) + ms * RATE // 1000)

    def pending_audio(self) -> str | None:
        return next((i for i in self.order if self.sent.get(i, 0) < self.queued[i]), None)

    def discard_pending_audio(self) -> str | None:
        item = self.pending_audio()
        if item is not None:
            self.queued[item] = self.sent.get(item, 0)
            self.discarded.append(item)
        return item

    def played_ms(self, item_id: str) -> int | None:
        return self.sent.get(item_id, 0) * 1000 // RATE


def scripted(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"vad": {"engine": "scripted"}, "stt": {"engine": "scripted"},
                            "llm": {"engine": "scripted"}, "tts": {"engine": "scripted"},
                            "turn": {"engine": "none"}}
    return load_settings(None, **{**base, **overrides})


#: Sessions `new_session` made and nobody closed yet (conftest closes them after each test: an
#: open session's watchdog task would keep it alive on the session-wide event loop).
OPEN: list[RealtimeSession] = []


async def close_open_sessions() -> None:
    while OPEN:
        await OPEN.pop().close()


async def new_session(transport: FakeTransport | None = None, **settings: Any) -> RealtimeSession:
    reset_scripted()
    s = scripted(**settings)
    engines = Engines.create(s)
    await engines.load()
    session = RealtimeSession(engines=engines, settings=s, dialect=VoiceLiveDialect(),
                              transport=transport or FakeTransport(), model="livevox")
    await session.start()
    OPEN.append(session)
    return session


async def settle(session: RealtimeSession) -> None:
    """Let every task the session started run to completion (event-loop turns, not time)."""
    for _ in range(1000):
        pending = [t for t in session._tasks if not t.done()
                   and getattr(t.get_coro(), "__qualname__", "") != "RealtimeSession._watchdog"]
        runs = [r for r in (session.response, session.turns.spec and session.turns.spec.response)
                if r is not None and r.active and not r._gated]
        if not pending and not runs:
            for _ in range(20):  # and whatever those finished tasks scheduled
                await asyncio.sleep(0)
            return
        await asyncio.sleep(0)
    raise AssertionError("the session did not settle")


async def feed(session: RealtimeSession, pcm: npt.NDArray[np.int16]) -> None:
    for i in range(0, pcm.size, APPEND):
        await session.feed_audio(pcm[i:i + APPEND])
        await asyncio.sleep(0)


def transport_of(session: RealtimeSession) -> FakeTransport:
    t = session.transport
    assert isinstance(t, FakeTransport)
    return t
