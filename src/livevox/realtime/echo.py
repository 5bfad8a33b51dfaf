"""Server-side acoustic echo cancellation (`input_audio_echo_cancellation: server_echo_cancellation`).

The far-end reference is the exact audio livevox sent for the user to hear, placed on the
session's 16 kHz input clock at the sample where it is expected to play (`far(samples,
at_sample)`). The microphone audio comes back on the same clock (`near(samples, at_sample)`),
and the echo in it lags the reference by an unknown, roughly constant delay: network, the
client's jitter buffer and playout, the sound card. Voice Live assumes playback starts within
2 s of delivery, so that is the search range.

Two stages:

1. A coarse delay estimator (`DelayEstimator`, GCC-PHAT at 4 kHz over the last 2 s, searched
   up to `max_delay_ms`) re-aligns the reference so the echo lags it by a small margin.
2. WebRTC's AudioProcessing echo canceller (AEC3), through the `livekit` package's
   `AudioProcessingModule` (Apache-2.0; a maintained prebuilt binding of WebRTC's audio
   processing). AEC3 has its own fine delay tracking, but only over a few hundred ms (measured:
   fine at 250 ms, lost at 700 ms), which is why stage 1 exists.

Frames are 10 ms (160 samples). `near()` returns exactly as many samples as it was given, delayed
by `LATENCY_SAMPLES` (one frame): the output stream is the input stream 10 ms late, so clock
positions stay exact up to that constant.

Measured (benchmarks/echo_noise.py --aec, synthetic room, delays 50-1500 ms, gains -6..-20 dB):
ERLE median 30 dB for 50-250 ms delays; false barge-ins 32/32 without AEC, 0-4 of 32 with it
over six runs, all in the first ~1.7 s of a session's first answer while AEC3 converges; every
interruption by another voice was still detected. ~8 ms CPU per second of audio, delay search
included.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from ..core.audio import SESSION_RATE, Float32Array, Int16Array
from ..core.executor import stage_executor

log = logging.getLogger(__name__)


FRAME = 160  # 10 ms: the unit of WebRTC's audio processing
LATENCY_SAMPLES = FRAME
PIP_INSTALL = "pip install livekit==1.2.0"


def _as_int16(samples: npt.NDArray[Any]) -> Int16Array:
    if samples.dtype == np.int16:
        return samples
    return np.clip(np.round(samples.astype(np.float32) * 32768.0), -32768, 32767).astype(np.int16)


class DelayEstimator:
    """Echo delay by GCC-PHAT between the microphone and the reference, at 4 kHz.

    `estimate(mic, ref)`: `mic` is the last W samples of microphone audio, `ref` the reference
    for the same span extended `max_delay` samples into the past (len(ref) = W + max_delay),
    both at 16 kHz. Returns (delay in samples, confidence) where the echo of ref sample n
    reaches mic sample n + delay. Confidence is the peak's height over the correlation's
    robust spread; > ~8 is a clear echo path.
    """

    DECIM = 4

    def __init__(self, max_delay: int) -> None:
        self.max_delay = max_delay

    def estimate(self, mic: Float32Array, ref: Float32Array) -> tuple[int, float]:
        d = self.DECIM
        m = soxr.resample(mic.astype(np.float32), SESSION_RATE, SESSION_RATE // d, quality="LQ")
        r = soxr.resample(ref.astype(np.float32), SESSION_RATE, SESSION_RATE // d, quality="LQ")
        n = 1 << int(np.ceil(np.log2(len(m) + len(r))))
        spec = np.fft.rfft(m, n) * np.conj(np.fft.rfft(r, n))
        spec /= np.abs(spec) + 1e-9  # PHAT: only phase, so the peak is sharp for speech
        cc = np.fft.irfft(spec, n)
        # mic[i] ~ ref[i + max_d - lag]  <=>  circular index (lag - max_d) mod n.
        max_d = self.max_delay // d
        lags = np.arange(0, max_d + 1)
        vals = cc[(lags - max_d) % n]
        best = int(np.argmax(vals))
        spread = float(np.median(np.abs(vals - np.median(vals)))) * 1.4826 + 1e-12
        return best * d, float((vals[best] - np.median(vals)) / spread)


class EchoCanceller:
    """One session's echo canceller. Thread-safe between `far()` (event loop) and `near()`.

    - `far(samples, at_sample)`: audio sent to the user (16 kHz, int16 or float32), placed at
      input-clock sample `at_sample` (where it is expected to play). Overlapping writes
      overwrite (a later response replaces what was cancelled).
    - `clear_far(from_sample)`: the client dropped its queued audio (barge-in, truncate).
    - `near(samples, at_sample) -> cleaned`: microphone audio; returns the same number of
      samples (same dtype), `LATENCY_SAMPLES` late.
    """

    def __init__(
        self,
        rate: int = SESSION_RATE,
        *,
        max_delay_ms: int = 2000,
        initial_delay_ms: int = 0,
        margin_ms: int = 30,
        estimate_every_ms: int = 500,
        window_ms: int = 2000,
        min_confidence: float = 8.0,
        tolerance_ms: int = 20,
        aec3_range_ms: int = 320,
    ) -> None:
        if rate != SESSION_RATE:
            raise ValueError("EchoCanceller works on the 16 kHz session clock")
        try:
            from livekit import rtc
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(f"server echo cancellation needs the livekit package; fix: {PIP_INSTALL}") from exc
        self._rtc = rtc
        self._apm = self._new_apm()
        self.rate = rate
        self.max_delay = max_delay_ms * rate // 1000
        self.margin = margin_ms * rate // 1000
        self.delay = initial_delay_ms * rate // 1000  # current estimate of the echo path delay
        self.confidence = 0.0
        self._every = estimate_every_ms * rate // 1000
        self._window = window_ms * rate // 1000
        self._min_conf = min_confidence
        self._tolerance = tolerance_ms * rate // 1000
        self._candidate: int | None = None
        self._aec3_range = aec3_range_ms * rate // 1000
        self.measured_delay: int | None = None
        self._estimator = DelayEstimator(self.max_delay)
        self._lock = threading.Lock()
        # Reference on the input clock: _far[i] is sample _far_start + i.
        self._far = np.zeros(0, np.int16)
        self._far_start = 0
        self._far_energy_until = -1  # last sample position that carries far-end audio
        # Microphone side.
        self._next_near: int | None = None
        self._pending = np.zeros(0, np.int16)
        self._out = np.zeros(LATENCY_SAMPLES, np.int16)
        self._frame_pos = 0  # clock position of the next 10 ms frame to process
        self._mic_hist = np.zeros(0, np.float32)  # last window of raw microphone audio
        self._since_estimate = 0
        self.frames = 0

    def _new_apm(self) -> Any:
        apm = self._rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        apm.set_stream_delay_ms(0)  # our own alignment leaves only `margin_ms`
        return apm

    # ------------------------------------------------------------ reference

    def far(self, samples: npt.NDArray[Any], at_sample: int) -> None:
        x = _as_int16(np.asarray(samples).reshape(-1))
        if x.size == 0:
            return
        with self._lock:
            end = at_sample + x.size
            if self._far.size == 0:
                self._far_start = at_sample
            if at_sample < self._far_start:  # before what is kept: only the kept part matters
                x = x[self._far_start - at_sample :]
                at_sample = self._far_start
                if x.size == 0:
                    return
            need = end - self._far_start
            if need > self._far.size:
                self._far = np.concatenate([self._far, np.zeros(need - self._far.size, np.int16)])
            self._far[at_sample - self._far_start : end - self._far_start] = x
            self._far_energy_until = max(self._far_energy_until, end)

    def clear_far(self, from_sample: int) -> None:
        with self._lock:
            cut = max(0, from_sample - self._far_start)
            if cut < self._far.size:
                self._far = self._far[:cut]
            self._far_energy_until = min(self._far_energy_until, from_sample)

    def _far_slice(self, start: int, n: int) -> Int16Array:
        """Reference samples [start, start + n) (zeros where nothing was sent). Lock held."""
        out = np.zeros(n, np.int16)
        lo = max(start, self._far_start)
        hi = min(start + n, self._far_start + self._far.size)
        if hi > lo:
            out[lo - start : hi - start] = self._far[lo - self._far_start : hi - self._far_start]
        return out

    def _trim_far(self) -> None:
        keep_from = self._frame_pos - self.max_delay - self._window - FRAME
        cut = keep_from - self._far_start
        if cut > 4 * self.rate:  # trim in large steps, not on every frame
            self._far = self._far[cut:]
            self._far_start += cut

    # ------------------------------------------------------------ microphone

    def reset_near(self, at_sample: int) -> None:
        """Start a new microphone stream at `at_sample` (the delay estimate and filter are kept)."""
        self._next_near = at_sample
        self._pending = np.zeros(0, np.int16)
        self._out = np.zeros(LATENCY_SAMPLES, np.int16)
        self._frame_pos = at_sample
        self._mic_hist = np.zeros(0, np.float32)

    def near(self, samples: npt.NDArray[Any], at_sample: int) -> npt.NDArray[Any]:
        x_in = np.asarray(samples).reshape(-1)
        x = _as_int16(x_in)
        if self._next_near != at_sample:
            self.reset_near(at_sample)
        self._next_near = at_sample + x.size
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
        done: list[Int16Array] = []
        rtc = self._rtc
        with self._lock:
            while self._pending.size >= FRAME:
                frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
                ref_at = self._frame_pos - max(0, self.delay - self.margin)
                ref = self._far_slice(ref_at, FRAME)
                rf = rtc.AudioFrame(ref.tobytes(), SESSION_RATE, 1, FRAME)
                self._apm.process_reverse_stream(rf)
                mf = rtc.AudioFrame(frame.tobytes(), SESSION_RATE, 1, FRAME)
                self._apm.process_stream(mf)
                done.append(np.frombuffer(mf.data, np.int16).copy())
                self._remember_mic(frame)
                self._frame_pos += FRAME
                self.frames += 1
            self._trim_far()
        out = np.concatenate([self._out, *done]) if done else self._out
        result, self._out = out[: x.size], out[x.size :]
        if x_in.dtype == np.int16:
            return result
        return (result.astype(np.float32) / 32768.0).astype(np.float32)

    async def near_async(self, samples: npt.NDArray[Any], at_sample: int, session_id: str) -> npt.NDArray[Any]:
        """`near()` on the `audio` stage executor (ordered per session)."""
        return await stage_executor("audio").run(session_id, self.near, samples, at_sample)

    # ------------------------------------------------------------ delay tracking

    def _remember_mic(self, frame: Int16Array) -> None:
        self._mic_hist = np.concatenate([self._mic_hist, frame.astype(np.float32) / 32768.0])[-self._window :]
        self._since_estimate += FRAME
        if self._since_estimate >= self._every and self._mic_hist.size >= self._window:
            self._since_estimate = 0
            self._update_delay()

    def _update_delay(self) -> None:
        end = self._frame_pos + FRAME  # mic history ends here
        if self._far_energy_until < end - self._window - self.max_delay:
            return  # the agent has not talked within reach: nothing to learn
        ref = self._far_slice(end - self._window - self.max_delay, self._window + self.max_delay)
        reff = ref.astype(np.float32) / 32768.0
        if float(np.sqrt(np.mean(reff**2))) < 1e-4 or float(np.sqrt(np.mean(self._mic_hist**2))) < 1e-5:
            return
        delay, conf = self._estimator.estimate(self._mic_hist, reff)
        if conf < self._min_conf:
            return
        self.confidence = conf
        self.measured_delay = delay
        # Move the reference only when AEC3 cannot follow by itself: when the echo would lag the
        # reference by more than its tracking covers, or lead it (non-causal). Every move is a
        # discontinuity AEC3 must re-converge on (measured: ~2 s of leaking echo), so a
        # working alignment is left alone, and a move must be confirmed by two estimates.
        residual = delay - max(0, self.delay - self.margin)
        if 0 <= residual <= self._aec3_range:
            self._candidate = None
            return
        if self._candidate is not None and abs(delay - self._candidate) <= self._tolerance:
            log.debug("echo delay %d -> %d ms (confidence %.1f)",
                      self.delay * 1000 // SESSION_RATE, delay * 1000 // SESSION_RATE, conf)
            self.delay = delay
            self._candidate = None
            # A fresh AEC3 converges in well under a second; one that locked onto the wrong
            # alignment takes longer to unlearn it (measured).
            self._apm = self._new_apm()
        else:
            self._candidate = delay
