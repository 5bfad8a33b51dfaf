"""The input DSP's part of the start-up rehearsal: echo cancellation and noise suppression load
their libraries and models and run once, in 20 ms appends at 16 kHz, before `/readyz` says ready
(sessions create them only when a client asks, and the first use would otherwise pay the load)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..core.audio import SESSION_RATE
from ..engines.base import RehearsalStep
from .echo import EchoCanceller
from .noise import NoiseSuppressor

APPEND_SAMPLES = SESSION_RATE * 20 // 1000


def _appends(audio: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    return [audio[i:i + APPEND_SAMPLES] for i in range(0, audio.size - APPEND_SAMPLES + 1, APPEND_SAMPLES)]


async def _echo(audio: npt.NDArray[np.int16]) -> dict[str, Any]:
    aec = EchoCanceller(SESSION_RATE)  # first use imports livekit (~0.4 s, on the event loop)
    aec.far(audio, 0)
    chunks = _appends(audio)
    for i, chunk in enumerate(chunks):
        await aec.near_async(chunk, i * APPEND_SAMPLES, "_warmup")
    return {"appends": len(chunks)}


async def _noise(audio: npt.NDArray[np.int16]) -> dict[str, Any]:
    ns = NoiseSuppressor()
    chunks = _appends(audio)
    for chunk in chunks:
        await ns.process_async(chunk, "_warmup")
    return {"appends": len(chunks)}


INPUT_REHEARSAL: tuple[RehearsalStep, ...] = (("echo_cancellation", _echo), ("noise_suppression", _noise))
