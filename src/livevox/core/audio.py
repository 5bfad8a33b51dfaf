"""Audio formats on the wire: PCM16 little-endian and G.711 µ-law / A-law, resampled with soxr."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from .errors import ProtocolError

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

#: The session clock: every session hears, detects speech and transcribes at 16 kHz.
SESSION_RATE = 16000
#: Conversation items' audio and the realtime API's PCM16 default: 24 kHz.
ITEM_RATE = 24000


def _ulaw_decode_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ULAW_DEC = _ulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()


def _build_encoder(dec: Int16Array) -> npt.NDArray[np.uint8]:
    # Nearest code for every 16-bit value: exact inverse of the decode table on its own outputs.
    order = np.argsort(dec.astype(np.int32), kind="stable")
    sorted_vals = dec[order].astype(np.int32)
    grid = np.arange(-32768, 32768, dtype=np.int32)
    idx = np.clip(np.searchsorted(sorted_vals, grid), 1, 255)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    pick = np.where(np.abs(grid - left) <= np.abs(right - grid), idx - 1, idx)
    return order[pick].astype(np.uint8)


_ULAW_ENC = _build_encoder(_ULAW_DEC)
_ALAW_ENC = _build_encoder(_ALAW_DEC)


def decode(data: bytes, codec: str) -> Int16Array:
    """Wire bytes -> int16 samples. Raises ProtocolError on odd-length PCM16."""
    if codec == "pcm16":
        if len(data) % 2:
            raise ProtocolError(
                "invalid_audio", "PCM16 audio must have an even number of bytes.", param="audio"
            )
        return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
    table = _ULAW_DEC if codec == "g711_ulaw" else _ALAW_DEC
    return table[np.frombuffer(data, dtype=np.uint8)]


def encode(samples: Int16Array, codec: str) -> bytes:
    if codec == "pcm16":
        return samples.astype("<i2", copy=False).tobytes()
    table = _ULAW_ENC if codec == "g711_ulaw" else _ALAW_ENC
    return table[samples.astype(np.int32) + 32768].tobytes()


def to_float(samples: Int16Array) -> Float32Array:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32, copy=False)


def to_int16(samples: Float32Array) -> Int16Array:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


class StreamResampler:
    """Streaming resampler (soxr) with a pass-through fast path when rates match."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._rs = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, samples: Int16Array, last: bool = False) -> Int16Array:
        if self._rs is None:
            return samples
        out: Int16Array = self._rs.resample_chunk(samples, last=last)
        return out

    def flush(self) -> Int16Array:
        return self.process(np.zeros(0, np.int16), last=True)


def resample(samples: Int16Array, in_rate: int, out_rate: int) -> Int16Array:
    if in_rate == out_rate or samples.size == 0:
        return samples
    out: Int16Array = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out


#: Where speech ends, acoustically: the last 10 ms block within this many dB of the loudest.
SPEECH_FLOOR_DB = 35.0
LEVEL_BLOCK = SESSION_RATE // 100


def last_loud_sample(pcm: Int16Array, floor_db: float = SPEECH_FLOOR_DB, block: int = LEVEL_BLOCK) -> int:
    """The end (sample index) of the last `block` whose RMS is within `floor_db` of the loudest
    block's; 0 for digital silence. A trailing partial block counts as a block."""
    if pcm.size == 0:
        return 0
    n = -(-pcm.size // block)
    padded = np.zeros(n * block, np.float32)
    padded[: pcm.size] = pcm
    rms = np.sqrt(np.mean(np.square(padded.reshape(n, block)), axis=1))
    peak = float(rms.max())
    if peak < 1.0:  # under one LSB: digital silence
        return 0
    loud = np.flatnonzero(rms >= peak * 10 ** (-floor_db / 20))
    return min(pcm.size, (int(loud[-1]) + 1) * block)


def speech_tail_end(pcm: Int16Array, tail_samples: int, floor_db: float = SPEECH_FLOOR_DB,
                    block: int = LEVEL_BLOCK) -> int:
    """Where to cut `pcm` for transcription: the acoustic end of its speech plus `tail_samples`
    (the quiet end of the last word lies there). The rest is silence, and how much of it Whisper
    hears would change its greedy decode, so a turn is transcribed the same whether its silence
    window was 0.5 s or 5 s."""
    end = last_loud_sample(pcm, floor_db, block)
    return pcm.size if end == 0 else min(pcm.size, end + tail_samples)
