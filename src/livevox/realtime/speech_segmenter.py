"""Server VAD turn detection: speech probabilities per frame in, turn events out.

Works on the session's 16 kHz audio clock (sample counts), so `audio_start_ms` and
`audio_end_ms` are exact whatever the transport. It also reports a *pause*, the first
moment of silence after speech, so that transcription and the LLM can start speculatively
while the silence window runs; a *resume* withdraws it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.audio import SESSION_RATE


@dataclass(slots=True)
class SpeechStarted:
    start_sample: int  # includes prefix padding
    onset_sample: int = 0  # where the VAD first heard the speech (no padding)


@dataclass(slots=True)
class Paused:
    end_sample: int  # where speech ended


@dataclass(slots=True)
class Resumed:
    pass


@dataclass(slots=True)
class SpeechStopped:
    end_sample: int  # where speech ended
    decision_sample: int  # when the silence window closed


TurnEvent = SpeechStarted | Paused | Resumed | SpeechStopped

#: The VAD's probability falls a frame or three after the sound does (Silero: 30-150 ms on the
#: benchmark voices), so silence is counted from the acoustic end of speech, looked for at most
#: this far before the first silent frame.
END_LOOKBACK_MS = 128


class SpeechSegmenter:
    def __init__(self, cfg: dict[str, Any], frame_samples: int) -> None:
        self.frame = frame_samples
        self.configure(cfg)
        self.speaking = False
        self._run_start: int | None = None  # first sample of the current speech run (not yet confirmed)
        self._speech_samples = 0
        self._silence_start: int | None = None
        self._paused = False
        #: clock sample -> the acoustic end of speech before it (the host reads its audio)
        self.acoustic_end: Callable[[int], int] | None = None

    def configure(self, cfg: dict[str, Any]) -> None:
        self.threshold = float(cfg.get("threshold", 0.5))
        # Hysteresis as Silero recommends: speech ends below threshold - 0.15.
        self.neg_threshold = max(0.01, self.threshold - 0.15)
        self.prefix = int(cfg.get("prefix_padding_ms", 300)) * SESSION_RATE // 1000
        self.silence = int(cfg.get("silence_duration_ms", 500)) * SESSION_RATE // 1000
        self.min_speech = int(cfg.get("speech_duration_ms", 200)) * SESSION_RATE // 1000
        # The pause (speculation starts) comes once the utterance's tail has arrived.
        self.pause_after = min(int(cfg.get("pause_after_ms", 160)) * SESSION_RATE // 1000, self.silence // 2)

    @property
    def in_pause(self) -> bool:
        """Speaking, but the latest frames were silence."""
        return self._silence_start is not None

    def reset(self) -> None:
        self.speaking = False
        self._run_start = None
        self._speech_samples = 0
        self._silence_start = None
        self._paused = False

    def _silence_began(self, at: int, end: int) -> int:
        """Where the silence that the VAD first hears in the frame [at, end) began."""
        if self.acoustic_end is None:
            return at
        earliest = at - END_LOOKBACK_MS * SESSION_RATE // 1000
        return max(earliest, min(at, self.acoustic_end(end)))

    def process(self, probs: list[float], first_sample: int) -> list[TurnEvent]:
        """`probs[i]` is the speech probability of the frame starting at first_sample + i*frame."""
        events: list[TurnEvent] = []
        for i, p in enumerate(probs):
            at = first_sample + i * self.frame
            end = at + self.frame
            if not self.speaking:
                if p >= self.threshold:
                    if self._run_start is None:
                        self._run_start = at
                        self._speech_samples = 0
                    self._speech_samples += self.frame
                    if self._speech_samples >= max(self.min_speech, self.frame):
                        self.speaking = True
                        self._silence_start = None
                        events.append(SpeechStarted(max(0, self._run_start - self.prefix), self._run_start))
                elif p < self.neg_threshold:
                    self._run_start = None
                    self._speech_samples = 0
                continue
            # speaking
            if p >= self.threshold:
                if self._paused:
                    events.append(Resumed())
                    self._paused = False
                self._silence_start = None
            elif p < self.neg_threshold or self._silence_start is not None:
                if self._silence_start is None:
                    self._silence_start = self._silence_began(at, end)
                silent_for = end - self._silence_start
                if not self._paused and silent_for >= self.pause_after:
                    self._paused = True
                    events.append(Paused(self._silence_start))
                if silent_for >= self.silence:
                    events.append(SpeechStopped(self._silence_start, end))
                    self.reset()
        return events
