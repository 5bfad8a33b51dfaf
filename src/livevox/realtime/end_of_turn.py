"""End-of-turn policy: when does silence after speech end the user's turn?

Silero finds the silence; this policy decides whether it ends the turn. `server_vad` ends the
turn after `silence_duration_ms` of silence, whatever was said. The semantic modes ask Smart
Turn v3.2 (`engines/smart_turn.py`) whether the utterance so far sounds finished:

- **complete** (score >= threshold; the score is Smart Turn's P(complete), combined with the
  LLM's end-of-turn probability once that is known, see below): the turn ends once the silence reaches `complete_ms`
  (normally `silence_duration_ms`, so a finished question is answered as fast as with
  `server_vad`);
- **incomplete**: the policy keeps listening and rescoring every `rescore_every_ms`, and ends the
  turn when a rescore says complete or when the silence reaches `cap_ms` (the mode's patience).

If the user speaks again before the turn ends, the caller `reset()`s the policy and the next
silence starts over; the utterance keeps growing (Smart Turn always sees it whole, up to 8 s).

Defaults per mode (silence lengths in ms, measured from the end of speech as Silero sees it):

| turn_detection                                  | threshold | complete_ms         | cap_ms                        |
|-------------------------------------------------|-----------|---------------------|-------------------------------|
| `server_vad`                                    | -         | silence_duration_ms | = complete_ms (no model)      |
| `server_vad` + `end_of_utterance_detection`     | level     | silence_duration_ms | silence_duration_ms + timeout_ms |
| `azure_semantic_vad`, `_en`, `_multilingual`    | 0.5       | silence_duration_ms | silence_duration_ms + 1000    |
| the same + `end_of_utterance_detection`         | level     | silence_duration_ms | silence_duration_ms + timeout_ms |
| `semantic_vad` eagerness `high`                 | 0.3       | 300                 | 2000                          |
| `semantic_vad` eagerness `medium` / `auto`      | 0.5       | 500                 | 4000                          |
| `semantic_vad` eagerness `low`                  | 0.7       | 800                 | 8000                          |

- `end_of_utterance_detection.threshold_level`: `low` 0.3, `medium` / `default` 0.5, `high` 0.7.
  A higher level asks for more confidence before ending the turn (waits more often).
  `timeout_ms` defaults to 1000 (Voice Live's default): how much longer than
  `silence_duration_ms` an incomplete turn may wait.
- The preview shape `{"model": "smart_end_of_turn_detection", "threshold_level", "timeout_ms"}`
  is read the same way.
- `semantic_vad` caps (2/4/8 s) are OpenAI's documented maximum timeouts for the eagerness
  levels; its `silence_duration_ms` is not used (OpenAI's semantic_vad has none).
- `silence_duration_ms` defaults to 500 and `speech_duration_ms` / `prefix_padding_ms` to the
  api-version dependent values of `config.turn_defaults`; this policy only reads
  `silence_duration_ms`, the others belong to the speech-start detector.

The first score is taken at `first_score_ms` (200 ms, the silence Smart Turn's authors pair it
with), well before `complete_ms`, so a complete turn never waits for the model.

**Lexical veto (English modes).** Smart Turn hears prosody, not grammar, and on the synthetic
test set it often heard "I'd like to book a table for" as finished (benchmarks/turn_taking.py).
The session already transcribes the utterance speculatively when the silence starts; when that
transcript is known, an utterance that ends on a word that cannot end an English sentence ("for",
"the", "my", "and", a trailing "um"), or that trails off in an ellipsis (Whisper's "would be..."),
is held as incomplete whatever the audio score. The veto
only ever makes the policy wait (up to the cap); it never ends a turn sooner, and it is off for
`azure_semantic_vad_multilingual`. A transcript with no words at all vetoes too: speech Whisper
heard as nothing (a slow, drawn-out "Tell me about the history of") is no finished request, and a
turn without words gains nothing from ending early. A failed transcription is not such a
transcript (`no_transcript()`): then the audio decides.

**Text signal: the LLM (English modes).** The veto knows a few words; most unfinished fragments
("my account number is four five", "set a timer for ten") end on ordinary words. So the policy
also asks the LLM livevox runs how likely the transcript is a finished message: with llama.cpp
(`engines/llamacpp.py`, the embedded SmolLM2 or any ChatML GGUF) the probability its chat template
puts, right after the user's words (final punctuation removed), on `<|im_end|>` or on a
sentence-ending punctuation token: one prefill of the words and one step, 25-55 ms on a quiet
core; a remote OpenAI-compatible engine answers a one-token yes/no question and its `logprobs`
give P(yes) (`engines/openai_llm.py`); without logprobs the policy keeps to Smart Turn and the
rules. The probe is asked from the speculative transcript's own completion, on the LLM stage's
executor at priority 0 (ahead of the speculative answer queued at the same moment), and skipped
when the words tell already (no words, fillers only, a dangling last word) and in `server_vad`
without `end_of_utterance_detection` and the multilingual mode. It reads the transcript the
session speculates on, cut where the committed turn is cut (`TurnTaking.stt_cut`), so it sees the
turn's whole last word.

**Decision.** With both known, the score compared with the threshold is
`AUDIO_WEIGHT * P_smart_turn + (1 - AUDIO_WEIGHT) * P_llm` (`combined_score`); before the LLM
answers, Smart Turn's alone. A complete score still ends the turn at `complete_ms`, an
incomplete one rescores the audio every `rescore_every_ms` (the text part stays) up to the cap.
When the caller has said a transcript (`expect_transcript()`) or an LLM probability
(`expect_text()`) is coming, a turn the audio calls complete waits for them at most
`transcript_wait_ms` (100) past `complete_ms`, then ends without them. `threshold_level` and
`eagerness` set the threshold on the combined score (0.3 / 0.5 / 0.7, as before), `timeout_ms`
and the eagerness caps the patience.

**Calibration** (`python benchmarks/turn_taking.py --calibrate --stt-ms 340 --probe-ms 40`): a
grid of AUDIO_WEIGHT (0, 0.25, 0.4, 0.5, 0.6, 0.75, 1) by threshold (0.30-0.85 in 0.05 steps) for
`azure_semantic_vad`, replayed on the tuning split only (70 % of the sentences: 46 complete
questions, 69 paused sentences), with the quiet-box STT (340 ms) and probe (40 ms) times. Each
point counts the paused sentences cut off and the complete questions held more than 300 ms past
`server_vad`; the rule (`choose`) takes the fewest of both together among the points whose median
extra delay on complete questions is at most 100 ms, ties to the threshold nearest 0.5. Smart
Turn alone (weight 1) cuts off 28 % at threshold 0.5 and holds 22 % of complete questions; the
LLM alone (weight 0) cuts off 9 % there but holds 35 %. The pick, weight 0.25 at threshold 0.5:
9 % cut off, 22 % held, +32 ms median extra: as many complete questions held as by Smart Turn
alone, a third of its cut-offs. Threshold 0.5 keeps the threshold levels (0.3 / 0.5 / 0.7) and
the eagerness table above. Held-out figures: docs/benchmarks.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from .config import SEMANTIC_TYPES
from .filler import is_filler_only

THRESHOLD_LEVELS = {"low": 0.3, "medium": 0.5, "default": 0.5, "high": 0.7}
#: OpenAI semantic_vad eagerness -> (threshold, complete_ms, cap_ms).
EAGERNESS = {
    "high": (0.3, 300, 2000),
    "medium": (0.5, 500, 4000),
    "auto": (0.5, 500, 4000),
    "low": (0.7, 800, 8000),
}
AZURE_SEMANTIC_TIMEOUT_MS = 1000  # extra patience of azure_semantic_vad without an explicit EOU
FIRST_SCORE_MS = 200
RESCORE_EVERY_MS = 300
TRANSCRIPT_WAIT_MS = 100
#: The weight of Smart Turn's score in the combined one (the LLM's gets the rest); see the
#: calibration note in the module docstring.
AUDIO_WEIGHT = 0.25

#: Words an English sentence does not end on. Deliberately short: a false "dangling" only costs
#: waiting to the cap. Prepositions can end a wh-question ("What is it for?", "Where are you
#: from?"), so there a question mark excuses them; a yes/no question does not strand one (Whisper
#: writes "Is there a direct train from Paris to?" for an unfinished sentence). Articles,
#: possessives, conjunctions and hesitations are never a real ending ("Can you play some music by the?").
PREPOSITIONS = frozenset("to for of in on at by with from about into onto than".split())
NEVER_FINAL = frozenset("a an the my your our their its and or but because if um uh umm uhm er erm".split())
DANGLING = PREPOSITIONS | NEVER_FINAL
_BIGRAMS = {("and", "then"), ("so", "that"), ("such", "as")}
#: Question words that can strand a preposition at the end of a question.
WH_WORDS = frozenset("what who whom whose which where when why how".split())
_QUESTION_END = re.compile(r"\?\W*$")
#: Whisper writes a trailing ellipsis where the voice trails off ("I think the best option would
#: be..."); a finished request ends on a full stop or a question mark.
_TRAILING_OFF = re.compile(r"(?:\.\.\.|…)[\s\"')\]]*$")
# Words and numbers ("6.30" ends a sentence as surely as "six thirty" does).
_TOKEN = re.compile(r"[^\W_]+(?:['.:][^\W_]+)*")


def dangling(transcript: str | None) -> bool:
    """True when `transcript` stops on a word that leaves the sentence unfinished."""
    if not transcript or is_filler_only(transcript):
        return False
    ws = _TOKEN.findall(transcript.lower())
    if not ws:
        return False
    if ws[-1] in NEVER_FINAL or (len(ws) >= 2 and (ws[-2], ws[-1]) in _BIGRAMS):
        return True
    if _TRAILING_OFF.search(transcript):
        return True
    if ws[-1] not in PREPOSITIONS:
        return False
    wh_question = bool(_QUESTION_END.search(transcript)) and any(w.split("'")[0] in WH_WORDS for w in ws)
    return not wh_question


def wordless(transcript: str | None) -> bool:
    """True when a transcript is known and has no words: Whisper heard speech as nothing (a
    drawn-out, hesitant start), so the words cannot say the turn is finished."""
    return transcript is not None and not _TOKEN.findall(transcript)


def wants_text(transcript: str | None) -> bool:
    """Whether the LLM's end-of-turn probability can tell anything about `transcript`: not when
    there are no words, when they are only fillers ("um"), or when they already dangle (the rules
    have said incomplete; the probe is skipped, it costs an LLM job)."""
    if not transcript or wordless(transcript):
        return False
    return not is_filler_only(transcript) and not dangling(transcript)


def combined_score(audio: float | None, text: float | None, audio_weight: float = AUDIO_WEIGHT) -> float | None:
    """One score from Smart Turn's P(complete) and the LLM's P(end of message): their weighted
    mean when both are known, else whichever is known."""
    if audio is None:
        return text
    if text is None:
        return audio
    return audio_weight * audio + (1.0 - audio_weight) * text


@dataclass(frozen=True, slots=True)
class TurnPolicyConfig:
    uses_model: bool
    threshold: float
    complete_ms: int
    cap_ms: int
    lexical: bool = False
    text: bool = False  # combine the LLM's end-of-turn probability (when the engine gives one)
    audio_weight: float = AUDIO_WEIGHT
    transcript_wait_ms: int = TRANSCRIPT_WAIT_MS
    first_score_ms: int = FIRST_SCORE_MS
    rescore_every_ms: int = RESCORE_EVERY_MS


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do at this point of the silence.

    - `end_turn`: end the turn now.
    - `rescore_after_ms`: score the utterance again when the silence reaches this length (ms),
      then call `on_silence` with the new score. None: no more scoring is needed.
    - `end_at_ms`: if nothing else happens (no speech, no rescore that changes the verdict),
      the turn ends when the silence reaches this length; call `on_silence(ms, None)` then.
    """

    end_turn: bool
    rescore_after_ms: int | None = None
    end_at_ms: int | None = None


def _eou(td: dict[str, Any]) -> dict[str, Any] | None:
    eou = td.get("end_of_utterance_detection")
    if isinstance(eou, dict):
        return eou
    if td.get("model") == "smart_end_of_turn_detection":
        return td
    return None


def policy_config(td: dict[str, Any] | None) -> TurnPolicyConfig:
    """The policy's parameters for a (defaults-filled) `turn_detection` object."""
    td = td or {}
    kind = str(td.get("type") or "server_vad")
    raw_silence = td.get("silence_duration_ms")
    silence = 500 if raw_silence is None else int(raw_silence)
    eou = _eou(td)
    if kind == "semantic_vad":
        threshold, complete, cap = EAGERNESS.get(str(td.get("eagerness") or "auto"), EAGERNESS["auto"])
        if eou is not None:  # explicit EOU settings win over eagerness
            threshold = THRESHOLD_LEVELS.get(str(eou.get("threshold_level") or "default"), 0.5)
            cap = complete + int(eou.get("timeout_ms") or AZURE_SEMANTIC_TIMEOUT_MS)
        return TurnPolicyConfig(True, threshold, complete, max(cap, complete), lexical=True, text=True)
    if kind in SEMANTIC_TYPES or eou is not None:
        level = str((eou or {}).get("threshold_level") or "default")
        threshold = THRESHOLD_LEVELS.get(level, 0.5)
        timeout = (eou or {}).get("timeout_ms")
        extra = int(timeout) if timeout is not None else AZURE_SEMANTIC_TIMEOUT_MS
        lexical = kind != "azure_semantic_vad_multilingual"
        return TurnPolicyConfig(True, threshold, silence, silence + max(0, extra), lexical=lexical, text=lexical)
    return TurnPolicyConfig(False, 1.0, silence, silence)


class EndOfTurnPolicy:
    """Per-session end-of-turn decisions for one silence at a time (pure: no I/O, no clock).

    Call pattern, with silence lengths in ms since Silero's end of speech:

        d = policy.start()                      # silence begins
        # at d.rescore_after_ms: score = await smart_turn.score(utterance_so_far, sid)
        d = policy.on_silence(silence_ms, score)
        # ... at d.end_at_ms with no new score: d = policy.on_silence(silence_ms, None)
        # when d.end_turn: commit the turn. If speech resumes first: policy.reset().
    """

    def __init__(self, td: dict[str, Any] | None, *, transcript_wait_ms: int = TRANSCRIPT_WAIT_MS) -> None:
        self._transcript_wait_ms = transcript_wait_ms
        self.configure(td)

    def configure(self, td: dict[str, Any] | None) -> None:
        """(Re)read `turn_detection` (after `session.update`); forgets the current silence."""
        self.cfg = replace(policy_config(td), transcript_wait_ms=self._transcript_wait_ms)
        self.reset()

    @property
    def uses_model(self) -> bool:
        return self.cfg.uses_model

    def reset(self) -> None:
        self.last_score: float | None = None
        self.transcript: str | None = None
        self.awaiting_transcript = False
        self.text_score: float | None = None  # the LLM's P(end of message) for the transcript
        self.awaiting_text = False
        self.scores: list[tuple[int, float]] = []  # (silence_ms, score), for logs and metrics

    def start(self) -> Decision:
        """The plan when silence begins (silence = 0)."""
        self.reset()
        c = self.cfg
        if not c.uses_model:
            return Decision(False, None, c.complete_ms)
        return Decision(False, min(c.first_score_ms, c.complete_ms), c.cap_ms)

    def expect_transcript(self) -> None:
        """A transcript of the utterance so far is on its way (speculative STT started)."""
        if self.cfg.lexical and self.transcript is None:
            self.awaiting_transcript = True

    def expect_text(self) -> None:
        """The LLM's end-of-turn probability for the coming transcript is on its way."""
        if self.cfg.text and self.text_score is None:
            self.awaiting_text = True

    def no_transcript(self) -> None:
        """The speculative transcript failed: no words are coming, the audio decides alone."""
        self.awaiting_transcript = False

    def vetoed(self) -> bool:
        return self.cfg.lexical and (dangling(self.transcript) or wordless(self.transcript))

    @property
    def score(self) -> float | None:
        """The combined score the decision compares with the threshold."""
        text = self.text_score if self.cfg.text else None
        return combined_score(self.last_score, text, self.cfg.audio_weight)

    def complete(self) -> bool:
        score = self.score
        return self.last_score is not None and score is not None and score >= self.cfg.threshold and not self.vetoed()

    def on_text(self, silence_ms: int, text_score: float | None) -> Decision:
        """The LLM's end-of-turn probability arrived (None: skipped or failed)."""
        self.awaiting_text = False
        if text_score is not None:
            self.text_score = float(text_score)
        return self.on_silence(silence_ms, None)

    def on_silence(self, silence_ms: int, score: float | None, transcript: str | None = None) -> Decision:
        """Update with a new score and/or the utterance's transcript (either may be None: time
        passed, nothing new) and decide."""
        c = self.cfg
        if score is not None:
            self.last_score = float(score)
            self.scores.append((silence_ms, float(score)))
        if transcript is not None:
            self.transcript = transcript
            self.awaiting_transcript = False
        if not c.uses_model:
            return Decision(True) if silence_ms >= c.complete_ms else Decision(False, None, c.complete_ms)
        if silence_ms >= c.cap_ms:
            return Decision(True)
        if self.complete():
            if (self.awaiting_transcript or self.awaiting_text) and silence_ms >= c.complete_ms:
                # The words may still veto it; wait for them a little, not more.
                deadline = c.complete_ms + c.transcript_wait_ms
                if silence_ms < deadline:
                    return Decision(False, None, min(deadline, c.cap_ms))
                self.awaiting_transcript = self.awaiting_text = False
            if silence_ms >= c.complete_ms:
                return Decision(True)
            # Complete: no need to score again, end once the short silence has passed.
            return Decision(False, None, c.complete_ms)
        if self.last_score is None:
            return Decision(False, min(c.first_score_ms, c.complete_ms), c.cap_ms)
        if self.vetoed():  # the words are unfinished: rescoring the audio cannot change that
            return Decision(False, None, c.cap_ms)
        # Incomplete: listen on, rescore on a fixed grid, give up waiting at the cap.
        nxt = silence_ms + c.rescore_every_ms
        return Decision(False, nxt if nxt < c.cap_ms else None, c.cap_ms)
