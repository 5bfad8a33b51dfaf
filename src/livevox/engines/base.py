"""Stage interfaces: VAD, speech-to-text, LLM and text-to-speech.

Each stage is a small typed protocol. Engines load once per process and are shared by all
sessions; anything with per-session state (the VAD's recurrent state) is split into a
per-session stream object. Every method that does model work is async and runs the work off
the event loop, through the stage's `FairExecutor` (see `executor.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..core.audio import Float32Array, Int16Array

#: The internal rate of the VAD and STT path.


class EngineError(Exception):
    """An engine failed. `code` names the failure for the client (`llm_unavailable`, ...)."""

    def __init__(self, stage: str, code: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.code = code
        self.message = message


class ContextOverflow(EngineError):
    """The prompt did not fit the model's context; raised before anything was generated.

    `prompt_tokens` and `limit` are the engine's own figures when it gave them."""

    code_name = "context_length_exceeded"

    def __init__(self, stage: str, message: str, prompt_tokens: int | None = None, limit: int | None = None) -> None:
        super().__init__(stage, self.code_name, message)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


_OVERFLOW = re.compile(
    r"exceeds the available context size|context_length_exceeded|maximum context length"
    r"|context length is|too many tokens|prompt is too long",
    re.IGNORECASE,
)
_NUMBERS = re.compile(r"\d[\d,]*")


def overflow_from(stage: str, message: str) -> ContextOverflow | None:
    """The overflow an engine's error message describes (llama.cpp: "request (4134 tokens) exceeds
    the available context size (4096 tokens)"; OpenAI: `context_length_exceeded`; vLLM: "maximum
    context length is 4096 tokens ... 4134 tokens"), else None."""
    if not _OVERFLOW.search(message):
        return None
    numbers = [int(n.replace(",", "")) for n in _NUMBERS.findall(message)]
    numbers = [n for n in numbers if n >= 16]  # not HTTP-ish small numbers
    prompt = limit = None
    if len(numbers) >= 2:
        limit, prompt = min(numbers[:2]), max(numbers[:2])
    return ContextOverflow(stage, message, prompt, limit)


def estimate_message_tokens(message: dict[str, Any]) -> int:
    """A conservative token count of one chat message when the engine has no tokenizer: a token
    per 3 characters (English BPE averages ~4) plus the chat template's per-message framing."""
    text = str(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        text += json.dumps(call, ensure_ascii=False)
    return len(text) // 3 + 1 + MESSAGE_OVERHEAD_TOKENS


#: Tokens a chat template adds around each message (`<|im_start|>user\n` ... `<|im_end|>\n`).
MESSAGE_OVERHEAD_TOKENS = 8


@runtime_checkable
class Engine(Protocol):
    """What every engine has: a name for logs and `/readyz`, and load/warm-up/close."""

    name: str

    async def load(self) -> None: ...

    async def warmup(self) -> None: ...

    async def close(self) -> None: ...


#: A step a higher layer adds to the start-up rehearsal (`rehearsal.py`): a name for `/readyz` and
#: a coroutine run on the rehearsed question (16 kHz int16) that returns what it did.
RehearsalStep = tuple[str, Callable[[npt.NDArray[np.int16]], Awaitable[dict[str, Any]]]]


# ---------------------------------------------------------------- end of turn


@runtime_checkable
class TurnEngine(Engine, Protocol):
    """P(the user's turn is complete) for the utterance so far (16 kHz float32; Smart Turn).
    `available` False: no model is configured (`turn.engine = "none"`)."""

    available: bool

    async def score(self, audio_f32_16k: Float32Array, session_id: str) -> float: ...


# ---------------------------------------------------------------- VAD


class VADStream(Protocol):
    """Per-session VAD state. `frame_samples` samples of 16 kHz float32 audio per frame."""

    frame_samples: int

    async def probabilities(self, audio: Float32Array, session_id: str) -> list[float]:
        """Speech probability for each whole frame in `audio` (len must be a multiple of frame_samples)."""
        ...

    def reset(self) -> None: ...


class VADEngine(Engine, Protocol):
    def stream(self) -> VADStream: ...


# ---------------------------------------------------------------- STT


@dataclass(slots=True)
class TranscribeOptions:
    #: One ISO-639-1 code, or None: the engine's own (or detected).
    language: str | None = None
    #: Candidates for detection (a comma list from the client); the engine picks one of these.
    languages: tuple[str, ...] = ()
    #: Free text or keywords that bias the recognizer (`input_audio_transcription.prompt`).
    prompt: str | None = None
    #: Words and phrases to favour (Voice Live `phrase_list`).
    phrases: tuple[str, ...] = ()
    model: str | None = None
    #: Decode at temperature 0 only, with no sampled retry when the result looks unsure: for a
    #: short sound over the agent's answer, a retry at a higher temperature turns a hum into
    #: invented words ("Mm-hmm." -> "And then them.", docs/benchmarks.md).
    greedy: bool = False
    #: Part of a turn still in progress (realtime/turn_pieces.py): its text is wanted only when
    #: the turn ends, so it waits behind the transcriptions of other sessions' ended turns.
    background: bool = False

    def hint_text(self) -> str | None:
        """The prompt and the phrases as one text, for engines with a single prompt field."""
        parts = [p for p in (self.prompt, ", ".join(self.phrases)) if p]
        return " ".join(parts) or None


class STTEngine(Engine, Protocol):
    #: True when `transcribe` yields more than one piece (deltas are meaningful).
    streams: bool

    def transcribe(
        self, audio: Float32Array, options: TranscribeOptions, session_id: str
    ) -> AsyncIterator[str]:
        """Yield the transcript of 16 kHz mono float32 `audio` in pieces; joined, they are the transcript."""
        ...


# ---------------------------------------------------------------- LLM


@dataclass(slots=True)
class ChatRequest:
    """An OpenAI Chat Completions shaped request."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)  # chat-completions tool objects
    tool_choice: Any = "auto"
    temperature: float | None = None
    max_tokens: int | None = None
    parallel_tool_calls: bool = True
    #: OpenAI's `reasoning_effort`, for engines that take it (None: the engine's default).
    reasoning_effort: str | None = None
    #: The prompt starts as the session's conversation, which the next turn extends (an engine
    #: with a prompt cache keeps it where that turn will look); False: a side prompt (an
    #: out-of-band response with its own context, an interim filler) that must not push the
    #: conversation out of the cache.
    conversation: bool = True


#: What warm-ups say: a spoken question of typical length, and a typical answer sentence.
WARMUP_QUESTION = "What is the capital of France, and what is it famous for?"
WARMUP_SENTENCE = "Paris is the capital of France, famous for the Eiffel Tower, its museums and its food."


def warmup_request(default_instructions: str, max_tokens: int = 1) -> ChatRequest:
    """The default instructions (so a prompt cache holds them, as the first turn's prefix) and a
    question of typical length; `max_tokens` > 1 also runs the one-token decode steps."""
    messages: list[dict[str, Any]] = []
    if default_instructions:
        messages.append({"role": "system", "content": default_instructions})
    messages.append({"role": "user", "content": WARMUP_QUESTION})
    return ChatRequest(messages=messages, max_tokens=max_tokens)


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Finish:
    reason: Literal["stop", "length", "tool_calls"]
    input_tokens: int = 0
    output_tokens: int = 0
    #: Prompt tokens the engine took from its prompt cache instead of evaluating them.
    cached_tokens: int = 0


def cached_prompt_tokens(usage: dict[str, Any] | None) -> int:
    """`usage.prompt_tokens_details.cached_tokens` of an OpenAI-style usage object (OpenAI,
    vLLM and llama.cpp report it), 0 when absent."""
    details = (usage or {}).get("prompt_tokens_details")
    if not isinstance(details, dict):
        return 0
    try:
        return max(0, int(details.get("cached_tokens") or 0))
    except (TypeError, ValueError):
        return 0


LLMEvent = TextDelta | ToolCallDelta | Finish


class LLMEngine(Engine, Protocol):
    def stream(self, request: ChatRequest, session_id: str) -> AsyncIterator[LLMEvent]:
        """Stream the answer. Closing the iterator early (aclose) must stop generation.
        A prompt that does not fit raises `ContextOverflow` before the first event."""
        ...

    def context_tokens(self) -> int | None:
        """Tokens one request may hold, prompt and answer together (None: no known limit)."""
        ...

    def count_tokens(self, message: dict[str, Any]) -> int:
        """Tokens one chat message takes in the prompt, its template framing included. With the
        engine's own tokenizer where it has one, else `estimate_message_tokens`."""
        ...


def continues_assistant(llm: object) -> bool:
    """Whether `llm` continues a request's final assistant message instead of answering after it
    (prefill), so that a paused answer can resume from its own text (realtime/response.py)."""
    return bool(getattr(llm, "continues_assistant", False))


def free_roles(llm: object) -> bool:
    """Whether `llm`'s chat template takes a system message after the conversation and
    consecutive messages of one role (ChatML), so a prompt can keep its cached prefix
    (`llm.chat_roles`)."""
    return bool(getattr(llm, "free_roles", False))


class Prefills(Protocol):
    """An LLM with a prompt cache that can evaluate a prompt ahead of the request that will
    extend it (optional: without it, a long turn's prompt is evaluated when the turn ends)."""

    async def prefill(self, request: ChatRequest, session_id: str) -> None:
        """Evaluate `request`'s prompt into the cache, generating nothing worth keeping. Best
        effort: it never raises for the engine's own failures."""
        ...


class EndOfTurnText(Protocol):
    """An LLM that can say how likely the user's words so far are a finished turn (optional:
    the end-of-turn policy falls back to its transcript rules without it)."""

    async def end_of_turn_probability(self, transcript: str, session_id: str) -> float | None:
        """P(the user's message ends after `transcript`), or None when the engine cannot tell."""
        ...


# ---------------------------------------------------------------- TTS


@dataclass(slots=True)
class SynthesisOptions:
    voice: str | None = None
    speed: float = 1.0
    #: Where the job goes in the TTS queue (core/executor.py: lower first; a function is asked
    #: when a worker picks). Engines that queue model work pass it on.
    priority: int | Callable[[], int] = 1


def speakable(text: str) -> bool:
    """Text with a letter or digit: worth synthesising (TTS engines read lone punctuation aloud,
    ", ! ?" -> "exclamation")."""
    return any(ch.isalnum() for ch in text)


class TTSEngine(Engine, Protocol):
    sample_rate: int

    def voices(self) -> list[str]: ...

    def synthesize(
        self, text: str, options: SynthesisOptions, session_id: str
    ) -> AsyncIterator[Int16Array]:
        """Yield mono int16 audio at `sample_rate` for `text`, in order, as soon as each piece is ready."""
        ...


# ---------------------------------------------------------------- optional capabilities
#
# What only some engines can do. Callers test with `isinstance(engine, AlignedTTS)` (the
# protocols are runtime-checkable), never with `getattr`, so a capability is typed where it is
# used and a wrapper (a fallback chain) that does not forward one visibly lacks it.


@dataclass(frozen=True, slots=True)
class WordMark:
    """One spoken word's place in the response's audio."""

    audio_offset_ms: int
    audio_duration_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class VisemeMark:
    """A mouth shape (Azure viseme id 0-21) from `audio_offset_ms` on."""

    audio_offset_ms: int
    viseme_id: int


class ChunkMarks(Protocol):
    """The words and visemes of one synthesized chunk, offsets in ms of the response's audio."""

    @property
    def words(self) -> Sequence[WordMark]: ...

    @property
    def visemes(self) -> Sequence[VisemeMark]: ...


@runtime_checkable
class AlignedTTS(Protocol):
    """TTS that also gives word timings and visemes (`output_audio_timestamp_types: ["word"]`,
    `animation.outputs: ["viseme_id"]`).

    `new_timeline()` makes the per-response state (opaque to the caller) that `synthesize_aligned`
    threads through a response's calls: each chunk's marks are offset from the first sample that
    this timeline's calls produced, so marks stay right across clauses."""

    def new_timeline(self) -> Any: ...

    def synthesize_aligned(
        self, text: str, options: SynthesisOptions, session_id: str, timeline: Any
    ) -> AsyncIterator[tuple[Int16Array, ChunkMarks]]:
        """Like `TTSEngine.synthesize`, each audio chunk with its marks."""
        ...


@runtime_checkable
class HealthReporting(Protocol):
    """An engine that keeps a record of its requests (a remote one: "ok"/"failing", counts, last
    error), for `/readyz`."""

    def health(self) -> dict[str, Any]: ...


@runtime_checkable
class ChainMembers(Protocol):
    """A stage served by several engines (a fallback chain): each member's state, for `/readyz`."""

    def members_status(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class DescribesModel(Protocol):
    """An engine that names what it runs (a model file, a remote model and its server), for logs."""

    @property
    def model_file(self) -> str: ...


@runtime_checkable
class RemoteEngine(Protocol):
    """`remote` True: the engine calls a server elsewhere, so at start the registry waits for it."""

    @property
    def remote(self) -> bool: ...


@runtime_checkable
class EmbeddedModel(Protocol):
    """`embedded` True: the engine runs the small model the install bundles (demo-grade), not one
    the operator configured; the registry says so at start."""

    @property
    def embedded(self) -> bool: ...


# ---------------------------------------------------------------- the set a session uses


class VoiceResolver(Protocol):
    """Client voice names -> the TTS engine's voices (`engines.voices.VoiceMap`)."""

    def resolve(self, voice: Any, param: str = "session.voice", *, lenient: bool = False) -> str: ...

    def check(self, voice: Any, param: str = "session.voice") -> None: ...


class EngineSet(Protocol):
    """The loaded engines as a session sees them (built by `engines.registry.Engines`)."""

    vad: VADEngine
    turn: TurnEngine
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine

    @property
    def voices(self) -> VoiceResolver: ...
