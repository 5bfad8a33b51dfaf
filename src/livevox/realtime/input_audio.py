"""The session's microphone path and what it heard.

Client audio (any input format and rate) is resampled to the 16 kHz session clock, then cleaned:
echo cancellation first (it needs the raw microphone signal), then noise suppression. The
result is buffered with its clock position (samples since the session began), so the turn logic
can cut a turn at exact sample positions, and the echo canceller's far-end reference (what the
user is played) is placed on the same clock.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import audio as audio_codec
from ..core.audio import SESSION_RATE, Int16Array
from ..core.errors import ProtocolError
from .echo import EchoCanceller
from .noise import NoiseSuppressor, level_for


class InputAudio:
    def __init__(self, session_id: str, input_rate: int, max_buffer_seconds: float) -> None:
        self.session_id = session_id
        self.max_buffer_seconds = max_buffer_seconds
        self.clock = 0  # samples received (16 kHz)
        self.start = 0  # clock sample of the buffer's first sample
        self.size = 0  # samples buffered
        self._chunks: list[Int16Array] = []
        self._resampler = audio_codec.StreamResampler(input_rate, SESSION_RATE)
        self.noise: NoiseSuppressor | None = None
        self.echo: EchoCanceller | None = None
        self._far_resampler = audio_codec.StreamResampler(audio_codec.ITEM_RATE, SESSION_RATE)
        self._far_next = 0  # clock sample where the next played sample is heard

    def configure(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        """Follow a session.update: input format and rate, noise suppression, echo cancellation."""
        if (new["input_audio_sampling_rate"] != old["input_audio_sampling_rate"]
                or new["input_audio_format"] != old["input_audio_format"]):
            self._resampler = audio_codec.StreamResampler(new["input_audio_sampling_rate"], SESSION_RATE)
        if new.get("input_audio_noise_reduction") != old.get("input_audio_noise_reduction"):
            level = level_for(new.get("input_audio_noise_reduction"))
            self.noise = None if level is None else NoiseSuppressor(level)
        if new.get("input_audio_echo_cancellation") != old.get("input_audio_echo_cancellation"):
            self.echo = EchoCanceller(SESSION_RATE) if new.get("input_audio_echo_cancellation") else None
            self._far_next = self.clock

    async def clean(self, samples: Int16Array, rate: int | None = None) -> Int16Array:
        """16 kHz, echo-cancelled, noise-suppressed audio for client `samples` (at the session's
        input rate, or `rate`). Not yet buffered: see `append`."""
        pcm = self._resampler.process(samples) if rate is None else audio_codec.resample(samples, rate, SESSION_RATE)
        if pcm.size == 0:
            return pcm
        if self.echo is not None:
            pcm = await self.echo.near_async(pcm, self.clock, self.session_id)
        if self.noise is not None:
            pcm = await self.noise.process_async(pcm, self.session_id)
        return pcm

    def append(self, pcm: Int16Array, *, bounded: bool) -> int:
        """Buffer `pcm`; returns its clock position. `bounded`: refuse beyond the buffer limit (no
        turn detection empties the buffer, so the client must commit or clear)."""
        if bounded and self.size + pcm.size > int(self.max_buffer_seconds * SESSION_RATE):
            raise ProtocolError("input_audio_buffer_full", "The input audio buffer is full "
                                f"({self.max_buffer_seconds:g} s, limits.max_input_buffer_seconds); "
                                "commit or clear it.", param="audio")
        self._chunks.append(pcm)
        self.size += pcm.size
        at = self.clock
        self.clock += pcm.size
        return at

    def take(self, from_sample: int, to_sample: int | None = None) -> Int16Array:
        """Drop buffered audio before `from_sample`; return [from, to) (to = now)."""
        if not self._chunks:
            self.start = self.clock
            return np.zeros(0, np.int16)
        whole = np.concatenate(self._chunks)
        cut = max(0, min(from_sample - self.start, whole.size))
        whole = whole[cut:]
        self._chunks = [whole]
        self.start += cut
        self.size = whole.size
        end = whole.size if to_sample is None else max(0, min(to_sample - self.start, whole.size))
        return whole[:end]

    def keep_last(self, samples: int) -> None:
        """While nobody speaks, keep only what prefix padding may need (in large steps)."""
        if self.size > samples * 2:
            self.take(self.clock - samples)

    def clear(self) -> None:
        self._chunks, self.size, self.start = [], 0, self.clock

    # ------------------------------------------------------------ the far end (echo reference)

    def played(self, pcm24k: Int16Array) -> None:
        """Audio sent for the user to hear: the client plays it as it arrives, after what it is
        already playing, so it is placed on the input clock there as the echo reference."""
        if self.echo is None:
            return
        far = self._far_resampler.process(pcm24k)
        start = max(self._far_next, self.clock)
        self.echo.far(far, start)
        self._far_next = start + far.size

    def stop_far(self) -> None:
        """The client dropped its queued audio (barge-in, clear): nothing more is heard from it."""
        if self.echo is not None:
            self.echo.clear_far(self.clock)
            self._far_next = self.clock
