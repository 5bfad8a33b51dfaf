"""Build the four stage engines from settings: construct, load, warm up, and report readiness.

Engine modules are imported only when selected, so a scripted-only process never imports
faster-whisper, xllamacpp or (GPL) Piper.

    engines = Engines.create(settings)   # status(): every stage "loading"
    await engines.load()                 # raises EngineLoadError naming stage, engine and cause
    # or both at once: engines = await build_engines(settings)

Ready means a turn would be as fast as a warm one: every stage loaded and warmed, then the
rehearsal (`rehearsal.py`) ran a turn's work at its real sizes.

A remote stage (`engine = "openai"`) whose server cannot be reached at start does not stop the
process: the stage is "waiting" (its reason in `/readyz`) and its warm-up is retried with capped
exponential backoff until the server answers (`[startup]`). A local engine that cannot load is a
configuration error, and so is a remote one that answers with an error other than unavailable or
timeout (a wrong key, an unknown model): `load()` raises for those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from livevox.engine_settings import VoiceMapSettings
from livevox.settings import LLMSettings, Settings, StartupSettings, STTSettings, TTSSettings

from .base import (
    ChainMembers,
    DescribesModel,
    EmbeddedModel,
    Engine,
    EngineError,
    HealthReporting,
    LLMEngine,
    RehearsalStep,
    RemoteEngine,
    STTEngine,
    TTSEngine,
    TurnEngine,
    VADEngine,
)
from .fallback import ChainLoadError, describe
from .voices import VoiceMap

log = logging.getLogger(__name__)

STAGES = ("vad", "turn", "stt", "llm", "tts")
State = Literal["loading", "waiting", "ready", "failed"]

# Runtime libraries of the engines, and the install that provides each.
_EXTRAS = {
    "faster_whisper": "pip install 'livevox[embedded]'",
    "ctranslate2": "pip install 'livevox[embedded]'",
    "xllamacpp": "pip install 'livevox[embedded]'",
    "piper": "pip install 'livevox[piper]'",
    "onnxruntime": "pip install onnxruntime",
}


class EngineLoadError(RuntimeError):
    """A stage's engine failed to load or warm up."""

    def __init__(self, stage: str, engine: str, cause: BaseException, detail: str | None = None) -> None:
        super().__init__(f"stage={stage} engine={engine} failed to load: {detail or cause}")
        self.stage = stage
        self.engine = engine
        self.cause = cause


@dataclass(slots=True)
class StageStatus:
    engine: str
    state: State = "loading"
    load_ms: float | None = None
    warm_ms: float | None = None
    error: str | None = None
    #: "waiting": why (the last warm-up attempt's error), and warm-up attempts so far.
    reason: str | None = None
    attempts: int = 0

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"engine": self.engine, "state": self.state, "load_ms": self.load_ms}
        if self.warm_ms is not None:
            d["warm_ms"] = self.warm_ms
        if self.error is not None:
            d["error"] = self.error
        if self.reason is not None:
            d["reason"] = self.reason
        if self.attempts:
            d["attempts"] = self.attempts
        return d


def _transient(exc: BaseException) -> bool:
    """A remote engine's warm-up failed because its server is not (yet) there."""
    if isinstance(exc, EngineError):
        return exc.code.endswith(("_unavailable", "_timeout"))
    if isinstance(exc, ChainLoadError):
        return bool(exc.causes) and all(_transient(c) for c in exc.causes)
    return False


def _make_turn(settings: Settings) -> TurnEngine:
    from .smart_turn import NoTurnModel, SmartTurn

    if settings.turn.engine == "none" or settings.role == "engine":  # the engine role holds no sessions
        return NoTurnModel()
    if settings.turn.engine == "scripted":
        from .scripted import ScriptedTurn

        return ScriptedTurn()
    return SmartTurn(settings.turn.model_path, threads=settings.turn.threads)


def _make_vad(settings: Settings) -> VADEngine:
    if settings.vad.engine == "scripted":
        from .scripted import ScriptedVAD

        return ScriptedVAD()
    from .silero import SileroVAD

    return SileroVAD(settings.vad.model_path)


def _one_stt(s: STTSettings) -> STTEngine:
    if s.engine == "scripted":
        from .scripted import ScriptedSTT

        return ScriptedSTT()
    if s.engine == "openai":
        from .openai_stt import OpenAISTT

        assert s.openai is not None  # enforced by the settings
        return OpenAISTT(s.openai, language=s.language)
    from .whisper import FasterWhisperSTT

    return FasterWhisperSTT(
        s.model_dir,
        language=s.language,
        beam_size=s.beam_size,
        compute_type=s.compute_type,
        threads=s.threads,
        workers=s.workers,
        encoder_window_s=s.encoder_window_s,
        busy_encoder_window_s=s.busy_encoder_window_s,
        max_batch=s.max_batch,
    )


def _one_llm(s: LLMSettings) -> LLMEngine:
    if s.engine == "scripted":
        from .scripted import ScriptedLLM

        return ScriptedLLM()
    if s.engine == "openai":
        from .openai_llm import OpenAILLM

        assert s.openai is not None
        return OpenAILLM(s.openai, max_tokens=s.max_tokens, default_instructions=s.default_instructions)
    from .llamacpp import LlamaCppLLM

    return LlamaCppLLM(
        s.gguf_path,
        n_ctx=s.n_ctx,
        threads=s.threads,
        max_tokens=s.max_tokens,
        default_instructions=s.default_instructions,
        parallel=s.parallel,
        max_temperature=s.max_temperature,
        n_batch=s.n_batch,
        cache_reuse=s.cache_reuse,
    )


def _one_tts(s: TTSSettings) -> TTSEngine:
    if s.engine == "scripted":
        from .scripted import ScriptedTTS

        return ScriptedTTS()
    if s.engine == "openai":
        from .openai_tts import OpenAITTS

        assert s.openai is not None
        return OpenAITTS(s.openai)
    from .piper.tts import PiperTTS

    return PiperTTS(s.voice_path, threads=s.threads, workers=s.workers)


# A stage with a `fallback` list is served by a chain (see fallback.py).


def _make_stt(settings: Settings) -> STTEngine:
    s = settings.stt
    if not s.fallback:
        return _one_stt(s)
    from .fallback import FallbackSTT

    return FallbackSTT([_one_stt(x) for x in (s, *s.fallback)])


def _make_llm(settings: Settings) -> LLMEngine:
    s = settings.llm
    if not s.fallback:
        return _one_llm(s)
    from .fallback import FallbackLLM

    return FallbackLLM([_one_llm(x) for x in (s, *s.fallback)])


def _make_tts(settings: Settings) -> TTSEngine:
    s = settings.tts
    if not s.fallback:
        return _one_tts(s)
    from .fallback import FallbackTTS

    return FallbackTTS([_one_tts(x) for x in (s, *s.fallback)])


@dataclass(slots=True)
class Engines:
    vad: VADEngine
    turn: TurnEngine
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine
    _status: dict[str, StageStatus] = field(default_factory=dict)
    #: Client voice names -> the TTS engine's voices (`[tts.voice_map]`).
    voices: VoiceMap = field(init=False)
    startup: StartupSettings = field(default_factory=StartupSettings)
    #: The rehearsal also loads the per-session models (Smart Turn, echo, noise): not in the
    #: engine role (no sessions), nor with the scripted VAD, which only tests use.
    rehearse_session_models: bool = False
    #: Steps the layer above adds to that part of the rehearsal (`realtime.input_rehearsal`).
    session_rehearsal: tuple[RehearsalStep, ...] = ()
    #: The rehearsal's report (None: not run yet), for `/readyz`.
    warmup_report: dict[str, Any] | None = None
    _rehearsal: asyncio.Task[None] | None = None
    _waits: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.voices = VoiceMap(VoiceMapSettings(), self.tts.voices)

    @classmethod
    def create(cls, settings: Settings) -> Engines:
        """Construct the configured engines (cheap: nothing is loaded yet)."""
        engines = cls(
            vad=_make_vad(settings),
            turn=_make_turn(settings),
            stt=_make_stt(settings),
            llm=_make_llm(settings),
            tts=_make_tts(settings),
        )
        engines._status = {stage: StageStatus(engines.engine(stage).name) for stage in STAGES}
        engines.voices = VoiceMap(settings.tts.voice_map, engines.tts.voices)
        engines.startup = settings.startup
        engines.rehearse_session_models = settings.vad.engine != "scripted" and settings.role != "engine"
        return engines

    def engine(self, stage: str) -> Engine:
        if stage not in STAGES:
            raise KeyError(stage)
        engine: Engine = getattr(self, stage)
        return engine

    def status(self) -> dict[str, dict[str, Any]]:
        """For `/readyz`: {stage: {"engine", "state", "load_ms", "warm_ms"?, "error"?, "runtime"?,
        "chain"?}}. `runtime` is a remote engine's record of its requests (`state` "ok" or
        "failing", counts, last error); `chain` lists a fallback chain's members and their states."""
        out: dict[str, dict[str, Any]] = {}
        for stage, st in self._status.items():
            d = st.as_dict()
            engine = self.engine(stage)
            if isinstance(engine, HealthReporting):
                d["runtime"] = engine.health()
            if isinstance(engine, ChainMembers):
                d["chain"] = engine.members_status()
            out[stage] = d
        return out

    @property
    def stages_ready(self) -> bool:
        return bool(self._status) and all(st.state == "ready" for st in self._status.values())

    @property
    def ready(self) -> bool:
        """Every stage ready and the rehearsal done: a turn now is as fast as a warm one."""
        return self.stages_ready and self.warmup_report is not None

    def not_ready(self) -> list[str]:
        """For `/readyz` and refused sessions: "llm: waiting: llm_unavailable: ...", one per stage."""
        out = []
        for stage, st in self._status.items():
            if st.state == "waiting":
                out.append(f"{stage}: waiting: {st.reason}")
            elif st.state != "ready":
                out.append(f"{stage}: {st.state}" + (f": {st.error}" if st.error else ""))
        if self.stages_ready and self.warmup_report is None:
            out.append("warmup: running")
        return out

    def _failed(self, stage: str, exc: BaseException) -> EngineLoadError:
        engine = self.engine(stage)
        st = self._status[stage]
        st.state, st.error = "failed", describe(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name in _EXTRAS:
            st.error += f" (fix: {_EXTRAS[exc.name]})"
        log.error("stage=%s engine=%s failed to load: %s", stage, engine.name, st.error)
        return EngineLoadError(stage, engine.name, exc, st.error)

    def _ready(self, stage: str, warm_ms: float) -> None:
        st = self._status[stage]
        st.warm_ms = round(warm_ms, 1)
        st.state, st.reason = "ready", None
        engine = self.engine(stage)
        log.info(
            "stage=%s engine=%s model=%s load_ms=%.0f warm_ms=%.0f",
            stage,
            engine.name,
            engine.model_file if isinstance(engine, DescribesModel) else "-",
            st.load_ms or 0.0,
            st.warm_ms,
        )

    async def _load_stage(self, stage: str) -> None:
        engine = self.engine(stage)
        st = self._status[stage]
        st.state, st.error = "loading", None
        t0 = time.perf_counter()
        try:
            await engine.load()
        except Exception as exc:
            raise self._failed(stage, exc) from exc
        t1 = time.perf_counter()
        st.load_ms = round((t1 - t0) * 1000, 1)
        try:
            await engine.warmup()
        except Exception as exc:
            remote = isinstance(engine, RemoteEngine) and engine.remote
            if remote and _transient(exc) and self.startup.remote_wait_seconds > 0:
                self._wait_for(stage, exc)
                return
            raise self._failed(stage, exc) from exc
        self._ready(stage, (time.perf_counter() - t1) * 1000)
        if stage == "llm" and isinstance(engine, EmbeddedModel) and engine.embedded:
            log.warning(
                "stage=llm: the embedded SmolLM2-135M-Instruct is demo-grade (fine for smoke tests, "
                "not for real conversations); set llm.gguf_path to a larger GGUF model"
            )

    def _wait_for(self, stage: str, exc: BaseException) -> None:
        st = self._status[stage]
        st.state, st.reason = "waiting", describe(exc)
        log.warning("stage=%s engine=%s: its server does not answer (%s); /readyz says 503 and the warm-up "
                    "is retried until it does (startup.remote_wait_seconds=%g)",
                    stage, self.engine(stage).name, st.reason, self.startup.remote_wait_seconds)
        task = asyncio.create_task(self._retry(stage), name=f"livevox-wait-{stage}")
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)

    async def _retry(self, stage: str) -> None:
        """Retry a waiting stage's warm-up with capped exponential backoff until it succeeds; past
        `remote_wait_seconds`, say so once at ERROR (and keep trying: the server may still come)."""
        engine, st, cfg = self.engine(stage), self._status[stage], self.startup
        start = time.monotonic()
        delay = cfg.remote_retry_initial_seconds
        overdue = False
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, cfg.remote_retry_max_seconds)
            st.attempts += 1
            t0 = time.perf_counter()
            try:
                await engine.warmup()
            except Exception as exc:
                st.reason = describe(exc)
                waited = time.monotonic() - start
                if not overdue and waited >= cfg.remote_wait_seconds:
                    overdue = True
                    log.error("stage=%s engine=%s: still no answer after %.0f s (startup.remote_wait_seconds=%g), "
                              "retrying every %g s: %s", stage, engine.name, waited, cfg.remote_wait_seconds,
                              cfg.remote_retry_max_seconds, st.reason)
                continue
            self._ready(stage, (time.perf_counter() - t0) * 1000)
            log.info("stage=%s engine=%s: its server answered after %.1f s (%d attempts)",
                     stage, engine.name, time.monotonic() - start, st.attempts)
            await self._rehearse()
            return

    async def _rehearse(self) -> None:
        """Once every stage is ready: the rehearsal, once (`rehearsal.py`). Its failures are logged
        and reported, not fatal: they cost the first turn speed, not service."""
        if not self.stages_ready:
            return
        if self._rehearsal is None:
            self._rehearsal = asyncio.create_task(self._run_rehearsal())
        await asyncio.shield(self._rehearsal)

    async def _run_rehearsal(self) -> None:
        from .rehearsal import rehearse

        t0 = time.perf_counter()
        try:
            report = await rehearse(self, session_models=self.rehearse_session_models,
                                    session_steps=self.session_rehearsal)
        except Exception as exc:
            log.warning("warm-up rehearsal failed: %s", describe(exc))
            report = {"error": describe(exc)}
        report["total_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        self.warmup_report = report
        log.info("warm-up rehearsal: %s", report)

    async def load(self) -> None:
        """Load and warm all stages (concurrently: each has its own executor), then rehearse a turn.
        The first failure, in stage order, is raised as `EngineLoadError` after every stage has
        settled. A remote stage whose server is not there is left waiting (see the module doc)."""
        results = await asyncio.gather(*(self._load_stage(s) for s in STAGES), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                self._stop_waiting()
                raise r
        problems = self.voices.problems()
        if problems:
            detail = "; ".join(f"{key}: {why}" for key, why in problems)
            st = self._status["tts"]
            st.state, st.error = "failed", f"voice map: {detail}"
            log.error("stage=tts engine=%s: %s", self.tts.name, st.error)
            raise EngineLoadError("tts", self.tts.name, ValueError(detail), st.error)
        await self._rehearse()

    def _stop_waiting(self) -> None:
        for task in self._waits:
            task.cancel()

    async def close(self) -> None:
        for task in (*self._waits, self._rehearsal):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for stage in STAGES:
            try:
                await self.engine(stage).close()
            except Exception:
                log.exception("stage=%s: close failed", stage)


async def build_engines(settings: Settings, session_rehearsal: tuple[RehearsalStep, ...] = ()) -> Engines:
    """Construct, load and warm the engines `settings` selects. Raises `EngineLoadError`.
    `session_rehearsal`: steps the realtime layer adds to the start-up rehearsal."""
    engines = Engines.create(settings)
    engines.session_rehearsal = session_rehearsal
    await engines.load()
    return engines
