"""STT batching (`stt.max_batch`): N utterances transcribed in one batch vs. one after another.

    python benchmarks/stt_batch.py                          # N = 1, 2, 4; 10 rounds each
    python benchmarks/stt_batch.py --counts 1,2,4 --rounds 20 --encoder-window-s 15 --json stt_batch.json

The embedded faster-whisper engine (tiny.en, int8, `stt.threads` 2 by default) in this process,
through its real path (`FasterWhisperSTT.transcribe` on the `stt` stage executor). Each round, N
sessions each submit one utterance (the fixture questions of tests/fixtures, in turn) while the
one STT worker is held, so all N wait together, as when N callers end their turns at the same
moment; the clock starts when the worker is released. `sequential` is `max_batch` 1 (the worker
takes them one after another, round-robin); `batched` is `max_batch` = the largest N (one
encoder call; for N = 1 the batched path with a batch of one). The two modes alternate round by
round, so load that drifts during the run hits both alike.

Per mode and N: per-transcript latency (release -> that session's transcript) and whole-round
latency (release -> the last transcript), median and p90 (ms), and the batch sizes the executor
formed. The transcripts of both modes are checked to be the same. Prints the machine (cores,
CPU, load average at start and end): other work on the machine shows there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from held_worker import record_batches, while_held  # noqa: E402
from livevox.core.executor import stage_executor  # noqa: E402
from livevox.engines.base import TranscribeOptions  # noqa: E402
from livevox.engines.whisper import FasterWhisperSTT  # noqa: E402
from support_audio import fixture_f32  # noqa: E402

UTTERANCES = ["question_capital.wav", "question_weather.wav", "question_story.wav", "question_capital.wav"]


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


async def one_round(stt: FasterWhisperSTT, audio: list[np.ndarray]) -> tuple[list[float], list[str]]:
    """All utterances queued behind a held worker, then released: each one's latency (s) and text."""
    done: list[float] = [0.0] * len(audio)

    async def one(i: int) -> str:
        text = "".join([t async for t in stt.transcribe(audio[i], TranscribeOptions(), f"s{i}")])
        done[i] = time.perf_counter()
        return text

    texts, start = await while_held(stage_executor("stt"), len(audio),
                                    lambda: [one(i) for i in range(len(audio))])
    return [d - start for d in done], texts


def stats(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p90": round(float(np.percentile(ms, 90)), 1),
            "n": len(values)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "threads": args.threads,
                              "encoder_window_s": args.encoder_window_s, "rounds": args.rounds, "results": []}
    stt = FasterWhisperSTT(threads=args.threads, encoder_window_s=args.encoder_window_s)
    await stt.load()
    await stt.warmup()
    sizes = record_batches(stt)
    modes = (("sequential", 1), ("batched", max(args.counts)))
    for n in args.counts:
        audio = [fixture_f32(UTTERANCES[i % len(UTTERANCES)]) for i in range(n)]
        texts: dict[str, list[str]] = {}
        each: dict[str, list[float]] = {m: [] for m, _ in modes}
        rounds: dict[str, list[float]] = {m: [] for m, _ in modes}
        formed: dict[str, set[int]] = {m: set() for m, _ in modes}
        for r in range(args.rounds + 1):  # round 0 unmeasured: this N's shapes warmed
            # The modes alternate, first one then the other, so drifting load hits both alike.
            for mode, max_batch in (modes if r % 2 else modes[::-1]):
                stt.max_batch = max_batch
                sizes.clear()
                latencies, texts[mode] = await one_round(stt, audio)
                if r:
                    each[mode] += latencies
                    rounds[mode].append(max(latencies))
                    formed[mode].update(sizes)
        for mode, max_batch in modes:
            row = {"n": n, "mode": mode, "max_batch": max_batch, "per_transcript": stats(each[mode]),
                   "round": stats(rounds[mode]), "batch_sizes": sorted(formed[mode])}
            report["results"].append(row)
            print(f"N={n} {mode:<10} per transcript p50 {row['per_transcript']['p50']:>7} p90 "
                  f"{row['per_transcript']['p90']:>7} | round p50 {row['round']['p50']:>7} p90 "
                  f"{row['round']['p90']:>7} ms | batches {row['batch_sizes'] or '-'}", flush=True)
        if texts["sequential"] != texts["batched"]:
            raise SystemExit(f"N={n}: batched transcripts differ: {texts}")
    await stt.close()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="stt.threads (CTranslate2 intra-op threads)")
    ap.add_argument("--encoder-window-s", type=float, default=30.0, help="stt.encoder_window_s")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    m = report["machine"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, load average {m['loadavg_at_start']} at start, "
          f"{m['loadavg_at_end']} at end; stt.threads {args.threads}, encoder window {args.encoder_window_s} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
