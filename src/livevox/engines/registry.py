"""Build the four stage engines from settings: construct, load, warm up, and report readiness.

Engine modules are imported only when selected, so a scripted-only process never imports
faster-whisper, xllamacpp or (GPL) Piper.

    engines = Engines.create(settings)   # status(): every stage "loading"
    await engines.load()                 # raises EngineLoadError naming stage, engine and cause
    # or both at once: engines = await build_engines(settings)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from livevox.settings import Settings

from .base import Engine, LLMEngine, STTEngine, TTSEngine, VADEngine

log = logging.getLogger(__name__)

STAGES = ("vad", "stt", "llm", "tts")
State = Literal["loading", "ready", "failed"]

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

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"engine": self.engine, "state": self.state, "load_ms": self.load_ms}
        if self.warm_ms is not None:
            d["warm_ms"] = self.warm_ms
        if self.error is not None:
            d["error"] = self.error
        return d


def _make_vad(settings: Settings) -> VADEngine:
    if settings.vad.engine == "scripted":
        from .scripted import ScriptedVAD

        return ScriptedVAD()
    from .silero import SileroVAD

    return SileroVAD(settings.vad.model_path)


def _make_stt(settings: Settings) -> STTEngine:
    s = settings.stt
    if s.engine == "scripted":
        from .scripted import ScriptedSTT

        return ScriptedSTT()
    from .whisper import FasterWhisperSTT

    return FasterWhisperSTT(
        s.model_dir,
        language=s.language,
        beam_size=s.beam_size,
        compute_type=s.compute_type,
        threads=s.threads,
    )


def _make_llm(settings: Settings) -> LLMEngine:
    s = settings.llm
    if s.engine == "scripted":
        from .scripted import ScriptedLLM

        return ScriptedLLM()
    from .llamacpp import LlamaCppLLM

    return LlamaCppLLM(
        s.gguf_path,
        n_ctx=s.n_ctx,
        threads=s.threads,
        max_tokens=s.max_tokens,
        default_instructions=s.default_instructions,
    )


def _make_tts(settings: Settings) -> TTSEngine:
    s = settings.tts
    if s.engine == "scripted":
        from .scripted import ScriptedTTS

        return ScriptedTTS()
    from .piper import PiperTTS

    return PiperTTS(s.voice_path, threads=s.threads)


@dataclass(slots=True)
class Engines:
    vad: VADEngine
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine
    _status: dict[str, StageStatus] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> Engines:
        """Construct the configured engines (cheap: nothing is loaded yet)."""
        engines = cls(
            vad=_make_vad(settings),
            stt=_make_stt(settings),
            llm=_make_llm(settings),
            tts=_make_tts(settings),
        )
        engines._status = {stage: StageStatus(engines.engine(stage).name) for stage in STAGES}
        return engines

    def engine(self, stage: str) -> Engine:
        if stage not in STAGES:
            raise KeyError(stage)
        engine: Engine = getattr(self, stage)
        return engine

    def status(self) -> dict[str, dict[str, Any]]:
        """For `/readyz`: {stage: {"engine", "state", "load_ms", "warm_ms"?, "error"?}}."""
        return {stage: st.as_dict() for stage, st in self._status.items()}

    @property
    def ready(self) -> bool:
        return bool(self._status) and all(st.state == "ready" for st in self._status.values())

    async def _load_stage(self, stage: str) -> None:
        engine = self.engine(stage)
        st = self._status[stage]
        st.state, st.error = "loading", None
        try:
            t0 = time.perf_counter()
            await engine.load()
            t1 = time.perf_counter()
            await engine.warmup()
            t2 = time.perf_counter()
        except Exception as exc:
            st.state, st.error = "failed", f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ModuleNotFoundError) and exc.name in _EXTRAS:
                st.error += f" (fix: {_EXTRAS[exc.name]})"
            log.error("stage=%s engine=%s failed to load: %s", stage, engine.name, st.error)
            raise EngineLoadError(stage, engine.name, exc, st.error) from exc
        st.load_ms, st.warm_ms = round((t1 - t0) * 1000, 1), round((t2 - t1) * 1000, 1)
        st.state = "ready"
        log.info(
            "stage=%s engine=%s model=%s load_ms=%.0f warm_ms=%.0f",
            stage,
            engine.name,
            getattr(engine, "model_file", "-"),
            st.load_ms,
            st.warm_ms,
        )
        if stage == "llm" and getattr(engine, "embedded", False):
            log.warning(
                "stage=llm: the embedded SmolLM2-135M-Instruct is demo-grade (fine for smoke tests, "
                "not for real conversations); set llm.gguf_path to a larger GGUF model"
            )

    async def load(self) -> None:
        """Load and warm all stages (concurrently: each has its own executor). The first failure,
        in stage order, is raised as `EngineLoadError` after every stage has settled."""
        results = await asyncio.gather(*(self._load_stage(s) for s in STAGES), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def close(self) -> None:
        for stage in STAGES:
            try:
                await self.engine(stage).close()
            except Exception:
                log.exception("stage=%s: close failed", stage)


async def build_engines(settings: Settings) -> Engines:
    """Construct, load and warm the engines `settings` selects. Raises `EngineLoadError`."""
    engines = Engines.create(settings)
    await engines.load()
    return engines
