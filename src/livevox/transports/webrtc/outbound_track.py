"""The agent's outbound audio track (`AgentAudioTrack`): the session queues 24 kHz PCM per response item; the track
resamples it (soxr) to the negotiated codec's rate and hands the RTP sender one encoded 20 ms
frame at a time, paced by a media clock: frame *n* leaves at `t0 + n * 20 ms`, so scheduling
delays never accumulate (drift compensation); after a stall longer than `MAX_LAG` the clock is
re-anchored instead of bursting. When the agent is quiet it sends silence, and audio that arrives
then goes out at once, the clock re-anchored on it, instead of at the next 20 ms tick (a receiver's
jitter buffer takes a packet up to one frame early as it takes jitter). `discard()` empties the
queue at once (barge-in): the next frame is silence. It counts, per item, the samples actually
sent, which is what `played_ms` (auto_truncate, conversation.item.truncate) uses.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ...core import audio as audio_codec
from ...core.audio import ITEM_RATE, Int16Array
from .metrics import FRAME_JITTER_SECONDS, FRAMES_SENT, MEDIA_CLOCK_RESETS, UNDERRUN_FRAMES
from .sdp import AudioCodec

if TYPE_CHECKING:
    pass

log = logging.getLogger("livevox.webrtc.media")

FRAME_SECONDS = 0.020
#: Behind the media clock by more than this, re-anchor the clock instead of sending a burst.
MAX_LAG = 0.100
#: Quiet at the start of a response's audio skipped at most (seconds), and what counts as quiet.
MAX_LEAD_TRIM = 0.25
_QUIET = 64
#: Per-item sent-sample counters kept (oldest dropped first).
_MAX_TRACKED_ITEMS = 256
#: An Opus "silence" frame (20 ms, CELT), used if the encoder returns nothing.
_OPUS_SILENCE = b"\xf8\xff\xfe"

#: on_event(kind, response_id) with kind "started", "stopped" or "cleared".
PlayoutCallback = Callable[[str, str], None]


@dataclass(slots=True)
class _Chunk:
    response_id: str
    item_id: str
    pcm: Int16Array | None  # None marks the end of the response's audio
    pos: int = 0


class _Encoder:
    """One 20 ms frame of int16 mono in, one encoded payload out.

    Encoding silence costs as much as encoding speech (~0.15 ms per Opus frame), and a call is
    mostly silence. After `_RING_OUT` silent frames (the decoder's overlap has rung out), the
    encoder sends a pre-encoded silence frame instead of running the codec; the first frame with
    sound goes through the codec again.
    """

    _RING_OUT = 5

    def __init__(self, codec: AudioCodec, bitrate: int) -> None:
        self.codec = codec
        self._ctx: av.AudioCodecContext | None = None
        self._g711 = {"PCMU": "g711_ulaw", "PCMA": "g711_alaw"}.get(codec.name)
        self._layout = "stereo" if codec.channels == 2 else "mono"
        self._quiet = 0
        if codec.name == "opus":
            self._ctx = self._opus(bitrate)
            # A silence frame of this very configuration, from a separate encoder in steady state.
            warm = self._opus(bitrate)
            packet = b""
            for i in range(10):
                packet = self._opus_encode(warm, np.zeros(codec.frame_samples, np.int16), i * codec.frame_samples)
            self._silence = packet or _OPUS_SILENCE
        else:
            assert self._g711 is not None
            self._silence = audio_codec.encode(np.zeros(codec.frame_samples, np.int16), self._g711)

    def _opus(self, bitrate: int) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "w")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.bit_rate = bitrate * self.codec.channels
        ctx.format = "s16"
        ctx.layout = self._layout
        ctx.sample_rate = self.codec.clock_rate
        ctx.time_base = fractions.Fraction(1, self.codec.clock_rate)
        ctx.options = {"application": "audio"}
        return ctx

    def _opus_encode(self, ctx: av.AudioCodecContext, pcm: Int16Array, pts: int) -> bytes:
        data = np.repeat(pcm, 2) if self.codec.channels == 2 else pcm
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout=self._layout)
        frame.sample_rate = self.codec.clock_rate
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, self.codec.clock_rate)
        packets = ctx.encode(frame)
        return bytes(packets[0]) if packets else b""

    def encode(self, pcm: Int16Array, pts: int, silent: bool = False) -> bytes:
        self._quiet = self._quiet + 1 if silent else 0
        if self._quiet > self._RING_OUT:
            return self._silence
        if self._ctx is None:
            assert self._g711 is not None
            return audio_codec.encode(pcm, self._g711)
        return self._opus_encode(self._ctx, pcm, pts) or self._silence


class AgentAudioTrack(MediaStreamTrack):
    """The agent's voice: queued response audio, else silence, in 20 ms frames on a media clock."""

    kind = "audio"

    def __init__(self, codec: AudioCodec, bitrate: int = 32000, on_event: PlayoutCallback | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.codec = codec
        self._frame = codec.frame_samples
        self._encoder = _Encoder(codec, bitrate)
        self._time_base = fractions.Fraction(1, codec.clock_rate)
        self._on_event = on_event
        self._clock = clock
        self._queue: deque[_Chunk] = deque()
        self._resamplers: dict[str, audio_codec.StreamResampler] = {}
        self._sent: OrderedDict[str, int] = OrderedDict()
        self._discarded: deque[str] = deque(maxlen=64)
        self._playing: str | None = None  # response whose audio is going out
        self._playing_item = ""
        self._trim: tuple[str, int] = ("", 0)  # (response, leading-quiet samples it may still skip)
        self.trimmed_samples = 0
        self._t0: float | None = None
        self._n = -1
        self._last_release: float | None = None
        self._wake: asyncio.Future[bool] | None = None  # an idle recv() waiting for its tick
        # counters (also exported as Prometheus metrics)
        self.frames_sent = 0
        self.audio_frames_sent = 0
        self.underrun_frames = 0
        self.clock_resets = 0
        self.early_starts = 0  # responses whose first frame went before its tick
        self.max_jitter = 0.0

    # ------------------------------------------------------------ producer side (the session)

    def enqueue(self, response_id: str, item_id: str, pcm24k: Int16Array) -> None:
        if response_id in self._discarded or self.readyState != "live" or pcm24k.size == 0:
            return
        rs = self._resamplers.get(item_id)
        if rs is None:
            rs = self._resamplers[item_id] = audio_codec.StreamResampler(ITEM_RATE, self.codec.clock_rate)
        pcm = rs.process(pcm24k.astype(np.int16, copy=False))
        if pcm.size:
            self._queue.append(_Chunk(response_id, item_id, pcm))
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(True)

    def end(self, response_id: str, item_id: str) -> None:
        """No more audio for this item: flush its resampler and mark where the response ends."""
        if response_id in self._discarded or self.readyState != "live":
            return
        rs = self._resamplers.pop(item_id, None)
        if rs is not None:
            tail = rs.flush()
            if tail.size:
                self._queue.append(_Chunk(response_id, item_id, tail))
        self._queue.append(_Chunk(response_id, item_id, None))

    def pending(self) -> tuple[str, str] | None:
        """(response_id, item_id) of the audio playing or queued, if any."""
        if self._playing is not None:
            return self._playing, self._playing_item
        for chunk in self._queue:
            if chunk.pcm is not None:
                return chunk.response_id, chunk.item_id
        return None

    def discard(self) -> tuple[str, str] | None:
        """Drop everything not yet sent (barge-in). Returns (response_id, item_id) of the audio
        that was cut, if any; that response's later audio is ignored too."""
        cut = self.pending()
        for chunk in self._queue:
            if chunk.response_id not in self._discarded:
                self._discarded.append(chunk.response_id)
        if self._playing is not None and self._playing not in self._discarded:
            self._discarded.append(self._playing)
        self._queue.clear()
        self._resamplers.clear()
        self._playing = None
        if cut is not None and self._on_event is not None:
            self._on_event("cleared", cut[0])
        return cut

    @property
    def playing_item(self) -> str | None:
        """The item whose audio is going out or queued first, if any."""
        if self._playing is not None:
            return self._playing_item
        return next((c.item_id for c in self._queue if c.pcm is not None), None)

    def sent_ms(self, item_id: str) -> int | None:
        samples = self._sent.get(item_id)
        return None if samples is None else samples * 1000 // self.codec.clock_rate

    @property
    def pending_ms(self) -> int:
        n = sum(c.pcm.size - c.pos for c in self._queue if c.pcm is not None)
        return n * 1000 // self.codec.clock_rate

    # ------------------------------------------------------------ consumer side (the RTP sender)

    def _take(self) -> tuple[Int16Array, bool]:
        """The next frame, and whether it is pure silence (nothing queued)."""
        need = self._frame
        out = np.zeros(need, np.int16)
        filled = 0
        while filled < need and self._queue:
            chunk = self._queue[0]
            if chunk.pcm is None:  # end of a response's audio: everything before it is out
                self._queue.popleft()
                if self._playing == chunk.response_id:
                    self._playing = None
                    if self._on_event is not None:
                        self._on_event("stopped", chunk.response_id)
                continue
            if self._playing != chunk.response_id and self._trim_leading_quiet(chunk):
                continue  # the whole chunk was leading quiet
            self._playing_item = chunk.item_id
            if self._playing != chunk.response_id:
                self._playing = chunk.response_id
                if self._on_event is not None:
                    self._on_event("started", chunk.response_id)
            n = min(need - filled, chunk.pcm.size - chunk.pos)
            out[filled:filled + n] = chunk.pcm[chunk.pos:chunk.pos + n]
            chunk.pos += n
            filled += n
            self._count(chunk.item_id, n)
            if chunk.pos >= chunk.pcm.size:
                self._queue.popleft()
        if filled:
            self.audio_frames_sent += 1
            if filled < need and self._playing is not None:
                self.underrun_frames += 1
                UNDERRUN_FRAMES.inc()
        elif self._playing is not None:  # the response has more to say but it is not here yet
            self.underrun_frames += 1
            UNDERRUN_FRAMES.inc()
        return out, filled == 0

    def _trim_leading_quiet(self, chunk: _Chunk) -> bool:
        """A response about to start: skip the quiet its audio starts with (TTS lead-in, up to
        `MAX_LEAD_TRIM`), so that the user hears the first word sooner. The skipped samples count
        as sent (item offsets stay exact). True if the whole chunk was skipped."""
        assert chunk.pcm is not None
        rid, budget = self._trim
        if rid != chunk.response_id:
            rid, budget = chunk.response_id, int(MAX_LEAD_TRIM * self.codec.clock_rate)
        window = chunk.pcm[chunk.pos:chunk.pos + budget]
        loud = np.flatnonzero(np.abs(window.astype(np.int32)) > _QUIET)
        skip = int(loud[0]) if loud.size else window.size
        self._trim = (rid, budget - skip)
        if skip:
            chunk.pos += skip
            self._count(chunk.item_id, skip)
            self.trimmed_samples += skip
        if chunk.pos >= chunk.pcm.size:
            self._queue.popleft()
            return True
        return False

    def _count(self, item_id: str, samples: int) -> None:
        if item_id in self._sent:
            self._sent[item_id] += samples
            self._sent.move_to_end(item_id)
        else:
            self._sent[item_id] = samples
            while len(self._sent) > _MAX_TRACKED_ITEMS:
                self._sent.popitem(last=False)

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        self._n += 1
        if self._t0 is None:
            self._t0 = now
        else:
            deadline = self._t0 + self._n * FRAME_SECONDS
            wait = deadline - now
            if wait > 0 and self._playing is None and not self._queue:
                if await self._idle_wait(wait):  # audio came: it starts now, the clock follows it
                    self._t0 = self._clock() - self._n * FRAME_SECONDS
                    self._last_release = None
                    self.early_starts += 1
            elif wait > 0:
                await asyncio.sleep(wait)
            elif -wait > MAX_LAG:
                # The loop stalled: continue from now, without a burst of late frames.
                self._t0 = now - self._n * FRAME_SECONDS
                self.clock_resets += 1
                MEDIA_CLOCK_RESETS.inc()
            if self.readyState != "live":
                raise MediaStreamError
        pcm, silent = self._take()
        pts = self._n * self._frame
        packet = av.Packet(self._encoder.encode(pcm, pts, silent))
        packet.pts = pts
        packet.time_base = self._time_base
        released = self._clock()
        if self._last_release is not None:
            jitter = abs(released - self._last_release - FRAME_SECONDS)
            self.max_jitter = max(self.max_jitter, jitter)
            FRAME_JITTER_SECONDS.observe(jitter)
        self._last_release = released
        self.frames_sent += 1
        FRAMES_SENT.inc()
        return packet

    async def _idle_wait(self, wait: float) -> bool:
        """Sleep until the next tick, or until `enqueue` brings audio (True)."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[bool] = loop.create_future()
        self._wake = wake

        def on_tick() -> None:
            if not wake.done():
                wake.set_result(False)

        tick = loop.call_later(wait, on_tick)
        try:
            return await wake
        finally:
            tick.cancel()
            self._wake = None

    def stop(self) -> None:
        self._queue.clear()
        self._resamplers.clear()
        super().stop()
