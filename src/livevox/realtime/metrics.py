"""Per-turn stage timings, measured inside the server, exported as Prometheus histograms and
(opt-in) as a `livevox.turn.metrics` server event."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from ..core.executor import JOB_TIMINGS, JobTiming

#: Marks of a turn, in the order they normally happen.
STAGES = (
    "speech_end",  # last speech frame (audio clock, mapped to wall time)
    "eot_decision",  # the silence window closed: speech_stopped
    "transcript_final",
    "llm_first_token",
    "first_clause",
    "tts_first_audio",
    "first_audio_sent",
)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2, 3, 5, 10)

TURN_STAGE_SECONDS = Histogram(
    "livevox_turn_stage_seconds",
    "Time from the end of the user's speech to each stage of the turn.",
    ["stage"],
    buckets=_BUCKETS,
)
RESPONSE_FIRST_AUDIO_SECONDS = Histogram(
    "livevox_response_first_audio_seconds",
    "Time from response start (after the end-of-turn decision or response.create) to first audio sent.",
    buckets=_BUCKETS,
)
SESSIONS_ACTIVE = Gauge("livevox_sessions_active", "Open realtime sessions.", ["transport"])
SESSIONS_TOTAL = Counter("livevox_sessions_total", "Realtime sessions opened.", ["transport"])
ERRORS_TOTAL = Counter("livevox_errors_total", "Error events sent to clients.", ["code"])
RESPONSES_TOTAL = Counter("livevox_responses_total", "Responses finished.", ["status"])
LLM_PAUSES_TOTAL = Counter("livevox_llm_pauses_total",
                           "Spoken answers that stopped generating far ahead of playback, to resume later.")
LLM_YIELDS_TOTAL = Counter("livevox_llm_yields_total",
                           "Spoken answers that stopped generating while another caller's answer waited for "
                           "its first clause, to resume later.")
LLM_PROMPT_TOKENS_TOTAL = Counter("livevox_llm_prompt_tokens_total",
                                  "Prompt tokens of the answers, by whether the LLM took them from its prompt "
                                  "cache or evaluated them (a low cached share: slots evicted, prompts that differ "
                                  "early).", ["source"])


def count_prompt_tokens(prompt: int, cached: int) -> None:
    LLM_PROMPT_TOKENS_TOTAL.labels("cached").inc(cached)
    LLM_PROMPT_TOKENS_TOTAL.labels("evaluated").inc(max(0, prompt - cached))


TURNS_IN_FLIGHT = Gauge("livevox_turns_in_flight",
                        "Responses being generated now (speculative ones included): the box's load.")
_in_flight = 0


def turn_started() -> None:
    global _in_flight
    _in_flight += 1
    TURNS_IN_FLIGHT.inc()


def turn_ended() -> None:
    global _in_flight
    _in_flight -= 1
    TURNS_IN_FLIGHT.dec()


def turns_in_flight() -> int:
    """Responses being generated in this process now (admission reads it)."""
    return _in_flight


@dataclass
class TurnTimings:
    marks: dict[str, float] = field(default_factory=dict)
    response_start: float | None = None
    #: The model jobs run for this turn (core/executor.py JOB_TIMINGS): STT, LLM, each clause's TTS.
    jobs: list[JobTiming] = field(default_factory=list)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Tasks created inside record their model jobs here."""
        token = JOB_TIMINGS.set(self.jobs)
        try:
            yield
        finally:
            JOB_TIMINGS.reset(token)

    def adopt(self, turn: TurnTimings) -> None:
        """A speculative run becomes the turn's answer: the turn's marks and jobs are its own."""
        self.marks.update(turn.marks)
        self.jobs[:0] = turn.jobs

    def mark(self, stage: str, at: float | None = None) -> None:
        if stage not in self.marks:
            self.marks[stage] = time.monotonic() if at is None else at

    def relative_ms(self) -> dict[str, float]:
        base = self.marks.get("speech_end")
        if base is None:
            return {}
        return {k: round((v - base) * 1000.0, 1) for k, v in self.marks.items()}

    def jobs_ms(self) -> list[dict[str, Any]]:
        """The turn's model jobs, ms from the end of speech: when each was queued, started, ended."""
        base = self.marks.get("speech_end", self.response_start)
        if base is None:
            return []
        return [{"stage": j.stage, "queued_ms": round((j.queued - base) * 1000, 1),
                 "started_ms": round((j.started - base) * 1000, 1),
                 "finished_ms": round((j.finished - base) * 1000, 1)} for j in list(self.jobs)]

    def observe(self) -> None:
        base = self.marks.get("speech_end")
        if base is not None:
            for stage, t in self.marks.items():
                if stage != "speech_end":
                    TURN_STAGE_SECONDS.labels(stage).observe(max(0.0, t - base))
        sent = self.marks.get("first_audio_sent")
        if self.response_start is not None and sent is not None:
            RESPONSE_FIRST_AUDIO_SECONDS.observe(max(0.0, sent - self.response_start))
