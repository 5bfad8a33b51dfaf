"""Cut streamed LLM text into clauses for TTS, so the first audio does not wait for the answer."""

from __future__ import annotations

import re

from ..engines.base import speakable

# A clause ends at sentence punctuation, or at , ; : once it holds a few words. The first clause
# of an answer is cut sooner (TTS synthesizes a clause at a time, so its length is the wait for
# the first audio): at a comma after two words, or after `first_max_words` words.
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:—]\s")
_MIN_CLAUSE_WORDS = 4
_MIN_FIRST_CLAUSE_WORDS = 2
_WORD_END = re.compile(r"\S\s")


class ClauseSplitter:
    def __init__(self, max_chars: int = 220, first_max_words: int = 0) -> None:
        self._buf = ""
        self.max_chars = max_chars
        self.first_max_words = first_max_words
        self._first = True

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            clause, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if clause:
                out.append(clause)
                self._first = self._first and not speakable(clause)
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _find_cut(self) -> int | None:
        m = _SENTENCE_END.search(self._buf)
        if m:
            return m.end()
        min_words = _MIN_FIRST_CLAUSE_WORDS if self._first else _MIN_CLAUSE_WORDS
        for m in _CLAUSE_END.finditer(self._buf):
            if len(self._buf[: m.start()].split()) >= min_words:
                return m.end()
        if self._first and self.first_max_words:
            ends = [m.end() for m in _WORD_END.finditer(self._buf)]  # after complete words only
            if len(ends) > self.first_max_words:
                return ends[self.first_max_words - 1]
        if len(self._buf) > self.max_chars:
            space = self._buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None


