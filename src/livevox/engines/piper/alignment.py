"""Word timestamps and visemes for synthesized speech, from Piper's own phoneme durations.

**Source of timing.** Piper voices are VITS models: a duration predictor decides how many audio
frames (of `hop_length` = 256 samples) each phoneme id gets, and the decoder renders exactly
that many. The per-id frame counts are the graph's `Ceil` tensor; piper-tts 1.8.0 returns them
as `AudioChunk.phoneme_alignments` when the model exposes that tensor as an output
(`synthesize(..., include_alignments=True)`). The released voices (joe included) do not, and
piper's own patcher needs the `onnx` package; `alignment_model_bytes()` adds the output with a
~60-line protobuf edit instead, in memory, so no extra dependency is needed. These durations
are the timing the audio was generated from, not an estimate. Against faster-whisper tiny.en
`word_timestamps=True` on the same audio (`benchmarks/echo_noise.py --alignment`, 72 words):
word starts differ by 61 ms on average (median 51, p90 122, max 353), word ends by 90 ms
(Whisper's own timestamps are the looser of the two: they come from attention weights).

**Words.** espeak-ng phonemizes a sentence into space-separated phoneme groups that do not
always map 1:1 to the text's words ("in the" -> "ɪnðə", "4567" -> four groups). Each word is
phonemized alone, and the words' phonemes are aligned to the sentence's with difflib; a word
spans from its first to its last matched phoneme, snapped out to its group's edges when the
group is its own.

**Fallback.** For a voice whose graph has no `Ceil` tensor (or another TTS engine that only
gives audio), `proportional_spans()` spreads the audio's voiced span over the phonemes with
per-class weights (vowels longer than consonants, pauses at punctuation): word starts land
73 ms from Piper's true ones on average (p90 144 ms).

**Visemes.** Azure's 22 visemes (ids 0-21, the en-US table of Azure Speech's "Map phonemes to
visemes"), from espeak IPA:

| id | IPA (espeak)                 | id | IPA (espeak)          |
|----|------------------------------|----|-----------------------|
| 0  | silence, pauses              | 11 | aɪ                    |
| 1  | æ ə ʌ ɐ ᵻ a                  | 12 | h                     |
| 2  | ɑ ɒ                          | 13 | ɹ r                   |
| 3  | ɔ                            | 14 | l ɫ                   |
| 4  | ɛ ʊ eɪ e                     | 15 | s z                   |
| 5  | ɝ ɚ ɜ                        | 16 | ʃ ʒ tʃ dʒ             |
| 6  | i ɪ j ɨ                      | 17 | ð                     |
| 7  | u w ʉ                        | 18 | f v                   |
| 8  | o oʊ                         | 19 | t d n θ ɾ ʔ n̩         |
| 9  | aʊ                           | 20 | k ɡ g ŋ x             |
| 10 | ɔɪ                           | 21 | p b m                 |

Stress marks (ˈ ˌ) and the length mark (ː) have durations of their own in Piper; they extend
their neighbour and emit no viseme.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..base import VisemeMark, WordMark


@dataclass(slots=True)
class PhonemeSpan:
    phoneme: str
    start: int  # sample offset in the chunk
    end: int


# ---------------------------------------------------------------- viseme table

VISEME_OF: dict[str, int] = {}
for _vid, _phones in {
    1: "æ ə ʌ ɐ ᵻ a",
    2: "ɑ ɒ",
    3: "ɔ",
    4: "ɛ ʊ eɪ e",
    5: "ɝ ɚ ɜ",
    6: "i ɪ j ɨ",
    7: "u w ʉ",
    8: "o oʊ",
    9: "aʊ",
    10: "ɔɪ",
    11: "aɪ",
    12: "h",
    13: "ɹ r",
    14: "l ɫ",
    15: "s z",
    16: "ʃ ʒ tʃ dʒ",
    17: "ð",
    18: "f v",
    19: "t d n θ ɾ ʔ",
    20: "k ɡ g ŋ x",
    21: "p b m",
}.items():
    for _p in _phones.split():
        VISEME_OF[_p] = _vid
# Two-codepoint phonemes that are one mouth movement (Piper emits them as separate codepoints).
_DIGRAPHS = {"eɪ", "aɪ", "aʊ", "ɔɪ", "oʊ", "tʃ", "dʒ"}
_MARKS_BEFORE = {"ˈ", "ˌ"}  # belong to the next phoneme
_MARKS_AFTER = {"ː", "ˑ", "ʲ", "̩", "̃", "ʰ"}  # belong to the previous one
_PAUSES = set(".,;:!?—…()\"'-")
SILENCE = 0

_STRIP = ",;:!?\"“”‘’()[]{}«»…—–"


def viseme_of(phoneme: str) -> int | None:
    """Azure viseme id for one espeak phoneme (or digraph); None for marks; 0 for pauses."""
    if phoneme in _MARKS_BEFORE or phoneme in _MARKS_AFTER:
        return None
    if phoneme in VISEME_OF:
        return VISEME_OF[phoneme]
    if phoneme == " " or phoneme in _PAUSES or phoneme in ("^", "$", "_"):
        return SILENCE
    base = phoneme[:1]
    return VISEME_OF.get(base, SILENCE)


# ---------------------------------------------------------------- making the voice output durations


def _varint(b: bytes | memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        x = b[i]
        i += 1
        result |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return result, i


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        x = n & 0x7F
        n >>= 7
        if n:
            out.append(x | 0x80)
        else:
            out.append(x)
            return bytes(out)


def _fields(b: bytes | memoryview, start: int, end: int) -> Iterable[tuple[int, int, int, int]]:
    """Protobuf fields in b[start:end]: (field number, tag start, value start, value end)."""
    i = start
    while i < end:
        tag_start = i
        tag, i = _varint(b, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, j = _varint(b, i)
        elif wire == 1:
            j = i + 8
        elif wire == 5:
            j = i + 4
        elif wire == 2:
            n, i = _varint(b, i)
            j = i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, tag_start, i, j
        i = j


def alignment_model_bytes(model: bytes) -> tuple[bytes, str | None]:
    """A Piper ONNX model with its `Ceil` duration tensor added as a second graph output.

    Returns (model bytes, tensor name), or (the input, None) if the graph has no single Ceil
    node or already outputs it. This is what `piper.patch_voice_with_alignment` does with the
    `onnx` package, done on the protobuf encoding directly: ModelProto.graph is field 7,
    GraphProto.node field 1 and .output field 12, NodeProto.output field 2 and .op_type field 4,
    ValueInfoProto.name field 1.
    """
    mv = memoryview(model)
    graph: tuple[int, int, int] | None = None  # (tag_start, value_start, value_end)
    for field, tag_start, vs, ve in _fields(mv, 0, len(mv)):
        if field == 7:
            graph = (tag_start, vs, ve)
    if graph is None:
        return model, None
    ceil_outputs: list[str] = []
    outputs: list[str] = []
    for field, _, vs, ve in _fields(mv, graph[1], graph[2]):
        if field == 1:
            op, outs = "", []
            for nf, _, ns, ne in _fields(mv, vs, ve):
                if nf == 4:
                    op = bytes(mv[ns:ne]).decode()
                elif nf == 2:
                    outs.append(bytes(mv[ns:ne]).decode())
            if op == "Ceil":
                ceil_outputs.extend(outs)
        elif field == 12:
            for vf, _, ns, ne in _fields(mv, vs, ve):
                if vf == 1:
                    outputs.append(bytes(mv[ns:ne]).decode())
    if len(ceil_outputs) != 1 or ceil_outputs[0] in outputs:
        return model, None
    name = ceil_outputs[0].encode()
    value_info = b"\x0a" + _encode_varint(len(name)) + name  # ValueInfoProto{name}
    new_output = b"\x62" + _encode_varint(len(value_info)) + value_info  # GraphProto.output (12, LEN)
    graph_len = graph[2] - graph[1] + len(new_output)
    patched = b"".join(
        (
            model[: graph[0]],
            b"\x3a" + _encode_varint(graph_len),  # ModelProto.graph (7, LEN)
            model[graph[1] : graph[2]],
            new_output,
            model[graph[2] :],
        )
    )
    return patched, ceil_outputs[0]


def alignment_session(onnx_path: str | Path, sess_options: Any = None) -> Any:
    """An onnxruntime session for a Piper voice that also outputs phoneme durations if it can."""
    import onnxruntime as ort

    data = Path(onnx_path).read_bytes()
    patched, _ = alignment_model_bytes(data)
    return ort.InferenceSession(patched, sess_options=sess_options, providers=["CPUExecutionProvider"])


def load_piper_voice_with_alignment(voice_path: str | None, threads: int = 1) -> Any:
    """A `piper.PiperVoice` (carried joe voice by default) whose `synthesize(include_alignments=True)`
    fills `AudioChunk.phoneme_alignments`. Blocking (~0.5 s)."""
    import json

    import onnxruntime as ort
    from piper.config import PiperConfig
    from piper.voice import PiperVoice

    from ..model_files import piper_voice

    onnx, config_path = piper_voice(voice_path)
    with open(config_path, encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return PiperVoice(session=alignment_session(onnx, so), config=config)


# ---------------------------------------------------------------- phoneme spans of one chunk


def spans_from_alignment(phonemes: Sequence[str], alignments: Sequence[Any]) -> list[PhonemeSpan] | None:
    """Sample spans of `phonemes` from piper's `phoneme_alignments` ([BOS, *phonemes, EOS])."""
    if len(alignments) != len(phonemes) + 2:
        return None
    counts = [int(a.num_samples) for a in alignments]
    at = counts[0]  # BOS (and its pad) come first
    spans = []
    for ph, n in zip(phonemes, counts[1:-1], strict=True):
        spans.append(PhonemeSpan(ph, at, at + n))
        at += n
    return spans


# Relative durations for the fallback, by phoneme class (from Piper joe's own averages, rounded).
_W_VOWEL, _W_CONS, _W_MARK, _W_SPACE, _W_PAUSE = 1.0, 0.75, 0.25, 0.3, 2.0
_VOWELS = set("aeiouæɐɑɒɔəɛɜɚɝɪʊʌᵻɨʉyøœɤɯ")


def _weight(ph: str) -> float:
    if ph in _MARKS_BEFORE or ph in _MARKS_AFTER:
        return _W_MARK
    if ph == " ":
        return _W_SPACE
    if ph in _PAUSES:
        return _W_PAUSE
    return _W_VOWEL if ph[:1] in _VOWELS else _W_CONS


def proportional_spans(phonemes: Sequence[str], audio: np.ndarray[Any, Any], rate: int) -> list[PhonemeSpan]:
    """Fallback timing: spread the voiced span of `audio` over `phonemes` by class weight."""
    x = np.abs(np.asarray(audio, dtype=np.float32).reshape(-1))
    if x.size == 0 or not phonemes:
        return []
    frame = max(1, rate // 100)
    n = x.size // frame
    energy = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1)) if n else np.array([x.max()])
    voiced = np.nonzero(energy > energy.max() * 0.03)[0]
    start = int(voiced[0]) * frame if voiced.size else 0
    end = min(x.size, (int(voiced[-1]) + 1) * frame) if voiced.size else x.size
    # Trailing sentence punctuation is the silence after the end; keep it out of the spread.
    body = list(phonemes)
    while body and body[-1] in _PAUSES:
        body.pop()
    weights = np.array([_weight(p) for p in body] or [1.0], dtype=np.float64)
    edges = start + np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * (end - start)
    spans = [PhonemeSpan(p, int(edges[i]), int(edges[i + 1])) for i, p in enumerate(body)]
    spans.extend(PhonemeSpan(p, end, x.size) for p in phonemes[len(body) :])
    return spans


# ---------------------------------------------------------------- words


def text_words(text: str) -> list[str]:
    """The words of `text` as Azure reports them: whitespace tokens without edge punctuation."""
    out = []
    for tok in text.split():
        w = tok.strip(_STRIP)
        if w.endswith(".") and w.count(".") == 1:
            w = w[:-1]
        w = w.strip("'")
        if any(ch.isalnum() for ch in w):
            out.append(w)
    return out


def _letters(phs: Iterable[str]) -> list[str]:
    return [p for p in phs if p != " " and p not in _PAUSES and viseme_of(p) is not None]


class WordAligner:
    """Maps a voice's phoneme groups back to the text's words, one sentence chunk at a time."""

    def __init__(self, phonemize: Any) -> None:
        # phonemize(text) -> list of sentences, each a list of phoneme codepoints (PiperVoice.phonemize)
        self._phonemize = phonemize
        self._cache: dict[str, list[str]] = {}

    def word_phonemes(self, word: str) -> list[str]:
        got = self._cache.get(word)
        if got is None:
            got = _letters(p for sentence in self._phonemize(word) for p in sentence)
            if len(self._cache) < 4096:
                self._cache[word] = got
        return got

    def consumed(self, words: Sequence[str], spans: Sequence[PhonemeSpan]) -> int:
        """How many of `words` (a prefix) this chunk speaks: up to the last word whose phonemes
        mostly match the chunk's. For a text that Piper split into several sentence chunks."""
        letters = _letters(sp.phoneme for sp in spans)
        seqs = [self.word_phonemes(w) for w in words]
        flat = [p for s in seqs for p in s]
        owner = [wi for wi, s in enumerate(seqs) for _ in s]
        hits = [0] * len(words)
        for a, _, size in difflib.SequenceMatcher(None, flat, letters, autojunk=False).get_matching_blocks():
            for k in range(size):
                hits[owner[a + k]] += 1
        done = 0
        for wi, s in enumerate(seqs):
            if s and hits[wi] * 2 >= len(s):
                done = wi + 1
        return done

    def align(self, words: Sequence[str], spans: Sequence[PhonemeSpan]) -> list[tuple[str, int, int]]:
        """(word, start sample, end sample) for each word, in order."""
        if not words:
            return []
        # The sentence's letters (phonemes that are not marks, spaces or pauses), with the index
        # of their span and of their space-separated group.
        letters: list[str] = []
        where: list[int] = []
        group_of: list[int] = []
        group = 0
        for i, sp in enumerate(spans):
            if sp.phoneme == " " or sp.phoneme in _PAUSES:
                group += 1
            elif viseme_of(sp.phoneme) is not None:
                letters.append(sp.phoneme)
                where.append(i)
                group_of.append(group)
        if not letters:
            return []
        seqs = [self.word_phonemes(w) for w in words]
        flat = [p for s in seqs for p in s]
        owner = [wi for wi, s in enumerate(seqs) for _ in s]
        lo = [-1] * len(words)  # -1: no letter of the word matched
        hi = [-1] * len(words)
        for a, b, size in difflib.SequenceMatcher(None, flat, letters, autojunk=False).get_matching_blocks():
            for k in range(size):
                wi, li = owner[a + k], b + k
                lo[wi] = li if lo[wi] < 0 else min(lo[wi], li)
                hi[wi] = max(hi[wi], li)
        _fill_gaps(lo, hi, len(letters))
        out = []
        last = len(words) - 1
        for wi, word in enumerate(words):
            a, b = lo[wi], hi[wi]
            # Snap out to the whole group when no neighbour shares it (takes in stress marks and
            # phonemes that the word's own phonemization spelled differently).
            if wi == 0 or group_of[hi[wi - 1]] != group_of[a]:
                while a > 0 and group_of[a - 1] == group_of[a]:
                    a -= 1
            if wi == last or group_of[lo[wi + 1]] != group_of[b]:
                while b + 1 < len(letters) and group_of[b + 1] == group_of[b]:
                    b += 1
            out.append((word, spans[_group_start(spans, where[a])].start, spans[_group_end(spans, where[b])].end))
        return out


def _group_start(spans: Sequence[PhonemeSpan], i: int) -> int:
    # Include stress marks right before the first letter.
    while i > 0 and spans[i - 1].phoneme in _MARKS_BEFORE:
        i -= 1
    return i


def _group_end(spans: Sequence[PhonemeSpan], i: int) -> int:
    while i + 1 < len(spans) and spans[i + 1].phoneme in _MARKS_AFTER:
        i += 1
    return i


def _fill_gaps(lo: list[int], hi: list[int], n: int) -> None:
    """Make every word's [lo, hi] a valid, ordered, non-overlapping letter range (in place).

    Matches out of order are dropped; words with no match share the letters between their
    matched neighbours evenly (or, if there are none, the neighbour's last letter).
    """
    last = -1
    for i in range(len(lo)):
        if lo[i] >= 0 and lo[i] <= last:
            lo[i] = last + 1 if last + 1 < n and hi[i] > last else -1
        if lo[i] < 0:
            hi[i] = -1
        else:
            hi[i] = max(hi[i], lo[i])
            last = hi[i]
    i = 0
    while i < len(lo):
        if lo[i] >= 0:
            i += 1
            continue
        j = i
        while j < len(lo) and lo[j] < 0:
            j += 1
        left = hi[i - 1] + 1 if i > 0 else 0
        right = lo[j] - 1 if j < len(lo) else n - 1
        count = j - i
        if right < left:  # no free letters: share the neighbour's edge
            edge = min(max(left - 1, 0), n - 1)
            for k in range(i, j):
                lo[k] = hi[k] = edge
        else:
            width = right - left + 1
            for k in range(count):
                a = left + (width * k) // count
                b = max(a, left + (width * (k + 1)) // count - 1)
                lo[i + k], hi[i + k] = min(a, n - 1), min(b, n - 1)
        i = j


# ---------------------------------------------------------------- visemes


def visemes(spans: Sequence[PhonemeSpan], rate: int) -> list[tuple[int, int]]:
    """(start sample, viseme id) changes for a chunk, starting with silence at 0."""
    out: list[tuple[int, int]] = [(0, SILENCE)]
    i = 0
    while i < len(spans):
        sp = spans[i]
        ph = sp.phoneme
        if i + 1 < len(spans) and ph + spans[i + 1].phoneme in _DIGRAPHS:
            ph = ph + spans[i + 1].phoneme
            i += 1
        vid = viseme_of(ph)
        if vid is None:
            i += 1
            continue
        start = sp.start
        if i > 0 and spans[i - 1].phoneme in _MARKS_BEFORE and len(ph) == 1:
            start = spans[i - 1].start
        if vid == SILENCE and ph == " " and sp.end - sp.start < 0.06 * rate:
            i += 1  # word gaps without a real pause keep the mouth moving
            continue
        if vid != out[-1][1]:
            out.append((start, vid))
        i += 1
    return out


# ---------------------------------------------------------------- per-response accumulation


@dataclass(slots=True)
class ChunkTimeline:
    words: list[WordMark]
    visemes: list[VisemeMark]
    aligned: bool  # True: Piper's own durations; False: proportional fallback


class Timeline:
    """Turns Piper `AudioChunk`s (in the order they are played) into word and viseme events whose
    offsets are in ms of the response's audio, counted from its first sample.

    `add_piper_chunk(chunk, text)`: `text` is the text handed to `PiperVoice.synthesize`; for a
    call that produces several sentence chunks, pass the same text with each and the words are
    shared out in order (`last=None` works out which chunk is the last one). Chunks follow each
    other in the response's audio; `add_chunk(..., offset_ms=...)` places one elsewhere (the
    caller inserted silence or dropped audio).
    """

    def __init__(self, phonemize: Any) -> None:
        self.aligner = WordAligner(phonemize)
        self.offset_ms = 0.0
        self._phonemize = phonemize
        self._pending_text: str | None = None
        self._pending_words: list[str] = []
        self._chunks_left = 0

    def _words_for(self, text: str, spans: Sequence[PhonemeSpan], last: bool | None) -> list[str]:
        if text != self._pending_text:
            self._pending_text = text
            self._pending_words = text_words(text)
            # Piper makes one chunk per non-empty sentence of its phonemizer: count them now, so
            # the last chunk (which takes every word left) is known without peeking ahead.
            self._chunks_left = sum(1 for sentence in self._phonemize(text) if sentence)
        self._chunks_left -= 1
        if last is None:
            last = self._chunks_left <= 0
        take = len(self._pending_words) if last else self.aligner.consumed(self._pending_words, spans)
        words, self._pending_words = self._pending_words[:take], self._pending_words[take:]
        return words

    def add_chunk(
        self,
        phonemes: Sequence[str],
        audio: np.ndarray[Any, Any],
        sample_rate: int,
        text: str,
        *,
        alignments: Sequence[Any] | None = None,
        last: bool | None = None,
        offset_ms: float | None = None,
    ) -> ChunkTimeline:
        if offset_ms is not None:
            self.offset_ms = offset_ms
        spans = spans_from_alignment(phonemes, alignments) if alignments else None
        aligned = spans is not None
        if spans is None:
            spans = proportional_spans(phonemes, audio, sample_rate)
        words = self._words_for(text, spans, last)
        ms = 1000.0 / sample_rate
        base = self.offset_ms
        wt = [
            WordMark(round(base + a * ms), max(1, round((b - a) * ms)), w)
            for w, a, b in self.aligner.align(words, spans)
        ]
        vz = [VisemeMark(round(base + a * ms), v) for a, v in visemes(spans, sample_rate)]
        self.offset_ms = base + len(audio) * ms
        return ChunkTimeline(wt, vz, aligned)

    def add_piper_chunk(self, chunk: Any, text: str, *, last: bool | None = None) -> ChunkTimeline:
        """Convenience for a piper `AudioChunk` synthesized with `include_alignments=True`."""
        return self.add_chunk(
            chunk.phonemes,
            chunk.audio_float_array,
            int(chunk.sample_rate),
            text,
            alignments=chunk.phoneme_alignments,
            last=last,
        )
