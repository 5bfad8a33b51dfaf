"""Turn-taking: from speech probabilities to the session's turn events.

`TurnTaking` frames the cleaned 16 kHz audio for the VAD, runs the speech segmenter
(`turn.SpeechSegmenter`) and the end-of-turn policy (`semantic_turn.EndOfTurnPolicy`, which consults the
end-of-turn model in the semantic modes), and decides, in this order of events:

- `speech_started`: the user speaks. Over an audible answer that is a barge-in, at once, or
  (`remove_filler_words`) once the utterance is known to be more than a backchannel ("mm-hmm",
  "okay");
- a pause: speculation starts. The turn's audio up to the end of speech plus `stt.tail_ms` is
  transcribed, and a gated response may start computing; nothing is visible yet. Silence is
  counted from the acoustic end of speech (the VAD's probability falls later than the sound);
- `speech_stopped`: the turn ends. The host commits it and adopts the speculation if the
  conversation did not change meanwhile; speech resuming in the pause drops it.

It owns no conversation or response: it asks its host (the session, `TurnHost`) to emit
events, to barge in, to transcribe, to start a speculative response, and to commit a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..core import audio as audio_codec
from ..core.audio import SESSION_RATE, last_loud_sample, speech_tail_end
from ..core.ids import new_id
from ..engines.base import TurnEngine, VADStream
from ..settings import DEFAULT_BACKCHANNEL_MAX_MS, DEFAULT_BACKCHANNELS
from .end_of_turn import TRANSCRIPT_WAIT_MS, Decision, EndOfTurnPolicy, wants_text
from .filler import is_backchannel
from .input_audio import InputAudio
from .metrics import TurnTimings
from .response import ResponseRun
from .speech_segmenter import Paused, Resumed, SpeechSegmenter, SpeechStarted, SpeechStopped
from .turn_pieces import TurnPieces

#: The end-of-turn model hears at most the utterance's last 8 s.
TURN_MODEL_SAMPLES = 8 * SESSION_RATE
#: The acoustic end of speech is found relative to the loudest sound of the last 10 s.
LOUDNESS_WINDOW = 10 * SESSION_RATE


@dataclass
class Speculation:
    """Work started when the VAD first hears silence, before the end-of-turn decision."""

    stt: asyncio.Future[str]
    response: ResponseRun | None
    conv_version: int
    heard: tuple[int, int]  # the transcribed audio: clock sample of its start, and its length
    eot: asyncio.Future[float | None] | None = None  # the LLM's end-of-turn probability, if asked


#: The LLM's end-of-turn text signal: (transcript, session id) -> P(end of message) or None.
TextProbe = Callable[[str, str], Awaitable[float | None]]


async def discard(spec: Speculation | None) -> None:
    """Drop a speculation without a trace: its response, and its transcription if still running."""
    if spec is None:
        return
    if spec.eot is not None and not spec.eot.done():
        spec.eot.cancel()  # cancels the probe too, or drops it from the LLM queue
    if spec.response is not None:
        await spec.response.discard()
    if not spec.stt.done():
        spec.stt.cancel()
        with contextlib.suppress(BaseException):
            await spec.stt


class TurnHost(Protocol):
    """What turn-taking needs from the session."""

    id: str

    async def emit(self, event: dict[str, Any]) -> None: ...

    def conversation_version(self) -> int: ...

    def answer_audible(self) -> bool:
        """An answer is being generated, or its audio is still playing out of the transport."""
        ...

    async def barge_in(self, auto_truncate: bool) -> None: ...

    async def transcribe_text(self, audio: npt.NDArray[np.int16], *, over_answer: bool = False,
                              background: bool = False) -> str:
        """The transcript of `audio`; `over_answer`: said while the agent's answer plays;
        `background`: a piece of a turn still in progress (nobody waits for it yet)."""
        ...

    def speculate(self, stt: asyncio.Future[str]) -> ResponseRun | None:
        """Start a gated response on the transcript `stt` will give, or None (create_response
        off, or an answer still running)."""
        ...

    def prefill(self, text: Callable[[], Awaitable[str]]) -> None:
        """Prefill the LLM with the answer's prompt as if the turn were `text()`, the words of its
        pieces so far, so that the answer at its end only evaluates the rest (or nothing: no
        automatic response, an answer running, or an engine without a prompt cache)."""
        ...

    async def commit_turn(self, item_id: str, spec: Speculation | None, timings: TurnTimings,
                          stt_end: int) -> None: ...


class TurnTaking:
    def __init__(self, host: TurnHost, audio: InputAudio, vad: VADStream, turn_model: TurnEngine,
                 turn_detection: dict[str, Any] | None, tail_ms: int, text_probe: TextProbe | None = None,
                 transcript_wait_ms: int = TRANSCRIPT_WAIT_MS,
                 backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS,
                 backchannel_max_ms: int = DEFAULT_BACKCHANNEL_MAX_MS, piece_s: float = 0.0) -> None:
        self.host = host
        self.pieces = TurnPieces(piece_s)
        self._backchannels = backchannels
        self._backchannel_max = backchannel_max_ms * SESSION_RATE // 1000
        self._text_probe = text_probe
        self.audio = audio
        self._vad = vad
        self._model = turn_model
        self._tail_ms = tail_ms
        self.turn_detection = turn_detection
        self.policy = EndOfTurnPolicy(turn_detection, transcript_wait_ms=transcript_wait_ms)
        self.detector = SpeechSegmenter(self._detector_cfg(turn_detection), vad.frame_samples)
        self.detector.acoustic_end = self._acoustic_end
        # semantic end of turn: where the current silence began, and the policy's plan for it
        self._silence_start: int | None = None
        self._decision: Decision | None = None
        self._speech_start = 0
        self._speech_onset = 0
        self._barge_pending = False  # remove_filler_words: barge-in waits to hear what was said
        self._frame_tail = np.zeros(0, np.int16)  # audio short of a whole VAD frame
        self._frame_tail_start = 0
        self.speech_item: str | None = None
        self.speech_started_at = 0.0  # monotonic time of the last speech_started (the idle timeout's)
        self.timings: TurnTimings | None = None
        self.spec: Speculation | None = None

    # ------------------------------------------------------------ configuration

    async def configure(self, td: dict[str, Any] | None) -> None:
        """A new `turn_detection` (session.update)."""
        self.turn_detection = td
        self.policy.configure(td)
        self._silence_start, self._decision = None, None
        if td is None:
            self.detector.reset()
            await self.drop_speculation()
        else:
            self.detector.configure(self._detector_cfg(td))

    def _detector_cfg(self, td: dict[str, Any] | None) -> dict[str, Any]:
        cfg = {**(td or {}), "pause_after_ms": self._tail_ms}
        # In the semantic modes the policy ends turns; the detector only finds speech and pauses.
        if td is not None and self.policy.uses_model:
            cfg["silence_duration_ms"] = 60_000
        return cfg

    def stt_end(self, speech_end: int) -> int:
        """Where a VAD turn's transcribed audio ends at the latest: the end of speech plus its
        tail (the pause comes when that has arrived). Speculation and commit both cut here."""
        return speech_end + self.detector.pause_after

    def stt_cut(self, audio: npt.NDArray[np.int16]) -> int:
        """How much of a turn's audio is transcribed: up to the acoustic end of its speech plus
        `stt.tail_ms`. Speculation and commit both cut so, so the committed turn's transcript is
        the speculative one whenever the silence window added nothing audible."""
        return speech_tail_end(audio, self._tail_ms * SESSION_RATE // 1000)

    def _acoustic_end(self, upto: int) -> int:
        """The clock sample where the buffered speech before `upto` last was loud (`upto` if the
        buffer holds none)."""
        start = max(self.audio.start, self._speech_start, upto - LOUDNESS_WINDOW)
        pcm = self.audio.take(self.audio.start)[start - self.audio.start: upto - self.audio.start]
        end = last_loud_sample(pcm)
        return upto if end == 0 else start + end

    # ------------------------------------------------------------ audio

    async def heard(self, pcm: npt.NDArray[np.int16], start: int) -> None:
        """Cleaned audio at clock position `start`, already buffered."""
        await self._run_vad(pcm, start)
        if not self.detector.speaking and self.speech_item is None:
            self.audio.keep_last(self.detector.prefix + self._vad.frame_samples * 2)

    async def _run_vad(self, pcm: npt.NDArray[np.int16], start: int) -> None:
        frame = self._vad.frame_samples
        if self._frame_tail.size == 0:
            self._frame_tail_start = start
        tail = np.concatenate([self._frame_tail, pcm]) if self._frame_tail.size else pcm
        n = tail.size // frame * frame
        self._frame_tail = tail[n:]
        if n == 0:
            return
        first = self._frame_tail_start
        self._frame_tail_start = first + n
        probs = await self._vad.probabilities(audio_codec.to_float(tail[:n]), self.host.id)
        for ev in self.detector.process(probs, first):
            if isinstance(ev, SpeechStarted):
                await self._speech_started(ev)
            elif isinstance(ev, Paused):
                await self._paused(ev)
            elif isinstance(ev, Resumed):
                self.policy.reset()
                self._silence_start, self._decision = None, None
                await self.drop_speculation()
            elif isinstance(ev, SpeechStopped):
                await self._speech_stopped(ev)
        now = first + n
        if (self._barge_pending and self.detector.speaking and not self.detector.in_pause
                and now - self._speech_onset >= self._backchannel_max):
            await self._barge_in_now()  # too long to be a backchannel
        if self._decision is not None and self._silence_start is not None:
            await self._semantic_step(now)

    async def _semantic_step(self, now: int) -> None:
        """Advance the end-of-turn policy through the current silence (semantic modes)."""
        assert self._decision is not None and self._silence_start is not None
        silence_ms = (now - self._silence_start) * 1000 // SESSION_RATE
        decision = self._decision
        spec = self.spec
        if self.policy.awaiting_transcript and spec is not None and spec.stt.done():
            if spec.stt.cancelled() or spec.stt.exception():
                self.policy.no_transcript()
                decision = self.policy.on_silence(silence_ms, None)
            else:
                decision = self.policy.on_silence(silence_ms, None, spec.stt.result())
        if self.policy.awaiting_text and spec is not None and spec.eot is not None and spec.eot.done():
            decision = self.policy.on_text(silence_ms, None if spec.eot.cancelled() else spec.eot.result())
        while not decision.end_turn:
            if decision.rescore_after_ms is not None and silence_ms >= decision.rescore_after_ms:
                audio = self.audio.take(self.audio.start)
                score = await self._model.score(audio_codec.to_float(audio[-TURN_MODEL_SAMPLES:]), self.host.id)
                decision = self.policy.on_silence(silence_ms, score)
                continue
            if decision.end_at_ms is not None and silence_ms >= decision.end_at_ms:
                decision = self.policy.on_silence(silence_ms, None)
                continue
            break
        self._decision = decision
        if decision.end_turn:
            end = self._silence_start
            self._silence_start, self._decision = None, None
            self.detector.reset()
            await self._speech_stopped(SpeechStopped(end, now))

    # ------------------------------------------------------------ the turn's events

    async def _speech_started(self, ev: SpeechStarted) -> None:
        self.audio.take(ev.start_sample)
        self.pieces.forget()
        self.speech_item = new_id("item")
        self.speech_started_at = time.monotonic()
        self._speech_start = ev.start_sample
        self._speech_onset = ev.onset_sample  # a backchannel's length counts from here, not the padding
        self.timings = TurnTimings()
        self.policy.reset()
        self._silence_start, self._decision = None, None
        await self.host.emit({"type": "input_audio_buffer.speech_started",
                              "audio_start_ms": ev.start_sample * 1000 // SESSION_RATE, "item_id": self.speech_item})
        td = self.turn_detection or {}
        if td.get("interrupt_response", True) and self.host.answer_audible():
            if td.get("remove_filler_words"):
                self._barge_pending = True  # decided once we know it is more than "mm-hmm"
            else:
                await self.host.barge_in(td.get("auto_truncate", False))

    async def _barge_in_now(self) -> None:
        self._barge_pending = False
        if self.host.answer_audible():
            await self.host.barge_in((self.turn_detection or {}).get("auto_truncate", False))

    async def _paused(self, ev: Paused) -> None:
        await self.drop_speculation()
        if self.policy.uses_model:
            self._silence_start, self._decision = ev.end_sample, self.policy.start()
        audio = self.audio.take(self.audio.start, self.stt_end(ev.end_sample))
        audio = audio[: self.stt_cut(audio)]
        if audio.size == 0:
            return
        start = self.audio.start
        with (self.timings or TurnTimings()).recording():  # the STT jobs are the turn's
            if not self._barge_pending and self.pieces.due(start, start + audio.size):
                self.pieces.add(start, audio, lambda pcm: self.host.transcribe_text(pcm, background=True))
                self.host.prefill(lambda: self.pieces.text(start))
            stt = asyncio.ensure_future(self.transcription(start, audio, over_answer=self._barge_pending))
        self.policy.expect_transcript()
        eot = self._text_signal(stt)  # before the speculative answer, so its LLM job queues first
        self.spec = Speculation(stt, self.host.speculate(stt), self.host.conversation_version(),
                                (start, audio.size), eot)

    def transcription(self, start: int, audio: npt.NDArray[np.int16], *,
                      over_answer: bool = False) -> Awaitable[str]:
        """The transcript of the turn's `audio` (from clock sample `start`), reusing the pieces
        of it already transcribed (turn_pieces.py)."""
        return self.pieces.transcription(
            start, audio, lambda pcm: self.host.transcribe_text(pcm, over_answer=over_answer))

    def _text_signal(self, stt: asyncio.Future[str]) -> asyncio.Future[float | None] | None:
        """The LLM's end-of-turn probability of the speculative transcript, asked as soon as the
        transcript exists, or None when the mode does not use it. Skipped (result None, no LLM
        job) when the words tell already: nothing said, only fillers, a dangling last word."""
        probe = self._text_probe
        if probe is None or not (self.policy.uses_model and self.policy.cfg.text):
            return None
        result: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()

        def settle(task: asyncio.Future[float | None]) -> None:
            if not result.done():
                result.set_result(None if task.cancelled() or task.exception() is not None else task.result())

        def on_transcript(done: asyncio.Future[str]) -> None:
            if result.done():  # dropped meanwhile
                return
            text = None if done.cancelled() or done.exception() is not None else done.result()
            if not wants_text(text):
                result.set_result(None)
                return
            assert text is not None
            # Created in the transcript's own callback, ahead of the speculative response's wake-up.
            task = asyncio.ensure_future(probe(text, self.host.id))
            task.add_done_callback(settle)
            result.add_done_callback(lambda _: task.cancel())

        stt.add_done_callback(on_transcript)
        self.policy.expect_text()
        return result

    async def drop_speculation(self) -> None:
        spec, self.spec = self.spec, None
        await discard(spec)

    async def _speech_stopped(self, ev: SpeechStopped) -> None:
        item_id = self.speech_item or new_id("item")
        self.speech_item = None
        timings = self.timings or TurnTimings()
        self.timings = None
        now = time.monotonic()
        timings.mark("speech_end", now - (self.audio.clock - ev.end_sample) / SESSION_RATE)
        timings.mark("eot_decision", now)
        await self.host.emit({"type": "input_audio_buffer.speech_stopped",
                              "audio_end_ms": ev.decision_sample * 1000 // SESSION_RATE, "item_id": item_id})
        if self._barge_pending:
            self._barge_pending = False
            if await self._backchannel():
                # "mm-hmm", "okay" while the agent talks: no barge-in and no turn.
                await self.drop_speculation()
                await self.pieces.drop()
                self.audio.clear()
                return
            await self._barge_in_now()
        spec, self.spec = self.spec, None
        if spec is not None and spec.conv_version != self.host.conversation_version():
            await discard(spec)  # the conversation changed under it: its answer is stale
            spec = None
        await self.host.commit_turn(item_id, spec, timings, self.stt_end(ev.end_sample))

    async def _backchannel(self) -> bool:
        spec = self.spec
        if spec is not None:
            try:
                text = await asyncio.shield(spec.stt)
            except Exception:
                return False
        else:
            text = await self.host.transcribe_text(self.audio.take(self.audio.start), over_answer=True)
        return is_backchannel(text, self._backchannels)

    # ------------------------------------------------------------ the client's own buffer events

    async def manual_commit(self) -> tuple[str, TurnTimings]:
        """`input_audio_buffer.commit`: the turn so far ends now; its item id and timings."""
        await self.drop_speculation()
        item_id = self.speech_item or new_id("item")
        self.speech_item = None
        self.detector.reset()
        return item_id, self.timings or TurnTimings()

    async def clear(self) -> None:
        """`input_audio_buffer.clear`: forget the turn in progress."""
        await self.drop_speculation()
        await self.pieces.drop()
        self.detector.reset()
        self.speech_item = None

    async def close(self) -> None:
        """The session ends: its speculation and the pieces still being transcribed stop."""
        await self.drop_speculation()
        await self.pieces.drop()
