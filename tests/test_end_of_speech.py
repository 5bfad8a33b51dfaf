"""Where a turn's speech ends (issue 9, point 1): silence is counted from the acoustic end of
speech, not from the VAD's later fall, and a turn is transcribed up to that end plus
`stt.tail_ms`, the same at speculation and at commit, and for manual commits.

A real VAD's probability stays high a frame or three after the sound stops (Silero: 30-150 ms
on the benchmark voices), so `LaggingVAD`, a scripted stand-in named as one, holds its speech
probability for three frames after the scripted RMS VAD's own decision falls.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from livevox.core.audio import SESSION_RATE, last_loud_sample, speech_tail_end
from livevox.engines.scripted import ScriptedSTT, ScriptedVADStream
from livevox.realtime.speech_segmenter import END_LOOKBACK_MS
from session_harness import feed, new_session, settle, speech, transport_of
from support_audio import silence

FRAME = 512
LAG_FRAMES = 3


class LaggingVAD(ScriptedVADStream):
    """Scripted stand-in: the RMS VAD, but speech lingers LAG_FRAMES frames after it stops."""

    def __init__(self) -> None:
        super().__init__(0.02)
        self._hold = 0

    async def probabilities(self, audio: npt.NDArray[np.float32], session_id: str) -> list[float]:
        out = []
        for p in await super().probabilities(audio, session_id):
            self._hold = LAG_FRAMES if p >= 0.5 else max(0, self._hold - 1)
            out.append(1.0 if p >= 0.5 or self._hold > 0 else 0.0)
        return out


def test_last_loud_sample_and_the_tail_cut() -> None:
    loud = (np.sin(np.arange(8000) / 5) * 8000).astype(np.int16)
    quiet = (np.sin(np.arange(1600) / 5) * 80).astype(np.int16)  # -40 dB: below the floor
    pcm = np.concatenate([loud, quiet, np.zeros(8000, np.int16)])
    assert last_loud_sample(pcm) == 8000
    assert speech_tail_end(pcm, 3200) == 8000 + 3200
    assert speech_tail_end(pcm[:9000], 3200) == 9000  # the tail is cut short by the audio's end
    assert last_loud_sample(np.zeros(4000, np.int16)) == 0
    assert speech_tail_end(np.zeros(4000, np.int16), 3200) == 4000  # nothing to cut by
    noisy = pcm + (np.random.default_rng(1).standard_normal(pcm.size) * 330).astype(np.int16)
    assert last_loud_sample(noisy) == pcm.size  # noise within 35 dB: no end found


async def test_silence_is_counted_from_the_acoustic_end_not_the_vads_fall() -> None:
    s = await new_session()
    s.turns._vad = LaggingVAD()
    ScriptedSTT.script(["what is the capital of france"])
    await feed(s, speech(1.0))
    await feed(s, silence(1.0))
    await settle(s)
    stopped = transport_of(s).of("input_audio_buffer.speech_stopped")
    assert len(stopped) == 1, transport_of(s).types()
    silence_ms = s.config["turn_detection"]["silence_duration_ms"]
    # The tone ends at 1000 ms; the VAD says so 96 ms later. The window closes 500 ms after the
    # sound, to within one VAD frame (32 ms), not 500 ms after the VAD's fall.
    assert 1000 + silence_ms <= stopped[0]["audio_end_ms"] <= 1000 + silence_ms + 32, stopped
    # One transcription, of the speech plus its tail, adopted at commit.
    tail = s.settings.stt.tail_ms * SESSION_RATE // 1000
    assert list(ScriptedSTT.heard) == [SESSION_RATE + tail]


async def test_without_an_acoustic_end_the_vad_decides() -> None:
    # Noise under the VAD's threshold but within 35 dB of the speech: no acoustic end is found,
    # so the silence starts where the VAD heard it, and the turn still ends.
    s = await new_session()
    s.turns._vad = LaggingVAD()
    rng = np.random.default_rng(7)
    pcm = np.concatenate([speech(1.0), silence(1.0)])
    pcm = pcm + (rng.standard_normal(pcm.size) * 330).astype(np.int16)
    await feed(s, pcm)
    await settle(s)
    stopped = transport_of(s).of("input_audio_buffer.speech_stopped")
    assert len(stopped) == 1
    vad_fall_ms = (1000 // 32 + 1 + LAG_FRAMES) * 32
    silence_ms = s.config["turn_detection"]["silence_duration_ms"]
    assert stopped[0]["audio_end_ms"] >= vad_fall_ms + silence_ms - 32, stopped
    assert END_LOOKBACK_MS >= LAG_FRAMES * 32  # the lookback covers the stand-in's lag


async def test_a_manual_commit_is_transcribed_up_to_its_sound_and_the_tail() -> None:
    s = await new_session()
    await s.handle_event({"type": "session.update", "session": {"turn_detection": None}})
    await feed(s, speech(1.0))
    await feed(s, silence(2.0))  # the client commits two seconds later
    await s.handle_event({"type": "input_audio_buffer.commit"})
    await settle(s)
    tail = s.settings.stt.tail_ms * SESSION_RATE // 1000
    assert list(ScriptedSTT.heard) == [SESSION_RATE + tail]
    # The item keeps all of the committed audio, silence included.
    item = transport_of(s).of("input_audio_buffer.committed")[0]["item_id"]
    held = s.conversation.get(item).input_audio
    assert held is not None and held.size >= 2.9 * SESSION_RATE  # (less the resampler's delay)
