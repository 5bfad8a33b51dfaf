"""The aiortc client for livevox's two WebRTC doors, as the tests and benchmarks use it.

The client itself is the product's (`livevox.client.webrtc`, also behind `livevox call --webrtc`);
here it gathers host candidates on 127.0.0.1 only (ICE servers stay empty), plus WAV and tone
helpers at the microphone's 48 kHz.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from livevox.client.webrtc import LOUD_RMS, VL_CALLS, MicTrack, PacedAudioTrack, Received
from livevox.client.webrtc import RtcClient as _ProductRtcClient

__all__ = ["FIXTURES", "LOUD_RMS", "VL_CALLS", "MicTrack", "PacedAudioTrack", "Received", "RtcClient", "load_wav",
           "silence", "tone"]

FIXTURES = Path(__file__).parent / "fixtures"


def load_wav(path: Path | str, rate: int = 48000) -> np.ndarray:
    with wave.open(str(path)) as w:
        src = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() == 2:
            pcm = pcm.reshape(-1, 2).mean(axis=1).astype(np.int16)
    out: np.ndarray = soxr.resample(pcm, src, rate).astype(np.int16) if src != rate else pcm.astype(np.int16)
    return out


def tone(seconds: float, rate: int = 48000, amp: int = 8000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate))
    return (np.sin(2 * np.pi * freq * t / rate) * amp).astype(np.int16)


def silence(seconds: float, rate: int = 48000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


@dataclass
class RtcClient(_ProductRtcClient):
    """Loopback only: host candidates on 127.0.0.1, whatever other interfaces the machine has."""

    host_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
