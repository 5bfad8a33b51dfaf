"""`turn_detection.idle_timeout_ms` (OpenAI GA, server_vad only): re-prompt a silent user.

The timer starts when the last response's audio has finished playing: the response is done,
the transport holds none of its audio any more (WebRTC), and the real-time playout of what was
sent (first delta + its length, for clients that play audio events themselves) is over. After
`idle_timeout_ms` more with no speech the host emits `input_audio_buffer.timeout_triggered`,
commits the buffered (silent) audio as a user item and answers it, as a VAD turn would.

Speech (a `speech_started`) or a client event that restarts the turn (`reset`) stops the timer;
it starts again only after the next response has played. The state is checked every `POLL_S`
(the transports report playback as a state, not as an event), only while the option is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from ..core.audio import SESSION_RATE
from ..core.ids import new_id
from .input_audio import InputAudio
from .response import ResponseRun
from .turn_taking import TurnTaking

#: Client events after which no timer runs until the next response has played.
log = logging.getLogger("livevox.session")

RESTART_EVENTS = frozenset({
    "input_audio_buffer.commit", "input_audio_buffer.clear", "conversation.item.create", "response.create",
})
POLL_S = 0.05


class IdleHost(Protocol):
    config: dict[str, Any]
    response: ResponseRun | None

    def answer_audible(self) -> bool: ...

    def playback_end(self, item_id: str) -> float:
        """Monotonic time when the client will have played the item's audio sent so far."""
        ...

    async def emit(self, event: dict[str, Any]) -> None: ...

    async def commit_idle(self, item_id: str) -> None: ...


class IdleTimeout:
    def __init__(self, host: IdleHost, turns: TurnTaking, audio: InputAudio) -> None:
        self.host = host
        self.turns = turns
        self.audio = audio
        self.timeout_ms: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen_run: ResponseRun | None = None
        self._waiting: ResponseRun | None = None  # the response whose playback end starts the timer
        self._quiet_since: float | None = None  # monotonic; the timer runs from here
        self._quiet_clock = 0  # input clock sample at that moment

    def configure(self, td: dict[str, Any] | None) -> None:
        on = td is not None and td.get("type", "server_vad") == "server_vad" and td.get("idle_timeout_ms")
        self.timeout_ms = int(td["idle_timeout_ms"]) if on and td is not None else None
        if self.timeout_ms is None:
            self.stop()
        elif self._task is None:
            # A response still running starts the timer when it has played; an older one does not.
            run = self.host.response
            self._seen_run = None if run is not None and run.active else run
            self._task = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        self.reset()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reset(self) -> None:
        """The turn restarts: no timer until the next response has played."""
        self._waiting, self._quiet_since = None, None
        self._seen_run = self.host.response

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.step(time.monotonic())
            except Exception:  # a failing step must not end the watch (or the session)
                log.exception("idle timeout step failed")

    async def step(self, now: float) -> None:
        if self.timeout_ms is None:
            return
        run = self.host.response
        if run is not None and run is not self._seen_run:
            self._seen_run, self._waiting, self._quiet_since = run, run, None
        waiting = self._waiting
        if waiting is None:
            return
        # Speech since that response began (a fast client may fit both in one poll) stops the timer.
        began = waiting.timings.response_start or 0.0
        if self.turns.speech_item is not None or self.turns.speech_started_at > began:
            self.reset()
            return
        if self.host.answer_audible():
            self._quiet_since = None
            return
        if self._quiet_since is None:
            msg = waiting.message
            if msg is not None and now < self.host.playback_end(msg.id):
                return  # the client is still playing it
            self._quiet_since, self._quiet_clock = now, self.audio.clock
        if (now - self._quiet_since) * 1000 < self.timeout_ms:
            return
        self.reset()
        item_id = new_id("item")
        await self.host.emit({"type": "input_audio_buffer.timeout_triggered", "item_id": item_id,
                              "audio_start_ms": self._quiet_clock * 1000 // SESSION_RATE,
                              "audio_end_ms": self.audio.clock * 1000 // SESSION_RATE})
        await self.host.commit_idle(item_id)
