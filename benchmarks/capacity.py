"""Capacity benchmark: how many callers one box answers at once before answers get slow.

    python benchmarks/capacity.py                                  # levels 1,2,4,6,8; 120 s each
    python benchmarks/capacity.py --levels 1,2 --duration 40       # a smoke run
    python benchmarks/capacity.py --burst 4 --duration 60          # N=1 reference, then bursts of 4
    python benchmarks/capacity.py --levels 1,8 --max-turns-in-flight 4 --json out.json

One `python -m livevox serve` with the embedded engines (Silero, Smart Turn, faster-whisper
tiny.en, llama.cpp SmolLM2, Piper) runs in its own process on 127.0.0.1 (`latency.ServerProcess`).
At each level N, N callers each open their own Voice Live session (server_vad, input
transcription, pcm16 24 kHz, `livevox-latency-events`) and speak a question picked at random from
a small varied set (the tests' espeak-ng fixtures `tests/fixtures/question_*.wav` plus prompts of
`speech_set.PROMPTS` rendered once with espeak-ng in `speech_set.VOICES`), streamed at real-time
pace with `RealtimeCall.spoken_turn`. Each caller listens to the answer for a random 6-15 s
(seeded: `--seed`) counted from its first audio, then asks the next question: at once if the
answer is still playing (its words interrupt it, as a person cuts a long answer short), or at
that moment if the answer was over sooner. (Until 2026-12-04 callers waited for `response.done`
and then 6-15 s; with pacing, `llm.pace_ahead_s`, `response.done` of a long answer comes only
near the end of its playback, so the cadence is now counted from the first audio, with or
without pacing.) Turns start only while the level lasts (`--duration`); the level ends when the last
answer is in (each turn has a `--turn-timeout`).

`--burst N`: a staggered N=1 reference level, then N callers whose questions all *end* at the
same moment (each starts streaming `speech_end` seconds before the common instant), a round
every 6-15 s after the previous round is answered (or listened to for 6 s).

Per level it reports: end of speech -> first `response.audio.delta` (client side, as
latency.py: from the end of the real speech in the WAV, when it was spoken) p50 / p95 / max, and
p95 / (N=1 p50 of the same run), the ratio the targets are stated in (4 staggered <= 1.5x, burst
of 4 <= 2.5x, 8 staggered <= 3x with no failed turn); turns failed (error, status not
completed/incomplete, timeout, dropped connection); sessions refused (HTTP 503, counted apart);
server CPU (% of one core, psutil on the server process: mean and max of 1 s samples); each
stage's queue wait from the turns' `livevox.turn.metrics` `jobs` (started - queued, p50/p95);
and the `/readyz` `load` samples, 1 s apart (max `turns_in_flight`; per stage the most jobs queued
in one sample and the largest `wait_ms_max`, which is the worst of the executor's last 100 waits,
so it can carry waits over from the previous level).

A caller whose session is refused (503: `limits.max_sessions`, by default 6 with the embedded
LLM on 2 cores) counts one refusal and calls again 6-15 s later, as long as the level lasts.

`--max-turns-in-flight K` sets `LIVEVOX_LIMITS__MAX_TURNS_IN_FLIGHT`; callers then open a fresh
session for every question, so admission is exercised: beyond K turns at once a new session must
be refused (503), never slowed. A refused question is counted, and the caller goes on.

`--stt-max-batch K` sets `LIVEVOX_STT__MAX_BATCH` (STT batching: up to K callers' waiting
utterances share one Whisper encoder call; docs/configuration.md).

Machine (docs/benchmarks.md, "The machine"): 2 cores, 1 thread each (a Firecracker VM; the table
there says AMD EPYC, /proc/cpuinfo said "Intel(R) Xeon(R) Processor" during the smoke runs of
2026-12-02), 23.5 GiB RAM, no swap, Python 3.11.7. Duration: server start (5 s with the models
cached) + per level `--duration` + its last answer (under 5 s so far) + 3 s settle; the smoke run
`--levels 1,2 --duration 40` took 82 s, so the default run (5 levels x 120 s) takes about 11 minutes
on this machine, a `--burst` run about 2 x `--duration` + 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import FIXTURES, VL_PATH, ServerProcess, busy_cpu_seconds, machine, percentiles
from livevox.client.call import CallError, RealtimeCall, TurnResult, load_wav, speech_bounds

GAP_S = (6.0, 15.0)
#: speech_set prompts rendered for the set (with the fixtures: 3 + these).
SET_PROMPTS = (("table", "espeak-en-us+f3-170"), ("timer", "espeak-en-gb-150"),
               ("lights", "espeak-en-us+m3-190"), ("bank", "espeak-en-gb+f2-130"))


@dataclass
class Question:
    name: str
    pcm: np.ndarray
    speech_end_s: float


def questions(include_rendered: bool) -> list[Question]:
    out = []
    for path in sorted(FIXTURES.glob("question_*.wav")):
        pcm = load_wav(path)
        b = speech_bounds(pcm)
        out.append(Question(path.stem, pcm, b[1] if b else pcm.size / 24000))
    if include_rendered:
        import speech_set

        voices = {v.name: v for v in speech_set.VOICES}
        for prompt, voice in SET_PROMPTS:
            pcm = speech_set.render(voices[voice], speech_set.PROMPTS[prompt])
            b = speech_bounds(pcm)
            out.append(Question(f"{prompt}/{voice}", pcm, b[1] if b else pcm.size / 24000))
    if not out:
        raise SystemExit("no questions: run tests/fixtures/make_fixtures.sh")
    return out


@dataclass
class Level:
    n: int
    mode: str  # "staggered" or "burst"
    first_audio_ms: list[float] = field(default_factory=list)
    turns: int = 0
    failures: list[str] = field(default_factory=list)
    refused: int = 0
    waits: dict[str, list[float]] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)
    load: list[dict[str, Any]] = field(default_factory=list)
    #: Each turn's server marks (ms from its end of speech), for where a slow turn's time went.
    marks: list[dict[str, float]] = field(default_factory=list)
    metrics_seen: set[Any] = field(default_factory=set)
    interrupted: int = 0  # answers still going on when their caller spoke again
    pauses: float | None = None  # livevox_llm_pauses_total during the level (pacing)
    yields: float | None = None  # livevox_llm_yields_total during the level (yielding)


def _record(lv: Level, r: TurnResult) -> None:
    lv.turns += 1
    fa = r.after_speech_ms("response.audio.delta")
    # Still answering when the caller stopped listening (its next question interrupts it): fine.
    status = (r.response or {}).get("status") or ("listening" if fa is not None else None)
    lv.interrupted += status == "listening"
    if status not in ("completed", "incomplete", "listening") or r.errors:
        lv.failures.append(f"status {status}; errors {[e.get('code') for e in r.errors]}")
    if fa is not None:
        lv.first_audio_ms.append(fa)
    elif status in ("completed", "incomplete"):
        lv.failures.append("no audio")
    # A turn's metrics event follows its response.done, so it may arrive during the caller's next
    # turn: every one is taken, once, whichever turn's events it came with.
    for ev in (e for _, e in r.events if e["type"] == "livevox.turn.metrics"):
        if ev.get("response_id") in lv.metrics_seen:
            continue
        lv.metrics_seen.add(ev.get("response_id"))
        if isinstance(ev.get("stages_ms"), dict):
            lv.marks.append({k: round(float(v), 1) for k, v in ev["stages_ms"].items()})
        for job in ev.get("jobs") or []:
            with contextlib.suppress(KeyError, TypeError):
                lv.waits.setdefault(str(job["stage"]), []).append(float(job["started_ms"]) - float(job["queued_ms"]))


async def _open(url: str, lv: Level) -> RealtimeCall | None:
    try:
        call = await RealtimeCall.open(url, open_timeout=20)
        await call.configure(timeout=20)
        return call
    except CallError as exc:
        if "HTTP 503" in exc.message:
            lv.refused += 1
        else:
            lv.failures.append(f"connect: {exc.message}")
        return None


async def _turn(call: RealtimeCall, q: Question, lv: Level, timeout: float, start_at: float | None = None,
                listen_s: float | None = None) -> tuple[bool, float | None]:
    """One spoken turn: whether the session is still there, and when the answer's first audio came.
    With `listen_s` the caller stops listening that long after the first audio."""
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    try:
        r = await call.spoken_turn(q.pcm, speech_end_s=q.speech_end_s, timeout=timeout, listen_s=listen_s)
    except CallError as exc:
        lv.turns += 1
        lv.failures.append(exc.message)
        return exc.code != 4, None
    _record(lv, r)
    return True, r.first.get("response.audio.delta")


async def _caller(idx: int, url: str, qs: list[Question], end_at: float, lv: Level, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed * 1000 + lv.n * 100 + idx)
    fresh = args.max_turns_in_flight is not None
    call = None if fresh else await _open(url, lv)
    try:
        first = True
        since: float | None = None  # the previous answer's first audio
        listen = 0.0  # how long the caller listens to an answer before it speaks again
        while True:
            if since is not None:
                start = since + listen  # interrupting the answer if it is still going on
            else:
                start = time.monotonic() + (rng.uniform(0.0, GAP_S[1]) if first else rng.uniform(*GAP_S))
            first = False
            q = rng.choice(qs)
            if start + q.pcm.size / 24000 > end_at:
                return
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            if call is None:  # a fresh session per question, or a caller refused who calls again
                call = await _open(url, lv)
                if call is None:
                    since = None
                    continue
            assert call is not None
            listen = rng.uniform(*GAP_S)
            alive, since = await _turn(call, q, lv, args.turn_timeout, listen_s=listen)
            if fresh:
                await call.close()
                call = None
            elif not alive:
                return
    finally:
        if call is not None:
            await call.close()


async def _burst(url: str, qs: list[Question], end_at: float, lv: Level, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed * 1000 + 999)
    calls = [c for c in await asyncio.gather(*(_open(url, lv) for _ in range(lv.n))) if c is not None]
    try:
        while calls:
            picks = [rng.choice(qs) for _ in calls]
            lead = max(q.speech_end_s for q in picks) + 0.5
            gap = rng.uniform(*GAP_S)
            if time.monotonic() + gap + lead > end_at:
                return
            together = time.monotonic() + gap + lead  # every question's speech ends here
            alive = await asyncio.gather(*(_turn(c, q, lv, args.turn_timeout, together - q.speech_end_s,
                                                 listen_s=GAP_S[0])
                                           for c, q in zip(calls, picks, strict=True)))
            calls = [c for c, (ok, _) in zip(calls, alive, strict=True) if ok]
    finally:
        for c in calls:
            await c.close()


def _sampler(pid: int, port: int, lv: Level, stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    with contextlib.suppress(psutil.Error):
        proc.cpu_percent(None)
    while not stop.wait(1.0):
        with contextlib.suppress(psutil.Error):
            lv.cpu.append(proc.cpu_percent(None))
        with contextlib.suppress(Exception):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                lv.load.append(json.loads(r.read()).get("load") or {})


def level_duration(args: argparse.Namespace, n: int, mode: str) -> float:
    """Seconds a level lasts: `--reference-duration` for the N=1 reference, else `--duration`."""
    if n == 1 and mode == "staggered" and args.reference_duration:
        return float(args.reference_duration)
    return float(args.duration)


async def run_level(server: ServerProcess, qs: list[Question], n: int, mode: str, args: argparse.Namespace) -> Level:
    lv = Level(n, mode)
    url = server.ws + VL_PATH
    stop = threading.Event()
    th = threading.Thread(target=_sampler, args=(server.pid, server.port, lv, stop), daemon=True)
    th.start()
    duration = level_duration(args, n, mode)
    end_at = time.monotonic() + duration
    before = _counters(server.port)
    try:
        work = (_burst(url, qs, end_at, lv, args) if mode == "burst"
                else asyncio.gather(*(_caller(i, url, qs, end_at, lv, args) for i in range(n))))
        await asyncio.wait_for(work, duration + args.turn_timeout + 60)
    except TimeoutError:
        lv.failures.append("level did not end in time")
    finally:
        stop.set()
        th.join(5)
    after = _counters(server.port)
    if before is not None and after is not None:
        lv.pauses, lv.yields = after[0] - before[0], after[1] - before[1]
    return lv


def _counters(port: int) -> tuple[float, float] | None:
    """The server's `livevox_llm_pauses_total` (answers paused far ahead of playback) and
    `livevox_llm_yields_total` (paused for another caller's first clause)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except Exception:
        return None

    def total(name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    return total("livevox_llm_pauses_total"), total("livevox_llm_yields_total")


def summarize(lv: Level, ref_p50: float | None) -> dict[str, Any]:
    fa = percentiles(lv.first_audio_ms)
    p95 = fa.get("p95")
    stages: dict[str, dict[str, Any]] = {}
    for stage, w in sorted(lv.waits.items()):
        stages[stage] = {"jobs_wait_ms": percentiles(w)}
    for sample in lv.load:
        for stage, s in (sample.get("stages") or {}).items():
            d = stages.setdefault(stage, {}).setdefault("readyz", {"queued_max": 0, "wait_ms_max": 0.0})
            d["queued_max"] = max(d["queued_max"], int(s.get("queued") or 0))
            d["wait_ms_max"] = max(d["wait_ms_max"], float(s.get("wait_ms_max") or 0.0))
    return {
        "n": lv.n, "mode": lv.mode, "turns": lv.turns, "failed": len(lv.failures), "refused": lv.refused,
        "failures": lv.failures[:20], "first_audio_ms": fa,
        "p95_over_n1_p50": round(float(p95) / ref_p50, 2) if p95 is not None and ref_p50 else None,
        "server_cpu_pct": {"mean": round(float(np.mean(lv.cpu)), 1) if lv.cpu else None,
                           "max": round(max(lv.cpu), 1) if lv.cpu else None},
        "turns_in_flight_max": max((int(s.get("turns_in_flight") or 0) for s in lv.load), default=None),
        "interrupted": lv.interrupted, "llm_pauses": lv.pauses, "llm_yields": lv.yields,
        "stages": stages,
        "marks_p50_ms": {k: percentiles([m[k] for m in lv.marks if k in m])["p50"]
                         for k in sorted({k for m in lv.marks for k in m})},
        "turn_marks_ms": lv.marks,
    }


def print_table(levels: list[dict[str, Any]]) -> None:
    print(f"\n  {'level':<12}{'turns':>6}{'fail':>5}{'503':>5}{'p50':>8}{'p95':>8}{'max':>8}{'p95/1p50':>9}"
          f"{'cpu%':>7}{'cpu%max':>8}{'inflt':>6}{'intr':>5}{'paus':>5}{'yld':>5}")
    for s in levels:
        fa = s["first_audio_ms"]
        cells = "".join(f"{'-' if fa.get(k) is None else round(fa[k]):>8}" for k in ("p50", "p95", "max"))
        ratio = "-" if s["p95_over_n1_p50"] is None else f"{s['p95_over_n1_p50']}x"
        cpu = s["server_cpu_pct"]
        print(f"  {s['mode'][0] + ' N=' + str(s['n']):<12}{s['turns']:>6}{s['failed']:>5}{s['refused']:>5}{cells}"
              f"{ratio:>9}{cpu['mean'] if cpu['mean'] is not None else '-':>7}"
              f"{cpu['max'] if cpu['max'] is not None else '-':>8}{s['turns_in_flight_max'] or 0:>6}"
              f"{s['interrupted']:>5}{'-' if s['llm_pauses'] is None else round(s['llm_pauses']):>5}"
              f"{'-' if s.get('llm_yields') is None else round(s['llm_yields']):>5}")
    print("\n  queue wait per stage (ms; jobs: started - queued, p50/p95/max; [readyz: max queued, max wait_ms_max])")
    for s in levels:
        parts = []
        for stage, d in s["stages"].items():
            j = d.get("jobs_wait_ms") or {}
            rz = d.get("readyz") or {}
            parts.append(f"{stage} {j.get('p50', '-')}/{j.get('p95', '-')}/{j.get('max', '-')}"
                         f" [q{rz.get('queued_max', '-')} {rz.get('wait_ms_max', '-')}]")
        print(f"  {s['mode'][0]} N={s['n']:<3} " + "; ".join(parts))
    for s in levels:
        for f in s["failures"][:5]:
            print(f"  ! {s['mode'][0]} N={s['n']}: {f}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    qs = questions(not args.fixtures_only)
    plan = [(1, "staggered"), (args.burst, "burst")] if args.burst else [(n, "staggered") for n in args.levels]
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.max_turns_in_flight is not None:
        env["LIVEVOX_LIMITS__MAX_TURNS_IN_FLIGHT"] = str(args.max_turns_in_flight)
    if args.stt_max_batch is not None:
        env["LIVEVOX_STT__MAX_BATCH"] = str(args.stt_max_batch)
    info = machine()
    t_start = time.monotonic()
    server = ServerProcess("embedded", env).start()
    print(f"server ready in {time.monotonic() - t_start:.0f} s (log {server.log.name}); "
          f"{len(qs)} questions: {', '.join(q.name for q in qs)}", flush=True)
    levels: list[dict[str, Any]] = []
    ref_p50: float | None = None
    busy0, wall0 = busy_cpu_seconds(), time.monotonic()
    try:
        for n, mode in plan:
            print(f"level {mode} N={n}: {level_duration(args, n, mode):g} s ...", flush=True)
            lv = await run_level(server, qs, n, mode, args)
            if n == 1 and mode == "staggered" and lv.first_audio_ms:
                ref_p50 = float(np.percentile(lv.first_audio_ms, 50))
            levels.append(summarize(lv, ref_p50))
            await asyncio.sleep(3)
    finally:
        server.stop()
    info["machine_busy_cores"] = round((busy_cpu_seconds() - busy0) / (time.monotonic() - wall0), 2)
    info["loadavg_1m_at_end"] = round(psutil.getloadavg()[0], 2)
    return {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "json"},
            "n1_p50_ms": None if ref_p50 is None else round(ref_p50, 1), "levels": levels,
            "wall_s": round(time.monotonic() - t_start, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2, 4, 6, 8])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds per level (turns start only within it)")
    ap.add_argument("--reference-duration", type=float, default=0.0,
                    help="seconds of the N=1 level, the ratios' denominator (default: --duration); a single "
                         "caller asks about one question per 12 s, so 120 s gives only 6-10 turns")
    ap.add_argument("--burst", type=int, default=0, help="N callers ending their questions together")
    ap.add_argument("--max-turns-in-flight", type=int, default=None)
    ap.add_argument("--stt-max-batch", type=int, default=None, help="sets LIVEVOX_STT__MAX_BATCH")
    ap.add_argument("--turn-timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fixtures-only", action="store_true", help="only tests/fixtures/question_*.wav")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="extra environment for the server process (repeatable), e.g. LIVEVOX_LLM__PARALLEL=4")
    args = ap.parse_args(argv)
    rep = asyncio.run(run(args))
    m = rep["machine"]
    print(f"\nmachine: {m['nproc']} cores {m['cpu']}, load {m['loadavg_1m_at_start']} -> {m['loadavg_1m_at_end']}, "
          f"{m['machine_busy_cores']} cores busy on average; N=1 p50 {rep['n1_p50_ms']} ms; wall {rep['wall_s']} s")
    print("  end of speech -> first audio delta (client, ms)")
    print_table(rep["levels"])
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
