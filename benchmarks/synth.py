"""Synthetic test speech and noise for the offline benchmarks (no corpus can be downloaded here).

Voices: Piper en_US-joe-medium (the closest thing to natural speech available offline) and
Debian espeak-ng (`apt-get install -y espeak-ng`), both resampled to 16 kHz float32 (or the
`rate` asked for; benchmarks/speech_set.py renders its voices at 24 kHz).
Noises are generated with numpy from a fixed seed, so every run sees the same audio.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

F32 = npt.NDArray[np.float32]
RATE = 16000


@functools.cache
def piper_voice() -> Any:
    """The joe voice, patched in memory to output phoneme durations (see engines/piper/alignment.py)."""
    from livevox.engines.piper.alignment import load_piper_voice_with_alignment

    return load_piper_voice_with_alignment(None)


def piper_chunks(text: str, length_scale: float | None = None) -> list[Any]:
    from piper.config import SynthesisConfig

    cfg = SynthesisConfig(length_scale=length_scale)
    return list(piper_voice().synthesize(text, cfg, include_alignments=True))


def piper_say(text: str, length_scale: float | None = None, rate: int = RATE) -> F32:
    chunks = piper_chunks(text, length_scale)
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return resample(audio, chunks[0].sample_rate, rate)


def espeak_say(text: str, voice: str = "en-us", wpm: int = 150, ssml: bool = False, rate: int = RATE) -> F32:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-w", f.name]
        if ssml:
            cmd.append("-m")
        subprocess.run([*cmd, text], check=True, capture_output=True)
        with wave.open(f.name) as w:
            native = w.getframerate()
            audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    return resample(audio, native, rate)


def resample(audio: F32, rate: int, to: int = RATE) -> F32:
    if rate == to:
        return audio.astype(np.float32)
    out: F32 = soxr.resample(audio, rate, to, quality="HQ").astype(np.float32)
    return out


def to16k(audio: F32, rate: int) -> F32:
    return resample(audio, rate, RATE)


def trim(audio: F32, thresh: float = 0.01) -> F32:
    idx = np.nonzero(np.abs(audio) > thresh)[0]
    return audio[idx[0] : idx[-1] + 1] if idx.size else audio[:0]


def silence(seconds: float) -> F32:
    return np.zeros(int(seconds * RATE), np.float32)


def rms(x: F32) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def active_rms(x: F32) -> float:
    """RMS over the 20 ms frames louder than -40 dB of the peak frame (speech level, pauses excluded)."""
    n = len(x) // 320 * 320
    frames = np.sqrt(np.mean(np.square(x[:n].reshape(-1, 320), dtype=np.float64), axis=1))
    keep = frames > frames.max() * 0.01
    return float(np.sqrt(np.mean(frames[keep] ** 2)))


def scale_to_dbfs(x: F32, dbfs: float) -> F32:
    return (x * (10 ** (dbfs / 20) / max(active_rms(x), 1e-9))).astype(np.float32)


# ---------------------------------------------------------------- noises


def noise(kind: str, seconds: float, seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
        spec /= np.sqrt(f) if kind == "pink" else f
        x = np.fft.irfft(spec, n)
    elif kind == "hum":  # fan/HVAC: mains harmonics plus low-passed rumble
        t = np.arange(n) / RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in range(1, 8))
        x = x + 0.5 * noise("brown", seconds, seed + 1)
    elif kind == "babble":  # cafe: four overlapping espeak talkers, far away
        lines = [
            "the quarterly numbers look better than we expected this time",
            "did you see the game last night it went into overtime",
            "I will have the soup and a small salad please",
            "we should leave before the traffic gets really bad",
        ]
        voices = ["en-us", "en-gb", "en-us+f2", "en-gb+m3"]
        x = np.zeros(n)
        for i, (line, v) in enumerate(zip(lines, voices, strict=True)):
            talk = espeak_say(line, v, 160)
            talk = np.tile(talk, int(np.ceil(n / len(talk))) + 1)
            off = (i * 3217) % len(talk)
            x += talk[off : off + n]
    elif kind == "clicks":  # keyboard: short decaying broadband bursts at random times
        x = 0.02 * rng.standard_normal(n)
        env = np.exp(-np.arange(240) / 30.0)
        for at in rng.integers(0, n - 240, size=int(seconds * 6)):
            x[at : at + 240] += rng.standard_normal(240) * env * rng.uniform(0.5, 1.0)
    else:
        raise ValueError(kind)
    x = np.asarray(x, np.float64)
    return (x / (rms(x.astype(np.float32)) + 1e-12)).astype(np.float32)


def mix_at_snr(speech: F32, noise_: F32, snr_db: float) -> tuple[F32, F32]:
    """(mixture, scaled noise): noise scaled so active speech RMS / noise RMS = snr_db."""
    nz = noise_[: len(speech)]
    nz = (nz * (active_rms(speech) / (rms(nz) * 10 ** (snr_db / 20)))).astype(np.float32)
    return (speech + nz).astype(np.float32), nz
