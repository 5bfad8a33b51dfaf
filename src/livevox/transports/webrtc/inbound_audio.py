"""The user's inbound track: each RTP packet is decoded as it arrives, on the event loop
(`decode_on_loop`: no decoder thread, no 80 ms jitter buffer); `pump_inbound` resamples the
frames with soxr to the session's 16 kHz mono and feeds `session.feed_audio`, the same VAD /
turn detection / STT path as WebSocket audio.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ...core import audio as audio_codec
from ...core.audio import SESSION_RATE, Int16Array
from ...core.errors import ProtocolError

if TYPE_CHECKING:
    from ...realtime.session import RealtimeSession

log = logging.getLogger("livevox.webrtc.media")


class InlineDecoding:
    """Decodes the user's RTP audio on the event loop instead of in aiortc's decoder thread.

    aiortc gives every receiver a thread and hands it each packet through a `queue.Queue`; with
    dozens of calls, the hand-offs and GIL switches cost more than the decoding itself (Opus: a few
    tens of microseconds per 20 ms) and make the outbound frame timing jittery. This object takes
    the place of that queue: `put()` decodes at once (Opus to mono 48 kHz) and passes the frames to
    the receiver's track; the thread, which only ever calls `get()`, stays idle until the receiver
    stops and puts `None`, and then ends as usual (ending the track).
    """

    def __init__(self, track_queue: asyncio.Queue[Any]) -> None:
        self._idle: queue.Queue[Any] = queue.Queue()
        self._track_queue = track_queue
        self._decoders: dict[str, Any] = {}
        self.errors = 0

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._idle.get(block, timeout)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._idle.put(None)
            return
        codec, encoded = item
        try:
            for frame in self._decoder(codec).decode(encoded):
                self._track_queue.put_nowait(frame)
        except av.FFmpegError:
            self.errors += 1  # a corrupt packet: skip it, keep the decoder state

    def _decoder(self, codec: Any) -> Any:
        name = codec.name.lower()
        decoder = self._decoders.get(name)
        if decoder is None:
            decoder = self._decoders[name] = _MonoOpusDecoder() if name == "opus" else get_decoder(codec)
        return decoder


class _MonoOpusDecoder:
    """libopus decoding straight to mono (the session wants mono; no down-mix needed)."""

    def __init__(self) -> None:
        ctx = av.CodecContext.create("libopus", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.format = "s16"
        ctx.layout = "mono"
        ctx.sample_rate = 48000
        self._ctx = ctx
        self._time_base = fractions.Fraction(1, 48000)

    def decode(self, encoded: Any) -> list[av.AudioFrame]:
        packet = av.Packet(encoded.data)
        packet.pts = encoded.timestamp
        packet.time_base = self._time_base
        return [f for f in self._ctx.decode(packet) if isinstance(f, av.AudioFrame)]


class _InOrderAudio:
    """Stands in for aiortc's audio jitter buffer, which holds 4 packets (80 ms) before releasing
    one: that would delay every end-of-turn decision by as much. An audio RTP packet is a whole
    frame, so it is released at once; a late (reordered) or duplicate packet is dropped, not
    decoded out of order."""

    def __init__(self) -> None:
        self._last: int | None = None

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        seq = int(packet.sequence_number)
        if self._last is not None:
            ahead = (seq - self._last) % 65536
            if ahead == 0 or ahead >= 32768:  # a duplicate, or older than what was decoded
                return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def decode_on_loop(receiver: Any) -> bool:
    """Make `receiver` (an aiortc RTCRtpReceiver, before it starts) decode on the event loop, each
    packet as it arrives (see `InlineDecoding` and `_InOrderAudio`).
    Returns False (and leaves aiortc's defaults) if aiortc's internals differ."""
    queue_attr, buffer_attr = "_RTCRtpReceiver__decoder_queue", "_RTCRtpReceiver__jitter_buffer"
    track = getattr(receiver, "_track", None)
    if (not isinstance(getattr(receiver, queue_attr, None), queue.Queue)
            or not isinstance(getattr(receiver, buffer_attr, None), JitterBuffer) or track is None):
        log.warning("aiortc internals changed: inbound audio is decoded in aiortc's thread")
        return False
    setattr(receiver, queue_attr, InlineDecoding(track._queue))
    setattr(receiver, buffer_attr, _InOrderAudio())
    return True


async def pump_inbound(track: MediaStreamTrack, session: RealtimeSession,
                       on_frame: Callable[[], None] | None = None) -> None:
    """Decoded inbound frames -> 16 kHz mono -> the session's VAD/STT path, until the track ends."""
    resampler: audio_codec.StreamResampler | None = None
    rate = 0
    last_error = 0.0
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if on_frame is not None:
            on_frame()
        if not isinstance(frame, av.AudioFrame):
            continue
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if data.dtype != np.int16:  # aiortc's decoders give packed s16; be safe with others
            data = audio_codec.to_int16(data.astype(np.float32))
        samples = data.reshape(-1).astype(np.int16, copy=False)
        mono: Int16Array = samples
        if channels > 1:  # average the channels (interleaved)
            wide = samples.reshape(-1, channels).astype(np.int32).sum(axis=1) // channels
            mono = wide.astype(np.int16)
        if frame.sample_rate != rate or resampler is None:
            rate = frame.sample_rate
            resampler = audio_codec.StreamResampler(rate, SESSION_RATE)
        pcm = resampler.process(mono)
        if pcm.size == 0:
            continue
        try:
            await session.feed_audio(pcm, rate=SESSION_RATE)
        except ProtocolError as err:  # e.g. the buffer is full with turn detection off
            now = time.monotonic()
            if now - last_error > 5.0:
                last_error = now
                await session.send_error(err, None)
        except Exception:  # a bug must not end the call's audio
            log.exception("session %s: inbound audio failed", session.id)
