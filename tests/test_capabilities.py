"""Optional engine capabilities as typed protocols (engines/base.py): which engines have them, a
TTS fallback chain that forwards word timings and visemes only when every member gives them,
and the warnings a session gets when it asks for what its TTS cannot deliver.

The chain tests use `AlignedStandIn`, a scripted stand-in TTS defined here (no model: a tone of
`WORD_MS` per word, one chunk per word with that word's mark), so offsets are exact. The
server tests use the real server on loopback: the scripted TTS and a Piper -> scripted chain
(no alignment: warned), and a chain of two real Piper voices (timestamps and visemes kept).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from livevox.engine_settings import OpenAITTSSettings
from livevox.engines.base import (
    AlignedTTS,
    ChainMembers,
    ChunkMarks,
    DescribesModel,
    EmbeddedModel,
    EngineError,
    HealthReporting,
    Int16Array,
    RemoteEngine,
    SynthesisOptions,
    TTSEngine,
    VisemeMark,
    WordMark,
)
from livevox.engines.fallback import AlignedFallbackTTS, FallbackTTS
from livevox.engines.openai_tts import OpenAITTS
from livevox.engines.piper.tts import PiperTTS
from livevox.engines.registry import Engines
from livevox.engines.scripted import ScriptedLLM, ScriptedTTS
from livevox.realtime.capabilities import capability_warnings
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient

WORD_MS = 100


@dataclass(frozen=True, slots=True)
class Marks:
    words: list[WordMark]
    visemes: list[VisemeMark]


class StandInTimeline:
    def __init__(self) -> None:
        self.offset_ms = 0


class AlignedStandIn:
    """Scripted stand-in for an aligned TTS (not a model). Hooks: `fail_calls` = the next N
    calls fail before any audio; `fail_after_first` = calls fail after their first chunk;
    `no_timeline` = `new_timeline()` fails (an engine that is not loaded)."""

    def __init__(self, name: str, sample_rate: int = 24000) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.fail_calls = 0
        self.fail_after_first = False
        self.no_timeline = False
        self.calls: list[str] = []

    async def load(self) -> None:
        return None

    async def warmup(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def voices(self) -> list[str]:
        return [self.name]

    def _chunk(self) -> Int16Array:
        return np.full(self.sample_rate * WORD_MS // 1000, 1000, dtype=np.int16)

    async def synthesize(self, text: str, options: SynthesisOptions, session_id: str) -> AsyncIterator[Int16Array]:
        async for chunk, _ in self.synthesize_aligned(text, options, session_id, StandInTimeline()):
            yield chunk

    def new_timeline(self) -> StandInTimeline:
        if self.no_timeline:
            raise EngineError("tts", "tts_unavailable", f"{self.name} is not loaded")
        return StandInTimeline()

    async def synthesize_aligned(
        self, text: str, options: SynthesisOptions, session_id: str, timeline: StandInTimeline
    ) -> AsyncIterator[tuple[Int16Array, Marks]]:
        self.calls.append(text)
        if self.fail_calls:
            self.fail_calls -= 1
            raise EngineError("tts", "tts_unavailable", f"{self.name} is down")
        for i, word in enumerate(text.split()):
            if i and self.fail_after_first:
                raise EngineError("tts", "tts_error", f"{self.name} broke mid-clause")
            marks = Marks([WordMark(timeline.offset_ms, WORD_MS, word)], [VisemeMark(timeline.offset_ms, 21)])
            timeline.offset_ms += WORD_MS
            yield self._chunk(), marks


async def loaded(engines: list[TTSEngine]) -> FallbackTTS:
    chain = FallbackTTS(engines)
    await chain.load()
    await chain.warmup()
    return chain


async def speak(tts: object, clauses: list[str]) -> tuple[list[tuple[int, str]], list[int], int]:
    """Each clause through one timeline, as a response does: (word offset, text), viseme offsets,
    samples of audio."""
    assert isinstance(tts, AlignedTTS)
    timeline = tts.new_timeline()
    words: list[tuple[int, str]] = []
    visemes: list[int] = []
    samples = 0
    for clause in clauses:
        async for chunk, marks in tts.synthesize_aligned(clause, SynthesisOptions(), "t", timeline):
            samples += chunk.size
            words += [(w.audio_offset_ms, w.text) for w in marks.words]
            visemes += [v.audio_offset_ms for v in marks.visemes]
    return words, visemes, samples


# ---------------------------------------------------------------- which engines have what


def test_engines_declare_their_capabilities() -> None:
    piper, scripted = PiperTTS(), ScriptedTTS()
    openai = OpenAITTS(OpenAITTSSettings(base_url="http://127.0.0.1:9/v1"))
    assert isinstance(piper, AlignedTTS) and isinstance(piper, DescribesModel)
    assert not isinstance(piper, HealthReporting) and not isinstance(piper, RemoteEngine)
    assert not isinstance(scripted, AlignedTTS | HealthReporting | DescribesModel | RemoteEngine)
    # The OpenAI TTS has no timings to give: it must not pass for an aligned engine.
    assert not isinstance(openai, AlignedTTS)
    assert isinstance(openai, HealthReporting) and openai.health()["state"] == "ok"
    assert isinstance(openai, RemoteEngine) and openai.remote
    assert isinstance(openai, DescribesModel) and "127.0.0.1:9" in openai.model_file
    # Checked by mypy when this file is (`mypy tests/test_capabilities.py`): Piper fits the protocol.
    typed: AlignedTTS = piper
    assert typed is piper


def test_embedded_and_remote_engines() -> None:
    from livevox.engines.llamacpp import LlamaCppLLM

    assert isinstance(LlamaCppLLM(), EmbeddedModel) and LlamaCppLLM().embedded
    assert isinstance(LlamaCppLLM("/m.gguf"), EmbeddedModel) and not LlamaCppLLM("/m.gguf").embedded
    assert not isinstance(ScriptedLLM(), EmbeddedModel | RemoteEngine)
    chain = FallbackTTS([OpenAITTS(OpenAITTSSettings(base_url="http://127.0.0.1:9/v1")), ScriptedTTS()])
    assert isinstance(chain, RemoteEngine) and not chain.remote  # a local member: it need not wait


# ---------------------------------------------------------------- the TTS fallback chain


def test_chain_claims_alignment_only_when_every_member_has_it() -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    assert isinstance(FallbackTTS([a, b]), AlignedFallbackTTS)
    assert isinstance(FallbackTTS([a, b]), AlignedTTS)
    assert isinstance(FallbackTTS([PiperTTS(), PiperTTS()]), AlignedTTS)
    mixed: list[list[TTSEngine]] = [[a, ScriptedTTS()], [ScriptedTTS(), a], [ScriptedTTS()]]
    for engines in mixed:
        chain = FallbackTTS(engines)
        assert type(chain) is FallbackTTS and not isinstance(chain, AlignedTTS)
        assert not hasattr(chain, "synthesize_aligned")
    with pytest.raises(TypeError):
        AlignedFallbackTTS([a, ScriptedTTS()])


async def test_chain_keeps_word_timings_from_its_first_member() -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    chain = await loaded([a, b])
    words, visemes, samples = await speak(chain, ["one two", "three"])
    assert words == [(0, "one"), (100, "two"), (200, "three")]
    assert visemes == [0, 100, 200]
    assert samples == 3 * 2400 and b.calls == []


@pytest.mark.parametrize("down", ["first_clause", "middle_clause"])
async def test_chain_falls_over_before_first_audio_and_keeps_offsets(down: str) -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    chain = await loaded([a, b])
    assert isinstance(chain, AlignedTTS)
    timeline = chain.new_timeline()
    got: list[tuple[int, str]] = []
    for i, clause in enumerate(["one two", "three four", "five"]):
        if (down, i) in (("first_clause", 0), ("middle_clause", 1)):
            a.fail_calls = 1
        async for _, marks in chain.synthesize_aligned(clause, SynthesisOptions(), "t", timeline):
            got += [(w.audio_offset_ms, w.text) for w in marks.words]
    # b's words land after what a said, and a's after b's, though each counts from its own start.
    assert got == [(0, "one"), (100, "two"), (200, "three"), (300, "four"), (400, "five")]
    assert b.calls == (["one two"] if down == "first_clause" else ["three four"])


async def test_chain_falls_over_when_a_member_cannot_make_a_timeline() -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    a.no_timeline = True
    chain = await loaded([a, b])
    words, _, _ = await speak(chain, ["one two"])
    assert words == [(0, "one"), (100, "two")]


async def test_chain_resamples_a_member_and_keeps_its_marks_in_ms() -> None:
    a, b = AlignedStandIn("a", 24000), AlignedStandIn("b", 16000)
    a.fail_calls = 1
    chain = await loaded([a, b])
    assert chain.sample_rate == 24000
    words, _, samples = await speak(chain, ["one two three", "four"])
    assert words == [(0, "one"), (100, "two"), (200, "three"), (300, "four")]
    assert abs(samples - 4 * 2400) <= 48  # b's 400 ms at the chain's rate


async def test_chain_failure_after_first_audio_fails_the_response() -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    a.fail_after_first = True
    chain = await loaded([a, b])
    with pytest.raises(EngineError) as info:
        await speak(chain, ["one two"])
    assert info.value.code == "tts_error" and b.calls == []


async def test_chain_every_member_down() -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    a.fail_calls = b.fail_calls = 1
    chain = await loaded([a, b])
    with pytest.raises(EngineError) as info:
        await speak(chain, ["one"])
    assert info.value.code == "tts_unavailable" and "a: tts_unavailable" in info.value.message


async def test_aligned_chain_plain_synthesis_still_falls_over() -> None:
    a, b = AlignedStandIn("a"), AlignedStandIn("b")
    a.fail_calls = 1
    chain = await loaded([a, b])
    chunks = [c async for c in chain.synthesize("one two", SynthesisOptions(), "t")]
    assert sum(c.size for c in chunks) == 2 * 2400 and b.calls == ["one two"]


# ---------------------------------------------------------------- the registry's view


def test_registry_status_and_ready_line_use_the_protocols(caplog: pytest.LogCaptureFixture) -> None:
    engines = Engines.create(scripted_settings(tts={"fallback": [{"engine": "scripted"}]}))
    assert isinstance(engines.tts, ChainMembers) and not isinstance(engines.tts, AlignedTTS)
    st = engines.status()
    assert [m["engine"] for m in st["tts"]["chain"]] == ["scripted-tts", "scripted-tts"]
    assert "runtime" not in st["tts"] and "chain" not in st["llm"]
    with caplog.at_level(logging.INFO, logger="livevox.engines.registry"):
        engines._ready("tts", 1.0)
        engines._ready("vad", 1.0)
    assert "engine=scripted-tts -> scripted-tts model=scripted-tts -> scripted-tts" in caplog.text
    assert "engine=scripted-vad model=- " in caplog.text


# ---------------------------------------------------------------- the session's warnings

WORDS = {"output_audio_timestamp_types": ["word"]}
VISEMES = {"animation": {"outputs": ["viseme_id"]}}


def test_warnings_for_what_the_tts_cannot_deliver() -> None:
    tts = ScriptedTTS()
    [w] = capability_warnings(WORDS, {}, tts)
    assert "session.output_audio_timestamp_types" in w and "'scripted-tts'" in w
    assert "response.audio_timestamp.delta" in w
    both = capability_warnings(WORDS | VISEMES, {}, tts)
    assert len(both) == 2 and "session.animation.outputs" in both[1] and "viseme" in both[1]
    assert "response.animation_viseme.delta" in both[1]
    assert "response.animation_viseme.delta" in capability_warnings(VISEMES, {}, tts, prefix="response")[0]
    assert "response.animation.outputs" in capability_warnings(VISEMES, {}, tts, prefix="response")[0]


def test_warnings_only_when_the_request_is_new() -> None:
    tts = ScriptedTTS()
    assert capability_warnings(WORDS, WORDS, tts) == []
    assert capability_warnings(WORDS | VISEMES, WORDS | VISEMES, tts) == []
    [w] = capability_warnings(WORDS | VISEMES, WORDS, tts)
    assert "animation.outputs" in w
    assert capability_warnings({}, WORDS | VISEMES, tts) == []  # turned off: nothing to say


def test_no_warnings_for_an_aligned_tts_or_no_request() -> None:
    a = AlignedStandIn("a")
    assert capability_warnings(WORDS | VISEMES, {}, a) == []
    assert capability_warnings(WORDS | VISEMES, {}, FallbackTTS([a, AlignedStandIn("b")])) == []
    tts = ScriptedTTS()
    for cfg in ({}, {"output_audio_timestamp_types": None, "animation": None},
                {"output_audio_timestamp_types": [], "animation": {"outputs": ["blendshapes"]}},
                {"animation": {"outputs": None}}):
        assert capability_warnings(cfg, {}, tts) == []


def test_a_chain_with_a_plain_member_is_warned_about() -> None:
    # The case that used to vanish silently: a Piper voice backed by a TTS without timings.
    chain = FallbackTTS([PiperTTS(), ScriptedTTS()])
    [w] = capability_warnings(WORDS, {}, chain)
    assert "'piper -> scripted-tts'" in w


# ---------------------------------------------------------------- through the real server

REPLY = "The capital of France is Paris. It is lovely in spring."


@pytest.fixture
def reply() -> Iterator[None]:
    ScriptedLLM.reply = REPLY
    yield
    ScriptedLLM.reset()


async def ask_with_marks(srv: ServerThread) -> tuple[list[str], list[dict[str, Any]]]:
    """Ask for word timestamps and visemes, then for an answer: the warnings the update got
    (each before `session.updated`), and the response's events."""
    c = await RealtimeClient.connect(srv.ws)
    try:
        await c.send({"type": "session.update", "session": {"turn_detection": None, **WORDS, **VISEMES}})
        updated = await c.until("session.updated")
        warnings = [e["warning"]["message"] for e in updated if e["type"] == "warning"]
        assert all(e["warning"]["code"] == "unsupported_setting" for e in updated if e["type"] == "warning")
        await c.send({"type": "response.create"})
        return warnings, await c.until("response.done", timeout=60)
    finally:
        await c.close()


@pytest.mark.parametrize("tts", [{}, {"engine": "piper", "fallback": [{"engine": "scripted"}]}],
                         ids=["scripted", "piper_then_scripted"])
async def test_server_tts_without_alignment_warns_and_still_speaks(reply: None, tts: dict[str, Any]) -> None:
    srv = ServerThread(scripted_settings(tts=tts)).start(300)
    try:
        warnings, evs = await ask_with_marks(srv)
    finally:
        srv.stop()
    assert len(warnings) == 2, warnings
    assert "output_audio_timestamp_types" in warnings[0] and "animation.outputs" in warnings[1]
    done = evs[-1]["response"]
    assert done["status"] == "completed"
    assert any(e["type"] == "response.audio.delta" for e in evs)
    assert not [e for e in evs if e["type"].startswith(("response.audio_timestamp", "response.animation_viseme"))]


async def test_server_piper_chain_keeps_word_timestamps_and_visemes(reply: None) -> None:
    srv = ServerThread(scripted_settings(tts={"engine": "piper", "fallback": [{"engine": "piper"}]})).start(300)
    try:
        warnings, evs = await ask_with_marks(srv)
    finally:
        srv.stop()
    assert warnings == []
    assert evs[-1]["response"]["status"] == "completed"
    words = [e for e in evs if e["type"] == "response.audio_timestamp.delta"]
    vis = [e for e in evs if e["type"] == "response.animation_viseme.delta"]
    audio_ms = sum(len(base64.b64decode(e["delta"])) for e in evs if e["type"] == "response.audio.delta") / 48
    assert [w["text"].strip(".,").lower() for w in words] == [
        "the", "capital", "of", "france", "is", "paris", "it", "is", "lovely", "in", "spring"]
    offsets = [w["audio_offset_ms"] for w in words]
    assert offsets == sorted(offsets) and offsets[-1] < audio_ms
    assert vis and all(0 <= v["viseme_id"] <= 21 for v in vis)
    seq = [e["type"] for e in evs]
    assert "response.audio_timestamp.done" in seq and "response.animation_viseme.done" in seq


def _marks_type_check(m: Marks) -> ChunkMarks:
    return m  # mypy: the stand-in's marks fit the protocol
