"""Input noise suppression (`input_audio_noise_reduction`), before VAD and STT.

WebRTC's noise suppressor (plus its 80 Hz high-pass filter) through the `webrtc-noise-gain`
package (Apache-2.0, no dependencies, one abi3 wheel), on the session's 16 kHz clock in 10 ms
frames. Chosen over RNNoise (`pyrnnoise`) on measurements (benchmarks/echo_noise.py --ns, five
noises at 0/5/10 dB SNR): RNNoise removes far more noise (31 dB against 14 in the pauses,
+6.3 dB SI-SDR against +0.9 on stationary noise), but it made Whisper tiny.en worse (mean WER
36 % against 29 % unprocessed; WebRTC's level 3: 25 %), mangles espeak-like voices and babble,
costs ~18x the CPU (24 ms per second of audio against 1.3; it runs at 48 kHz), and its package
pulls matplotlib and audiolab. This suppressor feeds VAD and STT, not a listener's ears.

`NoiseSuppressor.process()` returns exactly as many samples as it is given, delayed by
`LATENCY_SAMPLES` (one 10 ms frame), so the session's sample clock stays exact up to that
constant (measured end-to-end delay: 16 ms). ~1.3 ms of CPU per second of audio: cheap enough
to call inline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..core.executor import stage_executor

FRAME = 160
LATENCY_SAMPLES = FRAME
PIP_INSTALL = "pip install webrtc-noise-gain==1.3.0"

#: WebRTC suppression level (1 mild .. 4 strongest) per `input_audio_noise_reduction.type`.
#: near_field (headset) needs less than far_field (laptop/room); Azure's deep NS gets 3.
LEVELS = {"near_field": 2, "far_field": 3, "azure_deep_noise_suppression": 3}
DEFAULT_LEVEL = 3


def level_for(config: dict[str, Any] | None) -> int | None:
    """Suppression level for a session's `input_audio_noise_reduction`; None when it is off."""
    if not config:
        return None
    return LEVELS.get(str(config.get("type")), DEFAULT_LEVEL)


class NoiseSuppressor:
    """One session's suppressor (stateful: the noise estimate adapts over time)."""

    def __init__(self, level: int = DEFAULT_LEVEL, *, auto_gain_dbfs: int = 0) -> None:
        if not 1 <= level <= 4:
            raise ValueError("noise suppression level must be 1-4")
        try:
            from webrtc_noise_gain import AudioProcessor
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(f"noise suppression needs the webrtc-noise-gain package; fix: {PIP_INSTALL}") from exc
        self.level = level
        # Gain control stays off by default: VAD thresholds and the echo canceller expect the
        # user's real level.
        self._ap = AudioProcessor(auto_gain_dbfs, level)
        self._pending = np.zeros(0, np.int16)
        self._out = np.zeros(LATENCY_SAMPLES, np.int16)
        #: WebRTC's own voice-activity flag for the last frame processed (informational).
        self.is_speech = False

    def process(self, samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Suppress noise in 16 kHz mono audio (int16, or float32 in [-1, 1]); same length and dtype."""
        x_in = np.asarray(samples).reshape(-1)
        if x_in.dtype == np.int16:
            x = x_in
        else:
            x = np.clip(np.round(x_in.astype(np.float32) * 32768.0), -32768, 32767).astype(np.int16)
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        n = buf.size // FRAME * FRAME
        done = []
        for i in range(0, n, FRAME):
            result = self._ap.Process10ms(buf[i : i + FRAME].tobytes())
            done.append(np.frombuffer(result.audio, np.int16))
            self.is_speech = bool(result.is_speech)
        self._pending = buf[n:].copy()
        out = np.concatenate([self._out, *done]) if done else self._out
        res, self._out = out[: x.size], out[x.size :]
        if x_in.dtype == np.int16:
            return res
        return (res.astype(np.float32) / 32768.0).astype(np.float32)

    async def process_async(self, samples: npt.NDArray[Any], session_id: str) -> npt.NDArray[Any]:
        """`process()` on the `audio` stage executor (ordered per session)."""
        return await stage_executor("audio").run(session_id, self.process, samples)
