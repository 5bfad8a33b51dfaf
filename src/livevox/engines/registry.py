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

from livevox.engine_settings import VoiceMapSettings
from livevox.settings import LLMSettings, Settings, STTSettings, TTSSettings

from .base import Engine, LLMEngine, STTEngine, TTSEngine, VADEngine
from .fallback import describe
from .voices import VoiceMap

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
        encoder_window_s=s.encoder_window_s,
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
    )


def _one_tts(s: TTSSettings) -> TTSEngine:
    if s.engine == "scripted":
        from .scripted import ScriptedTTS

        return ScriptedTTS()
    if s.engine == "openai":
        from .openai_tts import OpenAITTS

        assert s.openai is not None
        return OpenAITTS(s.openai)
    from .piper import PiperTTS

    return PiperTTS(s.voice_path, threads=s.threads)


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
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine
    _status: dict[str, StageStatus] = field(default_factory=dict)
    #: Client voice names -> the TTS engine's voices (`[tts.voice_map]`).
    voices: VoiceMap = field(init=False)

    def __post_init__(self) -> None:
        self.voices = VoiceMap(VoiceMapSettings(), self.tts.voices)

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
        engines.voices = VoiceMap(settings.tts.voice_map, engines.tts.voices)
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
            health = getattr(engine, "health", None)
            if callable(health):
                d["runtime"] = health()
            members = getattr(engine, "members_status", None)
            if callable(members):
                d["chain"] = members()
            out[stage] = d
        return out

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
            st.state, st.error = "failed", describe(exc)
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
        problems = self.voices.problems()
        if problems:
            detail = "; ".join(f"{key}: {why}" for key, why in problems)
            st = self._status["tts"]
            st.state, st.error = "failed", f"voice map: {detail}"
            log.error("stage=tts engine=%s: %s", self.tts.name, st.error)
            raise EngineLoadError("tts", self.tts.name, ValueError(detail), st.error)

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
