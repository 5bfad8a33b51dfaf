"""Silero VAD v6.2 on onnxruntime (no torch).

One ONNX session per process, shared by all sessions; each session's recurrent state (state
[2,1,128] plus the last 64 samples of context) lives in its `SileroVADStream`. This streaming
wrapper reproduces the official per-frame probabilities for 512-sample frames at 16 kHz.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.audio import SESSION_RATE, Float32Array
from ..core.executor import stage_executor
from .base import EngineError
from .model_files import silero_onnx

log = logging.getLogger(__name__)

FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the frame size Silero v5+ is trained on
CONTEXT_SAMPLES = 64


class SileroVADStream:
    """Per-session Silero state. Not thread-safe: one session feeds it in order."""

    frame_samples = FRAME_SAMPLES

    def __init__(self, engine: SileroVAD) -> None:
        self._engine = engine
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)

    def _run_frames(self, audio: Float32Array) -> list[float]:
        # Runs on the VAD worker thread: all frames of one call in one job, so a 100 ms append
        # costs one executor round-trip, not three.
        session = self._engine.session
        probs: list[float] = []
        state, context = self._state, self._context
        for start in range(0, len(audio), FRAME_SAMPLES):
            x = np.concatenate([context, audio[start : start + FRAME_SAMPLES]])[None, :]
            out, state = session.run(None, {"input": x, "state": state, "sr": self._engine.sr})
            context = x[0, -CONTEXT_SAMPLES:]
            probs.append(float(out[0, 0]))
        self._state, self._context = state, context
        return probs

    async def probabilities(self, audio: Float32Array, session_id: str) -> list[float]:
        n = len(audio)
        if n == 0:
            return []
        if n % FRAME_SAMPLES:
            raise ValueError(f"VAD audio length {n} is not a multiple of {FRAME_SAMPLES}")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        try:
            probs: list[float] = await stage_executor("vad").run(session_id, self._run_frames, audio)
        except Exception as exc:
            raise EngineError("vad", "vad_error", f"Silero VAD failed: {exc}") from exc
        return probs


class SileroVAD:
    """Silero VAD v6.2 ONNX, from the pinned `silero-vad` wheel or `vad.model_path`."""

    name = "silero"

    def __init__(self, model_path: str | None = None) -> None:
        self._model_path = model_path
        self.path: Path | None = None
        self._session: Any = None
        self.sr = np.array(SESSION_RATE, np.int64)

    @property
    def session(self) -> Any:
        if self._session is None:
            raise EngineError("vad", "vad_unavailable", "Silero VAD is not loaded")
        return self._session

    @property
    def model_file(self) -> str:
        return self.path.name if self.path else "silero_vad.onnx"

    def _load(self) -> None:
        import onnxruntime as ort

        self.path = silero_onnx(self._model_path)
        so = ort.SessionOptions()
        # Each frame is tiny (0.1 ms); extra intra-op threads only add sync overhead and steal
        # cores from STT/LLM/TTS.
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

    async def load(self) -> None:
        await stage_executor("vad").run("_load", self._load)

    async def warmup(self) -> None:
        s = self.stream()
        await s.probabilities(np.zeros(FRAME_SAMPLES, np.float32), "_warmup")

    async def close(self) -> None:
        self._session = None

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self)
