"""Smart Turn v3.2: an audio end-of-turn classifier (Whisper-tiny encoder + head) on onnxruntime.

The ONNX file is carried by the `pipecat-ai` wheel, which is never installed: only the file is
extracted from it (model_files.fetch; pipecat's requirements conflict with ours). The file is
sha256-pinned like the other model_files.

Input: up to the last 8 s of 16 kHz mono audio (the utterance so far, trailing silence included),
left-padded with zeros to exactly 8 s, as 80x800 Whisper log-mel features. Output: the
probability that the speaker has finished their turn.

The features are computed here with numpy. They reproduce the Whisper feature extractor the
model was trained with (`WhisperFeatureExtractor(chunk_length=8)`, `do_normalize=True`): a
zero-mean unit-variance waveform, a centred 400-point STFT with a periodic Hann window and hop
160, a Slaney mel filterbank of 80 bands from 0 to 8 kHz, log10, a floor 8 decades under the
peak, then (x + 4) / 4.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core.audio import SESSION_RATE, Float32Array
from ..core.executor import stage_executor
from .base import EngineError
from .model_files import SMART_TURN_V32, carried_file, user_path

log = logging.getLogger(__name__)

WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * SESSION_RATE  # 128000
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // HOP  # 800: the STFT gives 801 frames and the last is dropped


# ---------------------------------------------------------------- Whisper log-mel features


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above.
    lin = 3.0 * hz / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    out: npt.NDArray[np.float64] = np.where(hz >= 1000.0, log_part, lin)
    return out


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lin = 200.0 * mel / 3.0
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    out: npt.NDArray[np.float64] = np.where(mel >= 15.0, log_part, lin)
    return out


def mel_filterbank(n_fft: int = N_FFT, n_mels: int = N_MELS, rate: int = SESSION_RATE) -> npt.NDArray[np.float64]:
    """Slaney-normalised triangular filters, shape (n_mels, n_fft // 2 + 1)."""
    n_bins = n_fft // 2 + 1
    fft_hz = np.linspace(0.0, rate // 2, n_bins)
    edges_mel = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2.0)), n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    # Area normalisation: every filter has the same energy whatever its width.
    out: npt.NDArray[np.float64] = tri * (2.0 / (upper - lower))
    return out


_MEL = mel_filterbank()
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic, as torch.hann_window


def fit_window(audio: Float32Array) -> Float32Array:
    """The last 8 s of `audio`, left-padded with zeros to exactly 8 s (what the model was trained on)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size >= WINDOW_SAMPLES:
        return np.ascontiguousarray(x[-WINDOW_SAMPLES:])
    out = np.zeros(WINDOW_SAMPLES, np.float32)
    if x.size:
        out[-x.size :] = x
    return out


def log_mel_features(window: Float32Array) -> Float32Array:
    """Whisper log-mel features (80, 800) float32 of an 8 s, 16 kHz window (see `fit_window`)."""
    if window.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {window.shape}")
    x = window.astype(np.float32)
    # Normalise in float32 (as the reference does) before the STFT promotes to float64.
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]  # (801, 400), a view
    spectrum = np.fft.rfft(frames * _HANN, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # (801, 201)
    mel = np.maximum(_MEL @ power.T, 1e-10)  # (80, 801)
    logmel = np.log10(mel)[:, :N_FRAMES]
    logmel = np.maximum(logmel, logmel.max() - 8.0)
    out: Float32Array = ((logmel + 4.0) / 4.0).astype(np.float32)
    return out


# ---------------------------------------------------------------- the model


class SmartTurn:
    """Smart Turn v3.2, shared by all sessions (it has no per-session state).

    `score()` runs on the `turn` stage executor, so a decision never blocks the event loop and
    sessions take turns fairly. One intra-op thread: on the 2-core box a decision took 25 ms
    median (p90 49; features 2 ms) when idle, 36-38 ms at load ~1.5 and ~85-140 ms with other
    test suites saturating both cores; a second thread bought nothing (36 against 38 ms).
    """

    name = "smart_turn"
    available = True

    def __init__(self, model_path: str | None = None, *, threads: int = 1) -> None:
        self._model_path = model_path
        self.threads = threads
        self.path: Path | None = None
        self._session: Any = None
        self._input = "input_features"
        #: Wall time of the last `score_sync` in ms (features + inference), for metrics.
        self.last_ms = 0.0

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load_sync(self) -> None:
        import onnxruntime as ort

        if self._model_path:
            self.path = user_path(self._model_path, "turn.model_path")
        else:
            self.path = carried_file(SMART_TURN_V32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    async def load(self) -> None:
        await stage_executor("turn").run("_load", self.load_sync)

    async def warmup(self) -> None:
        await self.score(np.zeros(SESSION_RATE, np.float32), "_warmup")

    async def close(self) -> None:
        self._session = None

    def score_sync(self, audio: Float32Array) -> float:
        """P(turn complete) for 16 kHz float32 audio (only the last 8 s are used). Blocking."""
        if self._session is None:
            raise EngineError("turn", "turn_unavailable", "Smart Turn is not loaded")
        t0 = time.perf_counter()
        feats = log_mel_features(fit_window(audio))[None]
        (out,) = self._session.run(None, {self._input: feats})
        self.last_ms = (time.perf_counter() - t0) * 1000
        # The exported graph ends in a sigmoid despite its output name ("logits").
        return float(np.asarray(out).reshape(-1)[0])

    async def score(self, audio_f32_16k: Float32Array, session_id: str) -> float:
        """P(turn complete) for the utterance so far, computed on the `turn` executor."""
        audio = np.ascontiguousarray(audio_f32_16k, dtype=np.float32)
        try:
            return await stage_executor("turn").run(session_id, self.score_sync, audio)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("turn", "turn_error", f"Smart Turn failed: {exc}") from exc


class NoTurnModel:
    """`turn.engine = "none"`: nothing loads; sessions asking for a semantic mode are refused."""

    name = "none"
    available = False

    async def load(self) -> None:
        return None

    async def warmup(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def score(self, audio_f32_16k: Float32Array, session_id: str) -> float:
        raise EngineError("turn", "turn_unavailable", "no end-of-turn model is configured (turn.engine = none)")
