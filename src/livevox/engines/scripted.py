"""Scripted stand-in engines for protocol tests. They load no model and answer instantly.

These are NOT real engines: they exist so the Realtime protocol, turn-taking and error paths
can be tested deterministically and fast. Each is named "scripted-<stage>" so `/readyz` and
logs never pass them off as models. Select them with `engine = "scripted"` per stage.

Test hooks are class-level (per process) and documented on each class; call
`reset_scripted()` between tests to restore the defaults.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.audio import Float32Array, Int16Array
from .base import (
    ChatRequest,
    ContextOverflow,
    EngineError,
    Finish,
    LLMEvent,
    SynthesisOptions,
    TextDelta,
    ToolCallDelta,
    TranscribeOptions,
)
from .voices import effective_speed

FRAME_SAMPLES = 512


def _rms(audio: Float32Array) -> float:
    if audio.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


# ---------------------------------------------------------------- VAD



#: How many requests a stand-in remembers for assertions.
MAX_RECORDED = 1000


def _record(log: list[Any], entry: Any) -> None:
    log.append(entry)
    if len(log) > MAX_RECORDED:
        del log[: len(log) - MAX_RECORDED]

class _NothingToLoad:
    """Stand-ins have no model: loading, warming and closing are no-ops."""

    #: Nothing to warm at a turn's sizes: the start-up rehearsal skips stand-ins (and so leaves
    #: their records, which tests assert on, untouched).
    rehearse: ClassVar[bool] = False

    async def load(self) -> None:
        return None

    async def warmup(self) -> None:
        return None

    async def close(self) -> None:
        return None


class ScriptedVADStream:
    """Stand-in VAD stream: stateless, one RMS decision per 512-sample frame."""

    frame_samples = FRAME_SAMPLES

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    async def probabilities(self, audio: Float32Array, session_id: str) -> list[float]:
        n = len(audio)
        if n % FRAME_SAMPLES:
            raise ValueError(f"VAD audio length {n} is not a multiple of {FRAME_SAMPLES}")
        frames = np.asarray(audio, dtype=np.float32).reshape(-1, FRAME_SAMPLES)
        return [1.0 if _rms(f) > self.threshold else 0.0 for f in frames]

    def reset(self) -> None:
        pass


class ScriptedVAD(_NothingToLoad):
    """Stand-in VAD: speech probability 1.0 for a frame whose RMS exceeds `threshold`, else 0.0.

    Deterministic: a test makes "speech" with any tone/noise above ~0.02 RMS (-34 dBFS) and
    "silence" with zeros.
    """

    name = "scripted-vad"
    #: RMS above which a frame counts as speech.
    threshold: ClassVar[float] = 0.02

    def stream(self) -> ScriptedVADStream:
        return ScriptedVADStream(self.threshold)


# ---------------------------------------------------------------- STT


class ScriptedSTT(_NothingToLoad):
    """Stand-in STT.

    Transcript rules, in order:
    - `ScriptedSTT.fail_next = True`: the next call raises `EngineError("stt", "stt_error", ...)`
      (once; the flag resets), for testing `conversation.item.input_audio_transcription.failed`.
    - `ScriptedSTT.script(["first", "second"])`: the next calls return these texts in order
      (each consumed once), whatever the audio.
    - `ScriptedSTT.default_text` (default "scripted transcript") if the audio has energy
      (RMS > `ScriptedVAD.threshold`), else "".
    The transcript is yielded word by word (`streams = True`), so delta events can be tested.
    """

    name = "scripted-stt"
    streams = True

    default_text: ClassVar[str] = "scripted transcript"
    fail_next: ClassVar[bool] = False
    _queue: ClassVar[deque[str]] = deque()
    #: Length in samples (16 kHz) of the audio each call was given, newest last.
    heard: ClassVar[deque[int]] = deque(maxlen=1000)
    #: The options of each call, newest last.
    options: ClassVar[deque[TranscribeOptions]] = deque(maxlen=1000)

    @classmethod
    def script(cls, texts: list[str] | tuple[str, ...]) -> None:
        """Queue transcripts for the next calls (one per call)."""
        cls._queue.extend(texts)

    @classmethod
    def reset(cls) -> None:
        cls.default_text = "scripted transcript"
        cls.fail_next = False
        cls._queue.clear()
        cls.heard.clear()
        cls.options.clear()

    async def transcribe(
        self, audio: Float32Array, options: TranscribeOptions, session_id: str
    ) -> AsyncIterator[str]:
        cls = type(self)
        cls.heard.append(len(audio))
        cls.options.append(options)
        if cls.fail_next:
            cls.fail_next = False
            raise EngineError("stt", "stt_error", "scripted STT failure (fail_next)")
        if cls._queue:
            text = cls._queue.popleft()
        elif _rms(np.asarray(audio, dtype=np.float32)) > ScriptedVAD.threshold:
            text = cls.default_text
        else:
            text = ""
        for i, word in enumerate(text.split()):
            yield word if i == 0 else " " + word


# ---------------------------------------------------------------- LLM


@dataclass(slots=True)
class ScriptedToolCall:
    """A tool call the scripted LLM makes when the last user message matches `when`."""

    name: str
    arguments: dict[str, Any]
    #: Regex searched (case-insensitive) in the last user message's text.
    when: str = ".*"
    call_id: str = "call_scripted_1"


class ScriptedLLM(_NothingToLoad):
    """Stand-in LLM. Streams `reply` word by word (one TextDelta per word, spaces kept).

    Hooks (class-level; `reset()` restores them):
    - `reply`: the answer text (default "This is a scripted answer. It has two sentences.").
    - `tool_call = ScriptedToolCall(name, arguments, when=regex)`: when the request has tools
      including `name` and the last user message matches `when`, emit that call instead of text:
      ToolCallDelta(index 0, call_id, name), then the JSON arguments in three pieces, then
      Finish("tool_calls"). Requests whose last message is a tool result get the text reply.
    - `fail_next = True`: the next call raises `EngineError("llm", "llm_error", ...)` (once).
    - `token_delay`: seconds to sleep before each token (e.g. 0.05 for barge-in tests).
    - `first_token_delay`: seconds more before a stream's first token (a slow prefill).
    - `max_tokens` on the request is honoured: one word = one token; a cut answer ends with
      Finish("length").
    - `continues = True`: a request ending with an assistant message that starts the reply gets
      the rest of the reply (prefill, as llama.cpp does); `continues_assistant` reports it.
    - `context_window`: when set, a request whose words plus `max_tokens` exceed it raises
      `ContextOverflow` (llama.cpp's message) before any token; `context_tokens()` reports it.
    Usage counts: input = words in all messages, output = tokens emitted. `count_tokens` counts
    a message's words plus one.
    `calls` records the last `MAX_RECORDED` requests (for assertions; bounded so that a long
    benchmark on the stand-ins does not grow the heap the garbage collector scans), and
    `prefills` the requests given to `prefill` (which does nothing else).
    """

    name = "scripted-llm"

    reply: ClassVar[str] = "This is a scripted answer. It has two sentences."
    tool_call: ClassVar[ScriptedToolCall | None] = None
    fail_next: ClassVar[bool] = False
    token_delay: ClassVar[float] = 0.0
    first_token_delay: ClassVar[float] = 0.0
    context_window: ClassVar[int | None] = None
    continues: ClassVar[bool] = False
    calls: ClassVar[list[ChatRequest]] = []
    prefills: ClassVar[list[ChatRequest]] = []

    @classmethod
    def reset(cls) -> None:
        cls.reply = "This is a scripted answer. It has two sentences."
        cls.tool_call = None
        cls.fail_next = False
        cls.token_delay = 0.0
        cls.first_token_delay = 0.0
        cls.context_window = None
        cls.continues = False
        cls.calls = []
        cls.prefills = []

    @property
    def continues_assistant(self) -> bool:
        return type(self).continues

    def context_tokens(self) -> int | None:
        return type(self).context_window

    def count_tokens(self, message: dict[str, Any]) -> int:
        return len(self._text(message.get("content")).split()) + 1

    @staticmethod
    def _text(content: Any) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # content parts
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return ""

    def _wants_tool(self, request: ChatRequest) -> ScriptedToolCall | None:
        call = type(self).tool_call
        if call is None or not request.tools or request.tool_choice == "none":
            return None
        names = {(t.get("function") or {}).get("name", t.get("name")) for t in request.tools}
        if call.name not in names or not request.messages:
            return None
        last = request.messages[-1]
        if last.get("role") != "user":
            return None
        return call if re.search(call.when, self._text(last.get("content")), re.IGNORECASE) else None

    async def _tick(self) -> None:
        delay = type(self).token_delay
        # sleep(0) still yields, so even an instant stream lets other tasks (barge-in) run.
        await asyncio.sleep(delay)

    async def prefill(self, request: ChatRequest, session_id: str) -> None:
        _record(type(self).prefills, request)

    async def stream(self, request: ChatRequest, session_id: str) -> AsyncIterator[LLMEvent]:
        cls = type(self)
        _record(cls.calls, request)
        if cls.fail_next:
            cls.fail_next = False
            raise EngineError("llm", "llm_error", "scripted LLM failure (fail_next)")
        input_tokens = sum(len(self._text(m.get("content")).split()) for m in request.messages)
        window = cls.context_window
        if window is not None and input_tokens + (request.max_tokens or 0) > window:
            raise ContextOverflow("llm", f"request ({input_tokens + (request.max_tokens or 0)} tokens) exceeds "
                                  f"the available context size ({window} tokens)", input_tokens, window)
        call = self._wants_tool(request)
        if call is not None:
            args = json.dumps(call.arguments)
            third = max(1, len(args) // 3)
            await self._tick()
            yield ToolCallDelta(index=0, call_id=call.call_id, name=call.name)
            pieces = [args[:third], args[third : 2 * third], args[2 * third :]]
            for piece in pieces:
                await self._tick()
                yield ToolCallDelta(index=0, arguments=piece)
            yield Finish("tool_calls", input_tokens=input_tokens, output_tokens=len(pieces) + 1)
            return
        words = cls.reply.split(" ")
        start = 0
        last = request.messages[-1] if request.messages else {}
        prefix = self._text(last.get("content")) if last.get("role") == "assistant" else ""
        if cls.continues and prefix and cls.reply.startswith(prefix):
            start = len(prefix.split(" "))
        limit = request.max_tokens if request.max_tokens is not None else len(words)
        emitted = 0
        if cls.first_token_delay:
            await asyncio.sleep(cls.first_token_delay)
        for i, word in enumerate(words[start:], start):
            if emitted >= limit:
                yield Finish("length", input_tokens=input_tokens, output_tokens=emitted)
                return
            await self._tick()
            yield TextDelta(word if i == 0 else " " + word)
            emitted += 1
        yield Finish("stop", input_tokens=input_tokens, output_tokens=emitted)


# ---------------------------------------------------------------- TTS


class ScriptedTTS(_NothingToLoad):
    """Stand-in TTS: 24 kHz, a quiet tone (amplitude ~0.05, `frequency` Hz, 440 unless a test
    tells one answer's audio from another's by it), 60 ms per word, one chunk per call, instantly.
    Empty or punctuation-only text yields nothing. `speed` shortens it.
    `calls` records the last `MAX_RECORDED` texts synthesised (for assertions)."""

    name = "scripted-tts"
    sample_rate = 24000
    MS_PER_WORD = 60
    AMPLITUDE = 1600  # int16; quiet but clearly non-zero

    frequency: ClassVar[float] = 440.0
    calls: ClassVar[list[str]] = []

    @classmethod
    def reset(cls) -> None:
        cls.frequency = 440.0
        cls.calls = []

    def voices(self) -> list[str]:
        return ["scripted"]

    async def synthesize(
        self, text: str, options: SynthesisOptions, session_id: str
    ) -> AsyncIterator[Int16Array]:
        _record(type(self).calls, text)
        words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
        if not words:
            return
        speed = min(4.0, max(0.25, effective_speed(options)))
        n = round(self.sample_rate * self.MS_PER_WORD / 1000 * len(words) / speed)
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        yield (np.sin(2 * np.pi * type(self).frequency * t) * self.AMPLITUDE).astype(np.int16)


class ScriptedTurn(_NothingToLoad):
    """Stand-in end-of-turn model: every utterance scores `ScriptedTurn.score_value` (P(complete)),
    so a test sets what the audio "says" and checks what the policy makes of the words."""

    name = "scripted-turn"
    available = True
    score_value: ClassVar[float] = 0.9

    async def score(self, audio_f32_16k: Float32Array, session_id: str) -> float:
        return type(self).score_value


def reset_scripted() -> None:
    """Restore every scripted engine's hooks to their defaults."""
    ScriptedTurn.score_value = 0.9
    ScriptedSTT.reset()
    ScriptedLLM.reset()
    ScriptedTTS.reset()
    ScriptedVAD.threshold = 0.02


__all__ = [
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedTTS",
    "ScriptedToolCall",
    "ScriptedTurn",
    "ScriptedVAD",
    "reset_scripted",
]
