"""Fallback chains: one stage served by engines A, B, ... tried in order.

At start, every member loads and warms up. A member that cannot load (missing model file,
missing secret) is dropped with its engine and reason logged; one whose warm-up fails (a remote
server that is down) stays in the chain as `degraded`, since it may come back. The chain fails to
load only when no member is usable.

At run time a request goes to the first usable member; if that member fails *before its first
result* (token, transcript piece, audio chunk), the next one is tried. A failure after the first
result is the response's failure: its output cannot be taken back.

A TTS chain is `AlignedTTS` (word timings, visemes) only when every member is: a chain that
could fall over to an engine without them would drop them mid-conversation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ..core.audio import Float32Array, Int16Array
from .base import (
    AlignedTTS,
    ChatRequest,
    ChunkMarks,
    ContextOverflow,
    DescribesModel,
    EngineError,
    HealthReporting,
    LLMEngine,
    LLMEvent,
    RemoteEngine,
    STTEngine,
    SynthesisOptions,
    TranscribeOptions,
    TTSEngine,
    VisemeMark,
    WordMark,
)

log = logging.getLogger(__name__)

E = TypeVar("E", LLMEngine, STTEngine, TTSEngine)
R = TypeVar("R")
MemberState = Literal["loading", "ready", "degraded", "failed"]


class ChainLoadError(RuntimeError):
    """No member of a chain could be loaded (`causes`: each member's exception)."""

    def __init__(self, message: str, causes: Sequence[BaseException] = ()) -> None:
        super().__init__(message)
        self.causes = list(causes)


def describe(exc: BaseException) -> str:
    """An exception for logs and `/readyz`: an `EngineError` by its code."""
    if isinstance(exc, EngineError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(slots=True)
class _Member(Generic[E]):
    engine: E
    state: MemberState = "loading"
    error: str | None = None


class _Chain(Generic[E]):
    stage: str

    def __init__(self, stage: str, engines: Sequence[E]) -> None:
        if not engines:
            raise ValueError("a fallback chain needs at least one engine")
        self.stage = stage
        self._members: list[_Member[E]] = [_Member(e) for e in engines]
        self.name = " -> ".join(e.name for e in engines)

    @property
    def engines(self) -> list[E]:
        return [m.engine for m in self._members]

    @property
    def remote(self) -> bool:
        """Every usable member is a remote engine (the chain can only wait for servers)."""
        return all(isinstance(m.engine, RemoteEngine) and m.engine.remote
                   for m in self._members if m.state != "failed")

    @property
    def model_file(self) -> str:
        return " -> ".join(m.engine.model_file if isinstance(m.engine, DescribesModel) else m.engine.name
                           for m in self._members)

    def members_status(self) -> list[dict[str, Any]]:
        out = []
        for m in self._members:
            d: dict[str, Any] = {"engine": m.engine.name, "state": m.state}
            if m.error:
                d["error"] = m.error
            if isinstance(m.engine, HealthReporting):
                d["runtime"] = m.engine.health()
            out.append(d)
        return out

    def _usable(self) -> list[E]:
        return [m.engine for m in self._members if m.state in ("ready", "degraded")]

    async def load(self) -> None:
        for m in self._members:
            try:
                await m.engine.load()
            except Exception as exc:
                m.state, m.error = "failed", describe(exc)
                log.error("stage=%s engine=%s (fallback chain) failed to load: %s", self.stage, m.engine.name, m.error)
            else:
                m.state = "loading"
        if all(m.state == "failed" for m in self._members):
            raise ChainLoadError("every engine of the chain failed to load: " + "; ".join(
                f"{m.engine.name}: {m.error}" for m in self._members))

    async def warmup(self) -> None:
        causes: list[BaseException] = []
        for m in self._members:
            if m.state == "failed":
                continue
            try:
                await m.engine.warmup()
            except Exception as exc:
                causes.append(exc)
                m.state, m.error = "degraded", f"warm-up failed: {describe(exc)}"
                log.warning("stage=%s engine=%s (fallback chain) %s", self.stage, m.engine.name, m.error)
            else:
                m.state, m.error = "ready", None
        if not any(m.state == "ready" for m in self._members):
            raise ChainLoadError("no engine of the chain warmed up: " + "; ".join(
                f"{m.engine.name}: {m.error}" for m in self._members), causes)

    async def close(self) -> None:
        for m in self._members:
            try:
                await m.engine.close()
            except Exception:
                log.exception("stage=%s engine=%s: close failed", self.stage, m.engine.name)

    def _all_failed(self, errors: list[tuple[str, EngineError]]) -> EngineError:
        if not errors:
            return EngineError(self.stage, f"{self.stage}_unavailable", "no engine of the fallback chain is usable")
        last = errors[-1][1]
        if isinstance(last, ContextOverflow):
            return last  # the request was too long even for the last engine: that decides
        detail = "; ".join(f"{name}: {err.code}: {err.message}" for name, err in errors)
        return EngineError(self.stage, last.code, f"every engine of the fallback chain failed ({detail})")

    def _failed_over(self, engine: E, err: EngineError, errors: list[tuple[str, EngineError]]) -> None:
        errors.append((engine.name, err))
        log.warning("stage=%s engine=%s failed before its first result (%s: %s); trying the next engine",
                    self.stage, engine.name, err.code, err.message)

    async def _relay(self, open_stream: Callable[[E], AsyncIterator[R]]) -> AsyncIterator[R]:
        """Results from the first usable member that starts; the next member when one fails
        before its first result."""
        errors: list[tuple[str, EngineError]] = []
        for engine in self._usable():
            started = False
            gen = open_stream(engine)
            try:
                async for item in gen:
                    started = True
                    yield item
                return
            except EngineError as exc:
                if started:
                    raise
                self._failed_over(engine, exc, errors)
            finally:
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await aclose()
        raise self._all_failed(errors)


class FallbackLLM(_Chain[LLMEngine]):
    def __init__(self, engines: Sequence[LLMEngine]) -> None:
        super().__init__("llm", engines)

    def stream(self, request: ChatRequest, session_id: str) -> AsyncIterator[LLMEvent]:
        return self._relay(lambda engine: engine.stream(request, session_id))

    def context_tokens(self) -> int | None:
        # A prompt cut to the smallest member's context fits every member the chain may fall to.
        known = [n for e in self._usable() if (n := e.context_tokens()) is not None]
        return min(known) if known else None

    def count_tokens(self, message: dict[str, Any]) -> int:
        return max((e.count_tokens(message) for e in self._usable()), default=0)

    def _answering(self, method: str) -> Any:
        """The optional `method` of the member that would answer (None: it has none)."""
        usable = self._usable()
        return getattr(usable[0], method, None) if usable else None

    async def end_of_turn_probability(self, transcript: str, session_id: str) -> float | None:
        """The end-of-turn text signal of the member that would answer (None: it has none)."""
        probe = self._answering("end_of_turn_probability")
        return await probe(transcript, session_id) if probe is not None else None

    async def prefill(self, request: ChatRequest, session_id: str) -> None:
        """Prefill in the member that would answer, if it can."""
        fill = self._answering("prefill")
        if fill is not None:
            await fill(request, session_id)


class FallbackSTT(_Chain[STTEngine]):
    def __init__(self, engines: Sequence[STTEngine]) -> None:
        super().__init__("stt", engines)
        self.streams = any(e.streams for e in engines)

    def transcribe(
        self, audio: Float32Array, options: TranscribeOptions, session_id: str
    ) -> AsyncIterator[str]:
        return self._relay(lambda engine: engine.transcribe(audio, options, session_id))


class FallbackTTS(_Chain[TTSEngine]):
    """Members may have different sample rates: the chain speaks at the first member's rate and
    resamples the others' audio to it.

    `FallbackTTS(engines)` is an `AlignedFallbackTTS` when every member is `AlignedTTS` (the
    registry builds chains by this one name)."""

    def __new__(cls, engines: Sequence[TTSEngine]) -> FallbackTTS:
        if cls is FallbackTTS and engines and all(isinstance(e, AlignedTTS) for e in engines):
            cls = AlignedFallbackTTS
        return super().__new__(cls)

    def __init__(self, engines: Sequence[TTSEngine]) -> None:
        super().__init__("tts", engines)
        self.sample_rate = engines[0].sample_rate

    def voices(self) -> list[str]:
        return self.engines[0].voices()

    def synthesize(self, text: str, options: SynthesisOptions, session_id: str) -> AsyncIterator[Int16Array]:
        return self._relay(lambda engine: self._at_chain_rate(engine, engine.synthesize(text, options, session_id)))

    async def _at_chain_rate(self, engine: TTSEngine, gen: AsyncIterator[Int16Array]) -> AsyncIterator[Int16Array]:
        from ..core.audio import StreamResampler

        resampler = (StreamResampler(engine.sample_rate, self.sample_rate)
                     if engine.sample_rate != self.sample_rate else None)
        try:
            async for chunk in gen:
                if resampler is None:
                    yield chunk
                elif (out := resampler.process(chunk)).size:
                    yield out
            if resampler is not None and (tail := resampler.flush()).size:
                yield tail
        finally:
            with contextlib.suppress(Exception):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await aclose()


@dataclass(frozen=True, slots=True)
class _Marks:
    words: Sequence[WordMark]
    visemes: Sequence[VisemeMark]


_NO_MARKS = _Marks((), ())


def _shifted(marks: ChunkMarks, shift_ms: float) -> ChunkMarks:
    if not shift_ms:
        return marks
    return _Marks(
        [WordMark(round(w.audio_offset_ms + shift_ms), w.audio_duration_ms, w.text) for w in marks.words],
        [VisemeMark(round(v.audio_offset_ms + shift_ms), v.viseme_id) for v in marks.visemes],
    )


class _MemberTimeline:
    def __init__(self, timeline: Any) -> None:
        self.timeline = timeline
        self.audio_ms = 0.0  # what this member said through `timeline`


class ChainTimeline:
    """A response's timeline on a chain: one timeline per member, made when that member first
    speaks in the response. A member counts offsets from its own first sample; its marks are
    moved by the audio the other members said meanwhile, to where its audio lands."""

    def __init__(self) -> None:
        self.audio_ms = 0.0  # the response's audio so far, every member's
        self._members: dict[int, _MemberTimeline] = {}

    def member(self, engine: AlignedTTS) -> _MemberTimeline:
        key = id(engine)
        if key not in self._members:
            self._members[key] = _MemberTimeline(engine.new_timeline())
        return self._members[key]


class AlignedFallbackTTS(FallbackTTS):
    """A TTS chain whose every member gives word timings and visemes; aligned synthesis falls
    over to the next member exactly as plain synthesis does."""

    def __init__(self, engines: Sequence[TTSEngine]) -> None:
        super().__init__(engines)
        self._aligned: dict[int, AlignedTTS] = {id(e): e for e in engines if isinstance(e, AlignedTTS)}
        if len(self._aligned) != len(engines):
            raise TypeError("every member of an AlignedFallbackTTS must be AlignedTTS")

    def new_timeline(self) -> ChainTimeline:
        return ChainTimeline()

    def synthesize_aligned(
        self, text: str, options: SynthesisOptions, session_id: str, timeline: Any
    ) -> AsyncIterator[tuple[Int16Array, ChunkMarks]]:
        if not isinstance(timeline, ChainTimeline):
            raise TypeError("synthesize_aligned needs the chain's own timeline (new_timeline())")
        return self._relay(lambda engine: self._aligned_at_chain_rate(engine, text, options, session_id, timeline))

    async def _aligned_at_chain_rate(
        self, engine: TTSEngine, text: str, options: SynthesisOptions, session_id: str, timeline: ChainTimeline,
    ) -> AsyncIterator[tuple[Int16Array, ChunkMarks]]:
        from ..core.audio import StreamResampler

        aligned = self._aligned[id(engine)]
        # Made here, inside the stream: a member that cannot make one (not loaded) fails before
        # its first result, and the chain falls over to the next.
        member = timeline.member(aligned)
        gen = aligned.synthesize_aligned(text, options, session_id, member.timeline)
        resampler = (StreamResampler(engine.sample_rate, self.sample_rate)
                     if engine.sample_rate != self.sample_rate else None)
        try:
            async for chunk, marks in gen:
                shift = timeline.audio_ms - member.audio_ms
                ms = chunk.size * 1000 / engine.sample_rate
                member.audio_ms += ms
                timeline.audio_ms += ms
                # Every chunk goes on, even one the resampler holds back whole: its marks count.
                yield (chunk if resampler is None else resampler.process(chunk)), _shifted(marks, shift)
            if resampler is not None and (tail := resampler.flush()).size:
                yield tail, _NO_MARKS
        finally:
            with contextlib.suppress(Exception):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await aclose()
