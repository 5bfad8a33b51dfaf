"""Speaking an interim filler inside a response (see interim.py for the fields and the wire choice).

The filler is synthesized whole (it is short), then sent paced at real time with a small lead, so
that it can still be cut: once the answer's first audio is ready, the filler ends at the next word
boundary and the answer follows. While the filler speaks, the answer's own events wait (the run
holds them), so the client hears one voice at a time. Word boundaries come from the TTS's word
marks where it has them, else from the quiet gaps of the audio.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..core import audio as audio_codec
from ..core.audio import ITEM_RATE, Int16Array
from ..core.ids import new_id
from ..engines.base import AlignedTTS, ChatRequest, SynthesisOptions, TextDelta, WordMark
from . import interim
from .conversation import ConversationItem

if TYPE_CHECKING:
    from ..engines.base import EngineSet
    from .ports import SessionTransport
    from .response_params import ResponseContext, ResponseParams


class _Host(Protocol):
    id: str
    engines: EngineSet
    transport: SessionTransport


class FillerRun(Protocol):
    """What the filler needs of its response (response.ResponseRun)."""

    id: str
    params: ResponseParams
    context: ResponseContext
    output: list[dict[str, Any]]
    answer_audio: asyncio.Event
    answer_llm: asyncio.Event
    cancel_reason: str | None

    @property
    def host(self) -> _Host: ...

    async def hold(self) -> None: ...

    async def release(self) -> None: ...

    def last_user_text(self) -> str: ...

    async def add_item_now(self, entry: ConversationItem, index: int) -> None: ...

    async def send_audio(self, msg: ConversationItem, index: int, pcm: Int16Array) -> None: ...

#: How far the filler's audio may run ahead of real time: what is still unsent can be cut.
LEAD_MS = 300
BLOCK_MS = 100
#: A quiet gap at least this long between loud stretches is a word boundary (no word marks).
GAP_MS = 40
QUIET_DB = 30.0
FADE_MS = 10


def quiet_boundaries(pcm: Int16Array, rate: int = ITEM_RATE) -> list[int]:
    """Sample positions inside quiet gaps of `GAP_MS` or more (the middle of each), and the end."""
    block = rate // 100
    n = pcm.size // block
    if n == 0:
        return [pcm.size]
    rms = np.sqrt(np.mean(np.square(pcm[: n * block].astype(np.float64).reshape(n, block)), axis=1))
    quiet = rms < rms.max() * 10 ** (-QUIET_DB / 20)
    out: list[int] = []
    i = 0
    while i < n:
        if quiet[i]:
            j = i
            while j < n and quiet[j]:
                j += 1
            if j - i >= GAP_MS // 10 and i > 0 and j < n:
                out.append((i + j) // 2 * block)
            i = j
        else:
            i += 1
    out.append(pcm.size)
    return out


class InterimSpeaker:
    """One filler of one response."""

    def __init__(self, run: FillerRun, cfg: dict[str, Any], trigger: str,
                 emit: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.run = run
        self.cfg = cfg
        self.trigger = trigger
        self._emit = emit
        self.entry: ConversationItem | None = None
        self.index = -1
        self.spoken = ""
        self.finished = False
        self.marks: list[WordMark] = []
        self._timestamps = False

    # ------------------------------------------------------------ text

    async def text(self) -> str | None:
        """The filler's words; None when the answer got ready first."""
        if self.cfg["type"] == interim.STATIC:
            return str(random.choice(self.cfg["texts"]))
        return await self._llm_text()

    async def _llm_text(self) -> str | None:
        run = self.run
        llm = run.host.engines.llm
        user = run.last_user_text()
        messages = [{"role": "system", "content": self.cfg["instructions"]}]
        if user:
            messages.append({"role": "user", "content": user})
        req = ChatRequest(messages=messages, max_tokens=self.cfg["max_completion_tokens"], temperature=0.7,
                          tool_choice="none", conversation=False)

        async def generate() -> str:
            parts = []
            async for ev in llm.stream(req, run.host.id):
                if isinstance(ev, TextDelta):
                    parts.append(ev.text)
            return "".join(parts)

        gen = asyncio.ensure_future(generate())
        # On a one-slot engine the filler's request would hold up the answer's: it gives way.
        gives_way = getattr(llm, "parallel", 2) <= 1
        stops = [asyncio.ensure_future(run.answer_audio.wait())]
        if gives_way:
            stops.append(asyncio.ensure_future(run.answer_llm.wait()))
        try:
            await asyncio.wait([gen, *stops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for s in stops:
                s.cancel()
        if not gen.done():
            gen.cancel()
            if run.answer_audio.is_set():
                return None
            return random.choice(interim.DEFAULT_TEXTS)  # the engine was needed for the answer
        text = gen.result().strip().strip('"').strip()
        return text or random.choice(interim.DEFAULT_TEXTS)

    # ------------------------------------------------------------ speech

    def _too_late(self) -> bool:
        return self.trigger == "latency" and self.run.answer_audio.is_set()

    async def speak(self) -> None:
        run = self.run
        text = await self.text()
        if text is None or self._too_late():
            return
        pcm, ends, words = await self._synthesize(text)
        if pcm.size == 0 or self._too_late():
            return
        await run.hold()
        try:
            await self._open()
            await self._play(pcm, ends, words)
        finally:
            await self.close("incomplete" if run.cancel_reason is not None else "completed")
            await run.release()

    async def _synthesize(self, text: str) -> tuple[Int16Array, list[int], list[str]]:
        """The filler's audio at 24 kHz, where each word ends in it, and the words (the voice's
        word marks, kept in `self.marks` for word timestamps, when it has them)."""
        run = self.run
        tts = run.host.engines.tts
        opts = SynthesisOptions(voice=run.context.voice, speed=run.params.speed, priority=0)  # a first audio
        resampler = audio_codec.StreamResampler(tts.sample_rate, ITEM_RATE)
        chunks: list[Int16Array] = []
        ends: list[int] = []
        words: list[str] = []
        if isinstance(tts, AlignedTTS):
            async for chunk, marks in tts.synthesize_aligned(text, opts, run.host.id, tts.new_timeline()):
                chunks.append(resampler.process(chunk))
                for w in marks.words:
                    self.marks.append(w)
                    words.append(w.text)
                    ends.append((w.audio_offset_ms + w.audio_duration_ms) * ITEM_RATE // 1000)
        else:
            async for chunk in tts.synthesize(text, opts, run.host.id):
                chunks.append(resampler.process(chunk))
        chunks.append(resampler.flush())
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        if words and len(words) == len(text.split()):
            words = text.split()  # the client's own words, punctuation kept ("moment." not "moment")
        if not words:  # no marks: the quiet gaps, and the words spread over them
            words = text.split()
            gaps = quiet_boundaries(pcm)
            ends = [gaps[min(len(gaps) - 1, round((i + 1) * len(gaps) / len(words)) - 1)]
                    for i in range(len(words))]
        ends = [min(e, pcm.size) for e in ends]
        ends[-1] = pcm.size
        return pcm, ends, words

    async def _open(self) -> None:
        run = self.run
        item = {"id": new_id("item"), "object": "realtime.item", "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}
        self.entry = ConversationItem(item, in_context=False)
        self.index = len(run.output)
        run.output.append(item)
        await run.add_item_now(self.entry, self.index)
        await self._emit({"type": "response.content_part.added", **self._ids(),
                          "part": {"type": "audio", "transcript": ""}})

    def _ids(self) -> dict[str, Any]:
        assert self.entry is not None
        return {"response_id": self.run.id, "item_id": self.entry.id, "output_index": self.index,
                "content_index": 0}

    async def _play(self, pcm: Int16Array, ends: list[int], words: list[str]) -> None:
        run = self.run
        assert self.entry is not None
        block = ITEM_RATE * BLOCK_MS // 1000
        sent, said = 0, 0
        cut = pcm.size
        t0 = time.monotonic()
        while sent < cut:
            if self.trigger == "latency" and run.answer_audio.is_set() and cut == pcm.size:
                cut = next(e for e in ends if e >= sent)  # the answer is ready: end with this word
                if cut <= sent:
                    break
                pcm = _fade_out(pcm, cut)
            end = min(cut, sent + block)
            while said < len(words) and (said == 0 or ends[said - 1] < end or end >= pcm.size):
                delta = words[said] if said == 0 else " " + words[said]
                self.spoken += delta
                await self._emit({"type": "response.audio_transcript.delta", **self._ids(), "delta": delta})
                if run.context.word_timestamps and said < len(self.marks):
                    self._timestamps = True
                    w = self.marks[said]
                    await self._emit({"type": "response.audio_timestamp.delta", **self._ids(),
                                      "audio_offset_ms": w.audio_offset_ms, "audio_duration_ms": w.audio_duration_ms,
                                      "text": w.text, "timestamp_type": "word"})
                said += 1
            await run.send_audio(self.entry, self.index, pcm[sent:end])
            sent = end
            ahead = sent * 1000 / ITEM_RATE - (time.monotonic() - t0) * 1000
            if ahead > LEAD_MS and not self._too_late():
                await _sleep_until(run.answer_audio, (ahead - LEAD_MS) / 1000)

    async def close(self, status: str) -> None:
        """The filler item's closing events (also when its response was cancelled mid-filler)."""
        if self.entry is None or self.finished:
            return
        self.finished = True
        run = self.run
        ids = self._ids()
        part = {"type": "audio", "transcript": self.spoken}
        if run.host.transport.audio_in_events:
            await self._emit({"type": "response.audio.done", **ids})
        await self._emit({"type": "response.audio_transcript.done", **ids, "transcript": self.spoken})
        if self._timestamps:
            await self._emit({"type": "response.audio_timestamp.done", **ids})
        await self._emit({"type": "response.content_part.done", **ids, "part": part})
        item = self.entry.item
        item["content"], item["status"] = [part], status
        run.output[self.index] = item
        await self._emit({"type": "response.output_item.done", "response_id": run.id, "output_index": self.index,
                          "item": dict(item)})
        if run.params.in_conversation:
            await self._emit({"type": "conversation.item.done", "item": dict(item)})


def _fade_out(pcm: Int16Array, end: int) -> Int16Array:
    """`pcm` with a short fade before `end`: words run together, and a hard cut would click."""
    n = min(end, ITEM_RATE * FADE_MS // 1000)
    out = pcm.copy()
    out[end - n:end] = (out[end - n:end] * np.linspace(1.0, 0.0, n)).astype(np.int16)
    return out


async def _sleep_until(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set meanwhile (the answer got ready)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=seconds)
    finally:
        waiter.cancel()
