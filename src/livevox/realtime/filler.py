"""Filler-word detection for `turn_detection.remove_filler_words`.

While the agent is speaking, Voice Live ignores an utterance made only of English filler words
(its documented list: ah, umm, mm, uh, huh, oh, yeah, hmm): it neither interrupts the answer nor
becomes a user turn. Whisper spells these sounds many ways ("Mm-hmm.", "Uh-huh?", "Ummm...",
"Hmm, yeah."), so each token is matched by a pattern, not by a fixed list.

Deliberately *not* fillers: "yes", "no", "okay", "right", "sure", "stop", "wait". They are short
but carry meaning ("okay, book it", "no, the other one"), and treating them as fillers would
make the agent ignore a real answer or interruption.

livevox goes one step further while the agent speaks (`is_backchannel`): an acknowledgement
said *alone*, with or without fillers ("Okay.", "Oh, I see.", "Right, right."), is a listener's
backchannel too (the configurable `turn.backchannels`). Anything more ("okay, book it") is a
turn, and "yes", "no", "stop", "wait" are never on the list: they answer or interrupt.

Whisper tiny.en spells a lone hum as a word ("Hmm." -> "Emm.", "Boom."; "Mm-hmm." -> "them").
`BACKCHANNEL_PROMPT` is the decoder prompt for an utterance made over the agent's answer: with
it Whisper writes the sounds as fillers, and real words ("Stop.", "Hold on.", "No, the other
one.") as before (measured in docs/benchmarks.md, "Turn-taking").
"""

from __future__ import annotations

import re

from ..settings import DEFAULT_BACKCHANNELS

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

#: A backchannel is short: more words than this is a turn, whatever they are.
BACKCHANNEL_MAX_WORDS = 4
#: Whisper's prompt for speech over the agent's answer: it keeps the sounds of listening as fillers.
BACKCHANNEL_PROMPT = "Mm-hmm. Uh-huh. Hmm. Okay."
#: A continuer may lead a backchannel ("And mm-hmm.", "So, okay."); alone it is none.
LEADING_CONTINUERS = frozenset({"and", "so"})


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


def is_backchannel(transcript: str, acknowledgements: tuple[str, ...] = DEFAULT_BACKCHANNELS) -> bool:
    """True when `transcript` is only fillers and acknowledgements, at most
    `BACKCHANNEL_MAX_WORDS` words, perhaps after a leading continuer: "Mm-hmm.", "Oh, okay.",
    "I see.", "Right, right.", "And mm-hmm.".

    An empty transcript is no backchannel (as in `is_filler_only`); digits are content.
    """
    if any(ch.isdigit() for ch in _ANNOTATION.sub(" ", transcript)):
        return False
    found = words(transcript)
    if not found or len(found) > BACKCHANNEL_MAX_WORDS:
        return False
    if len(found) > 1 and found[0] in LEADING_CONTINUERS:
        found = found[1:]
    phrases = [tuple(words(a)) for a in acknowledgements]
    i = 0
    while i < len(found):
        if is_filler_word(found[i]):
            i += 1
            continue
        match = next((p for p in phrases if p and tuple(found[i:i + len(p)]) == p), None)
        if match is None:
            return False
        i += len(match)
    return True
