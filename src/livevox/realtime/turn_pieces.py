"""Long turns, transcribed while the caller is still talking.

Whisper's encoder sees 30 s at a time. A turn transcribed only when it ends costs one encoder
pass per 30 s of it, and faster-whisper cuts a longer one at a fixed 30 s mark, through a word if
one is there. Instead, once a turn holds `stt.piece_s` of audio that nothing has transcribed yet,
its next pause (the same `stt.tail_ms` of silence that starts a speculation) closes a piece, and
the piece is transcribed at once, in the background. The turn's transcript is the pieces' texts
followed by the transcript of what came after the last piece, so at the end of a long turn only
that rest is left to transcribe.

Pieces are keyed to the audio clock: a transcription of the turn's audio from clock sample
`start` uses the pieces only if they begin there and follow one another, so a turn that was
cleared, committed or restarted never borrows another turn's words.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..core.audio import SESSION_RATE

#: Transcribes audio of the turn (16 kHz PCM16) to text.
Transcribe = Callable[[npt.NDArray[np.int16]], Awaitable[str]]


@dataclass(frozen=True)
class Piece:
    start: int  # clock sample of its first sample
    end: int  # clock sample just after its last
    text: asyncio.Future[str]


class TurnPieces:
    """The transcribed pieces of the turn in progress."""

    def __init__(self, piece_s: float) -> None:
        #: 0: off (a turn is transcribed whole).
        self.piece_samples = int(piece_s * SESSION_RATE)
        self.pieces: list[Piece] = []

    def _next_start(self, turn_start: int) -> int:
        if self.pieces and self.pieces[0].start == turn_start:
            return self.pieces[-1].end
        return turn_start

    def due(self, turn_start: int, upto: int) -> bool:
        """Whether a pause whose transcribable audio ends at clock sample `upto` closes a piece."""
        if self.piece_samples <= 0:
            return False
        return upto - self._next_start(turn_start) >= self.piece_samples

    def add(self, turn_start: int, audio: npt.NDArray[np.int16], transcribe: Transcribe) -> None:
        """Close a piece: the turn's `audio` (from clock sample `turn_start`) after the last piece."""
        if self.pieces and self.pieces[0].start != turn_start:
            self.forget()  # another turn's
        begin = self._next_start(turn_start)
        end = turn_start + audio.size
        if end <= begin:
            return
        text = asyncio.ensure_future(transcribe(audio[begin - turn_start:]))
        self.pieces.append(Piece(begin, end, text))

    def covering(self, turn_start: int, size: int) -> list[Piece]:
        """The pieces that a transcription of `size` samples from `turn_start` can reuse."""
        out: list[Piece] = []
        at = turn_start
        for p in self.pieces:
            if p.start != at or p.end > turn_start + size:
                break
            out.append(p)
            at = p.end
        return out

    def transcription(self, turn_start: int, audio: npt.NDArray[np.int16],
                      transcribe: Transcribe) -> Awaitable[str]:
        """The transcript of the turn's `audio` (from clock sample `turn_start`): the pieces'
        texts, then the rest transcribed now. The pieces are chosen now, not when it runs."""
        pieces = self.covering(turn_start, audio.size)
        if not pieces:
            return transcribe(audio)
        return _joined(pieces, audio, audio[pieces[-1].end - turn_start:], transcribe)

    async def text(self, turn_start: int) -> str:
        """The joined text of the turn's pieces so far ("" if one failed or none is there)."""
        pieces = self.covering(turn_start, 1 << 62)
        try:
            texts = [await asyncio.shield(p.text) for p in pieces]
        except Exception:
            return ""
        return " ".join(t for t in texts if t)

    def forget(self) -> None:
        """A new turn: the pieces are another turn's (a transcription already using them goes on)."""
        self.pieces = []

    async def drop(self) -> None:
        """The turn is discarded: stop the pieces still being transcribed."""
        pieces, self.pieces = self.pieces, []
        for p in pieces:
            if not p.text.done():
                p.text.cancel()
                with contextlib.suppress(BaseException):
                    await p.text


async def _joined(pieces: list[Piece], audio: npt.NDArray[np.int16], rest: npt.NDArray[np.int16],
                  transcribe: Transcribe) -> str:
    rest_text = asyncio.ensure_future(transcribe(rest)) if rest.size else None
    try:
        # Shielded: a dropped speculation must not cancel a piece that the commit reuses.
        texts = [await asyncio.shield(p.text) for p in pieces]
    except asyncio.CancelledError:
        if rest_text is not None:
            rest_text.cancel()
        raise
    except Exception:  # a failed piece: the whole audio, as if there were no pieces
        if rest_text is not None:
            rest_text.cancel()
        return await transcribe(audio)
    if rest_text is not None:
        texts.append(await rest_text)
    return " ".join(t for t in texts if t)
