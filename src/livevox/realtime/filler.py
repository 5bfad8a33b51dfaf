"""Filler-word detection for `turn_detection.remove_filler_words`.

While the agent is speaking, Voice Live ignores an utterance made only of English filler words
(its documented list: ah, umm, mm, uh, huh, oh, yeah, hmm): it neither interrupts the answer nor
becomes a user turn. Whisper spells these sounds many ways ("Mm-hmm.", "Uh-huh?", "Ummm...",
"Hmm, yeah."), so each token is matched by a pattern, not by a fixed list.

Deliberately *not* fillers: "yes", "no", "okay", "right", "sure", "stop", "wait". They are short
but carry meaning ("okay, book it", "no, the other one"), and treating them as fillers would
make the agent ignore a real answer or interruption.
"""

from __future__ import annotations

import re

# One pattern per filler sound; repeated letters ("ummm", "hmmm", "ahhh") are common in Whisper.
_FILLER_PATTERNS = (
    r"a+h+",  # ah, ahh, aah
    r"u+h+",  # uh, uhh
    r"u+h*m+",  # um, umm, uhm, ummm
    r"h+m+",  # hm, hmm, hmmm
    r"m+",  # mm, mmm
    r"m+h+m+",  # mhm, mmhmm (mm-hmm written as one word)
    r"h+u+h+",  # huh
    r"o+h+",  # oh, ohh
    r"e+r+m*",  # er, erm (British hesitation)
    r"e+h+",  # eh
    r"y+e+a+h*",  # yeah, yea, yeahh
    r"y+e+h+",  # yeh
)
_FILLER = re.compile(r"(?:" + "|".join(_FILLER_PATTERNS) + r")")
# Whisper's non-speech annotations: "[BLANK_AUDIO]", "(sighs)", "*coughs*", "♪".
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪")
# Words are letters (any script) and apostrophes; hyphens split "mm-hmm" / "uh-huh" into fillers.
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")

#: The documented Voice Live English filler words (for reference and tests).
VOICE_LIVE_FILLERS = ("ah", "umm", "mm", "uh", "huh", "oh", "yeah", "hmm")


def words(transcript: str) -> list[str]:
    """Lower-cased words of a transcript, without punctuation or non-speech annotations."""
    text = _ANNOTATION.sub(" ", transcript).lower()
    return _WORD.findall(text)


def is_filler_word(word: str) -> bool:
    return _FILLER.fullmatch(word.lower()) is not None


def is_filler_only(transcript: str) -> bool:
    """True when `transcript` has at least one word and every word is a filler.

    An empty transcript (silence, noise, or only "[BLANK_AUDIO]") returns False: it holds no
    filler either, and the caller decides what to do with an utterance nobody could transcribe.
    Digits count as content ("4" is an answer).
    """
    if any(ch.isdigit() for ch in _ANNOTATION.sub(" ", transcript)):
        return False
    found = words(transcript)
    return bool(found) and all(is_filler_word(w) for w in found)
