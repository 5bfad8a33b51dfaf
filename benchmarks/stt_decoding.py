"""Whisper's decoding settings: word errors and time per encoder window and beam size.

    python benchmarks/stt_decoding.py                                  # 30 s x beam 1 and 5
    python benchmarks/stt_decoding.py --config 30:1 --config 30:5 --config 15:5 --noise-dbfs -35

Every utterance of `benchmarks/speech_set.py` (118: espeak-ng voices, Piper, the human
recordings) is transcribed by the embedded faster-whisper engine (`engines/whisper.py`, with its
encoder-window padding) one at a time, on the audio a turn's speculative transcription gets: up to
the end of speech plus `--tail-ms` (default 150, `stt.tail_ms`). `--noise-dbfs` adds white noise to
the speech and its tail (a seeded generator, the same noise for every config). Each config is
`window_s:beam`. Reported per config: WER over the set, utterances better and worse than the first
config, the capital question's count of exact "of France", and the p50 / p90 time per transcript.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speech_set
from latency import machine
from livevox.client.call import load_wav, speech_bounds
from livevox.engines.base import TranscribeOptions
from livevox.engines.registry import build_engines
from livevox.settings import load_settings
from transcripts import normalise, word_errors

RATE = 24000


def _audio(path: str, tail_s: float, noise: float | None, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    pcm = load_wav(path)
    bounds = speech_bounds(pcm)
    end = bounds[1] if bounds else pcm.size / RATE
    a = pcm[: int((end + tail_s) * RATE)].astype(np.float32)
    if noise is not None:
        a = a + rng.standard_normal(a.size).astype(np.float32) * 32768 * 10 ** (noise / 20)
    return soxr.resample(np.clip(a, -32768, 32767) / 32768.0, RATE, 16000).astype(np.float32)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    items = speech_set.build(args.out)
    rng = np.random.default_rng(3)
    audios = [_audio(u.path, args.tail_ms / 1000, args.noise_dbfs, rng) for u in items]
    words = sum(len(normalise(u.text)) for u in items)
    engines = await build_engines(load_settings())
    stt: Any = engines.stt
    results: list[dict[str, Any]] = []
    try:
        for config in args.config:
            window, beam = config.split(":")
            stt.window_frames = stt.busy_window_frames = int(float(window) * 100)
            stt.beam_size = int(beam)
            hyps, times = [], []
            for a in audios:
                t0 = time.perf_counter()
                hyps.append("".join([p async for p in stt.transcribe(a, TranscribeOptions(language="en"), "bench")]))
                times.append((time.perf_counter() - t0) * 1000)
            errs = [word_errors(u.text, h) for u, h in zip(items, hyps, strict=True)]
            results.append({"config": config, "window_s": float(window), "beam": int(beam),
                            "wer_pct": round(100 * sum(errs) / words, 1), "word_errors": sum(errs), "words": words,
                            "time_p50_ms": round(statistics.median(times)),
                            "time_p90_ms": round(float(np.percentile(times, 90))),
                            "capital_exact": sum("of france" in " ".join(normalise(h)) for u, h in
                                                 zip(items, hyps, strict=True) if u.prompt == "capital"),
                            "capital_n": sum(u.prompt == "capital" for u in items),
                            "errors": errs, "hyps": hyps})
    finally:
        await engines.close()
    first = results[0]["errors"]
    for r in results:
        r["better"] = sum(e < f for e, f in zip(r["errors"], first, strict=True))
        r["worse"] = sum(e > f for e, f in zip(r["errors"], first, strict=True))
    return {"machine": machine(), "tail_ms": args.tail_ms, "noise_dbfs": args.noise_dbfs,
            "utterances": [{"voice": u.voice, "prompt": u.prompt, "text": u.text} for u in items],
            "results": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None, metavar="WINDOW_S:BEAM",
                    help="encoder window (s) and beam size (repeatable; default 30:1 and 30:5)")
    ap.add_argument("--tail-ms", type=float, default=150.0)
    ap.add_argument("--noise-dbfs", type=float, default=None)
    ap.add_argument("--out", type=Path, default=speech_set.ROOT / "artifacts" / "speech_set")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.config = args.config or ["30:1", "30:5"]
    rep = asyncio.run(run(args))
    print(f"{len(rep['utterances'])} utterances, tail {args.tail_ms:g} ms, noise {args.noise_dbfs} dBFS")
    for r in rep["results"]:
        print(f"window {r['window_s']:4g} s beam {r['beam']}: WER {r['wer_pct']} % ({r['word_errors']}/{r['words']}), "
              f"better {r['better']} / worse {r['worse']} than {args.config[0]}, "
              f"capital {r['capital_exact']}/{r['capital_n']}, time p50 {r['time_p50_ms']} p90 {r['time_p90_ms']} ms")
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
