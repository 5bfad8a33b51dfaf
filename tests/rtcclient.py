"""The aiortc client for livevox's two WebRTC doors, as the tests and benchmarks use it.

The client itself is the product's (`livevox.client.webrtc`, also behind `livevox call --webrtc`);
here it gathers host candidates on 127.0.0.1 only (ICE servers stay empty), plus WAV and tone
helpers at the microphone's 48 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import support_audio
from livevox.client.webrtc import LOUD_RMS, VL_CALLS, MicTrack, PacedAudioTrack, Received
from livevox.client.webrtc import RtcClient as _ProductRtcClient
from support_audio import FIXTURES, Int16

__all__ = ["FIXTURES", "LOUD_RMS", "VL_CALLS", "MicTrack", "PacedAudioTrack", "Received", "RtcClient", "load_wav",
           "silence", "tone"]

MIC_RATE = 48000  # the defaults here are the microphone track's rate, not the WebSocket's 24 kHz


def load_wav(path: Path | str, rate: int = MIC_RATE) -> Int16:
    return support_audio.load_pcm(path, rate)


def tone(seconds: float, rate: int = MIC_RATE, amp: int = 8000, freq: float = 220.0) -> Int16:
    return support_audio.tone(seconds, rate, amp, freq)


def silence(seconds: float, rate: int = MIC_RATE) -> Int16:
    return support_audio.silence(seconds, rate)


@dataclass
class RtcClient(_ProductRtcClient):
    """Loopback only: host candidates on 127.0.0.1, whatever other interfaces the machine has."""

    host_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
