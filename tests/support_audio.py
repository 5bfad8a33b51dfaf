"""Audio the tests share: WAV files as int16 samples, espeak-ng speech, tones and silence.

Samples are int16 (the wire format) at the rate asked for; `to_float` gives the engines' float32.
Resampling is soxr's default (HQ), as the server's own `livevox.core.audio.resample`.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import pytest
import soxr

FIXTURES = Path(__file__).parent / "fixtures"

Int16 = npt.NDArray[np.int16]
Float32 = npt.NDArray[np.float32]


def read_wav(source: Path | str | BinaryIO) -> tuple[Int16, int]:
    """A 16-bit WAV's samples and its rate: shape (frames,) if mono, else (frames, channels)."""
    with wave.open(str(source) if isinstance(source, Path) else source) as w:
        # Every caller reads the frames as int16: another width would be silently misread.
        if w.getsampwidth() != 2:
            raise ValueError(f"{source}: {8 * w.getsampwidth()}-bit samples, not 16-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16, copy=False)
    return (pcm if channels == 1 else pcm.reshape(-1, channels)), rate


def resample(pcm: Int16, src: int, rate: int) -> Int16:
    if src == rate:
        return pcm
    out: Int16 = soxr.resample(pcm, src, rate).astype(np.int16)
    return out


def load_pcm(source: Path | str | BinaryIO, rate: int) -> Int16:
    """A WAV file as mono int16 at `rate` (channels averaged)."""
    pcm, src = read_wav(source)
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1).astype(np.int16)
    return resample(pcm, src, rate)


def fixture(name: str, rate: int) -> Int16:
    """tests/fixtures/`name` (16 kHz mono, tests/fixtures/make_fixtures.sh) as int16 at `rate`."""
    return load_pcm(FIXTURES / name, rate)


def to_float(pcm: Int16) -> Float32:
    out: Float32 = pcm.astype(np.float32) / 32768.0
    return out


def fixture_f32(name: str, rate: int = 16000) -> Float32:
    """tests/fixtures/`name` as the engines' float32 in [-1, 1), at their 16 kHz by default."""
    return to_float(fixture(name, rate))


@functools.cache
def _espeak(text: str, voice: str, wpm: int, rate: int) -> Int16:
    if shutil.which("espeak-ng") is None:
        # CI installs it (make apt-test): a missing one is a broken setup, not a reason to skip.
        pytest.fail("espeak-ng is not installed: run `make apt-test` (or apt-get install -y espeak-ng)",
                    pytrace=False)
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", f.name, text], check=True)
        return load_pcm(f.name, rate)


def espeak(text: str, voice: str = "en-us", wpm: int = 150, rate: int = 16000) -> Int16:
    """espeak-ng speech (a different voice from the agent's Piper voice), mono int16 at `rate`."""
    return _espeak(text, voice, wpm, rate).copy()  # a copy: the cached one stays as made


def tone(seconds: float, rate: int = 24000, amp: int = 8000, freq: float = 220.0) -> Int16:
    t = np.arange(int(seconds * rate))
    out: Int16 = (np.sin(2 * np.pi * freq * t / rate) * amp).astype(np.int16)
    return out


def silence(seconds: float, rate: int = 24000) -> Int16:
    return np.zeros(int(seconds * rate), np.int16)
