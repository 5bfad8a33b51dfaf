"""Concurrency benchmark: many WebSocket sessions going from idle to talking at real-time pace,
against instant (scripted) engines, with the event latency at each load level.

    python benchmarks/concurrency.py                               # levels 50,100,200,300; 30 s each
    python benchmarks/concurrency.py --levels 200 --duration 60 --turn-mode manual

Every session connects (spread over `--ramp` seconds), configures server_vad + input transcription
(pcm16 24 kHz), then loops until the level ends: idle for a random 1-4 s (nothing sent), then
talks: 1.0 s of a tone (speech to the scripted VAD) and 0.8 s of silence streamed at real-time
pace in `--chunk-ms` appends, until `response.done`. Only turns that start after the ramp are
measured.

Event latency (server send -> client receive is not observable on its own) is measured as:
- `--turn-mode vad` (default): the time from the append that carried the sample closing the
  silence window to the arrival of `input_audio_buffer.speech_stopped`. The server reports that
  sample as `audio_end_ms` on its 16 kHz clock; replaying the appends through the session's
  streaming resampler tells which append it was (`TurnResult.speech_stopped_event_ms`). The
  configured silence is thus excluded exactly, and what remains is the client send, the
  server's processing of that append (resample, VAD, turn logic, events) and the delivery.
- `--turn-mode manual` (turn_detection null): the tone is streamed the same way, then the client
  sends `input_audio_buffer.commit` + `response.create`; event latency is commit ->
  `input_audio_buffer.committed`.
Both modes also report speech_stopped/commit -> `response.created` and -> first audio delta.

The server runs in its own process (scripted engines); load comes from `--workers` client
processes, so the client's own interpreter is not the bottleneck. Server CPU (% of one core) and
RSS (max) are sampled with psutil. Target (issue 2, section 7): >= 200 sessions, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import VL_PATH, ServerProcess, busy_cpu_seconds, machine, percentiles, wait_quiet
from livevox.client.call import RATE, CallError, RealtimeCall, TurnResult

SPEECH_S = 1.0
TAIL_SILENCE_S = 0.8
IDLE_S = (1.0, 4.0)
PS = (50, 95, 99)


def _turn_audio(speech: bool) -> np.ndarray:
    t = np.arange(int(SPEECH_S * RATE)) / RATE
    tone = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    if not speech:
        return tone
    return np.concatenate([tone, np.zeros(int(TAIL_SILENCE_S * RATE), np.int16)])


def _gap(r: TurnResult, a: str | float | None, b: str) -> float | None:
    ta = r.first.get(a) if isinstance(a, str) else a
    tb = r.first.get(b)
    return None if ta is None or tb is None else (tb - ta) * 1000.0


async def _session(idx: int, url: str, start_at: float, ramp: float, end_at: float, mode: str,
                   chunk_ms: int, out: dict[str, Any]) -> None:
    rng = random.Random(idx)
    await asyncio.sleep(max(0.0, start_at + ramp * rng.random() * 0.9 - time.monotonic()))
    try:
        call = await RealtimeCall.open(url, latency_events=False, open_timeout=20)
    except CallError as exc:
        out["connect_failures"].append(exc.message)
        return
    out["connected"] += 1
    measure_from = start_at + ramp
    vad_audio, manual_audio = _turn_audio(True), _turn_audio(False)
    try:
        await call.configure(vad=mode == "vad", timeout=20)
        first = True
        while True:
            idle = rng.uniform(0.0 if first else IDLE_S[0], IDLE_S[1])
            first = False
            if time.monotonic() + idle + SPEECH_S + TAIL_SILENCE_S + 0.5 > end_at:
                break
            await asyncio.sleep(idle)
            t0 = time.monotonic()
            measured = t0 >= measure_from
            try:
                if mode == "vad":
                    r = await call.spoken_turn(vad_audio, speech_end_s=SPEECH_S, chunk_ms=chunk_ms, timeout=15,
                                               metrics_wait_s=0, tail_silence_s=0)
                else:
                    r = TurnResult(speech_end=t0 + SPEECH_S)
                    await call.stream_paced(manual_audio, chunk_ms, t0, r)
                    r = await call.manual_turn(np.zeros(0, np.int16), settle_s=0, timeout=15, metrics_wait_s=0)
            except CallError as exc:
                if measured:
                    out["turn_failures"].append(exc.message)
                if exc.code in (4,):  # the connection is gone
                    return
                continue
            out["appends"] += len(r.send_times) if mode == "vad" else int(SPEECH_S * 1000 / chunk_ms)
            if not measured:
                continue
            out["turns"] += 1
            if (r.response or {}).get("status") != "completed":
                out["turn_failures"].append(f"response {(r.response or {}).get('status')}")
            if mode == "vad":
                ev = r.speech_stopped_event_ms()
                base: str | float | None = "input_audio_buffer.speech_stopped"
            else:
                ev = _gap(r, r.commit_sent, "input_audio_buffer.committed")
                base = r.commit_sent
            if ev is not None:
                out["event_ms"].append(ev)
                out["event_at"].append(round(time.monotonic() - measure_from, 2))
            for key, etype in (("to_created_ms", "response.created"), ("to_audio_ms", "response.audio.delta")):
                v = _gap(r, base, etype)
                if v is not None:
                    out[key].append(v)
    except CallError as exc:
        out["turn_failures"].append(exc.message)
    finally:
        await call.close()


async def _worker_async(url: str, ids: list[int], start_at: float, ramp: float, end_at: float, mode: str,
                        chunk_ms: int) -> dict[str, Any]:
    out: dict[str, Any] = {"connected": 0, "turns": 0, "appends": 0, "event_ms": [], "event_at": [],
                           "to_created_ms": [],
                           "to_audio_ms": [], "connect_failures": [], "turn_failures": []}
    cpu0 = time.process_time()
    lags: list[float] = []

    async def lag_probe() -> None:  # how late this client's event loop wakes up: client-side noise
        while time.monotonic() < end_at:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            if t >= start_at + ramp:
                lags.append((time.monotonic() - t - 0.01) * 1000.0)

    probe = asyncio.create_task(lag_probe())
    tasks = [asyncio.create_task(_session(i, url, start_at, ramp, end_at, mode, chunk_ms, out)) for i in ids]
    # Bounded: every session stops by itself at end_at; this is the backstop.
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, end_at - time.monotonic()) + 30)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if t.exception() is not None:
            out["turn_failures"].append(f"session crashed: {t.exception()!r}")
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    out["client_cpu_s"] = time.process_time() - cpu0
    out["loop_lag_ms"] = lags
    return out


def worker(url: str, ids: list[int], start_at: float, ramp: float, end_at: float, mode: str,
           chunk_ms: int) -> dict[str, Any]:
    return asyncio.run(_worker_async(url, ids, start_at, ramp, end_at, mode, chunk_ms))


def run_level(pool: concurrent.futures.Executor, url: str, n: int, args: argparse.Namespace,
              server_pid: int | None) -> dict[str, Any]:
    proc = psutil.Process(server_pid) if server_pid else None
    start_at = time.monotonic() + 1.0
    measure_from = start_at + args.ramp
    end_at = measure_from + args.duration
    shards = [list(range(w, n, args.workers)) for w in range(args.workers)]
    futures = [pool.submit(worker, url, ids, start_at, args.ramp, end_at, args.turn_mode, args.chunk_ms)
               for ids in shards if ids]
    rss_max = 0
    cpu_at: dict[str, float] = {}
    busy_by_second: dict[int, float] = {}  # machine cores busy, per second of the measured window
    last_busy: tuple[float, float] | None = None
    while not all(f.done() for f in futures):
        now = time.monotonic()
        if measure_from <= now <= end_at:
            b = busy_cpu_seconds()
            if last_busy is None or now - last_busy[0] >= 1.0:
                if last_busy is not None:
                    sec = int(last_busy[0] - measure_from)
                    busy_by_second[sec] = round((b - last_busy[1]) / (now - last_busy[0]), 2)
                last_busy = (now, b)
        if proc is not None:
            with_cpu = proc.cpu_times()
            rss_max = max(rss_max, proc.memory_info().rss)
            if "start" not in cpu_at and now >= measure_from:
                cpu_at["start"], cpu_at["t_start"] = with_cpu.user + with_cpu.system, now
            if now <= end_at:
                cpu_at["end"], cpu_at["t_end"] = with_cpu.user + with_cpu.system, now
        if now >= measure_from and "sys_start" not in cpu_at:
            cpu_at["sys_start"], cpu_at["sys_t_start"] = busy_cpu_seconds(), now
        if measure_from <= now <= end_at:
            cpu_at["sys_end"], cpu_at["sys_t_end"] = busy_cpu_seconds(), now
        if now > end_at + 60:
            break  # backstop; the workers stop on their own long before
        time.sleep(0.25)
    results = [f.result(timeout=60) for f in futures]
    merged: dict[str, Any] = {k: [] for k in ("event_ms", "to_created_ms", "to_audio_ms", "connect_failures",
                                              "turn_failures", "loop_lag_ms", "event_at")}
    connected = turns = appends = 0
    client_cpu = 0.0
    for r in results:
        connected += r["connected"]
        turns += r["turns"]
        appends += r["appends"]
        client_cpu += r["client_cpu_s"]
        for k in merged:
            merged[k] += r[k]
    span = args.ramp + args.duration
    level: dict[str, Any] = {
        "sessions": n, "connected": connected, "connect_failures": len(merged["connect_failures"]),
        "turns_measured": turns, "turn_failures": len(merged["turn_failures"]),
        "appends_per_s": round(appends / span, 1),
        "event_latency_ms": percentiles(merged["event_ms"], PS),
        "to_response_created_ms": percentiles(merged["to_created_ms"], PS),
        "to_first_audio_ms": percentiles(merged["to_audio_ms"], PS),
        "client_cpu_pct": round(100 * client_cpu / (span + 1), 1),
        "client_loop_lag_ms": percentiles(merged["loop_lag_ms"], PS),
        "failure_samples": (merged["connect_failures"] + merged["turn_failures"])[:5],
        # When the slow events happened (second of the measured window -> count): a burst points
        # at something outside the server (another process), a spread at the server itself.
        "slow_events_by_second": _slow_by_second(merged["event_ms"], merged["event_at"]),
        "machine_busy_by_second": busy_by_second,
    }
    if proc is not None and "start" in cpu_at and cpu_at["t_end"] > cpu_at["t_start"]:
        level["server_cpu_pct"] = round(100 * (cpu_at["end"] - cpu_at["start"]) / (cpu_at["t_end"] - cpu_at["t_start"]),
                                        1)
        level["server_rss_mb_max"] = round(rss_max / 2**20, 1)
    if cpu_at.get("sys_t_end", 0) > cpu_at.get("sys_t_start", 0):
        wall = cpu_at["sys_t_end"] - cpu_at["sys_t_start"]
        level["machine_busy_cores"] = round((cpu_at["sys_end"] - cpu_at["sys_start"]) / wall, 2)
        ours = level.get("server_cpu_pct", 0.0) / 100 + level["client_cpu_pct"] / 100
        level["other_busy_cores"] = round(max(0.0, level["machine_busy_cores"] - ours), 2)
    return level


SLOW_MS = 20.0


def _slow_by_second(ms: list[float], at: list[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for v, t in zip(ms, at, strict=False):
        if v > SLOW_MS:
            counts[int(t)] = counts.get(int(t), 0) + 1
    return dict(sorted(counts.items()))


def _sessions_open(ws_url: str) -> int | None:
    """Open sessions according to the server's /readyz (None if it does not say)."""
    import urllib.request
    from urllib.parse import urlsplit

    u = urlsplit(ws_url)
    try:
        with urllib.request.urlopen(f"http://{u.netloc}/readyz", timeout=5) as r:
            n = json.loads(r.read()).get("sessions")
            return n if isinstance(n, int) else None
    except (OSError, ValueError):
        return None


def print_level(lv: dict[str, Any], mode: str) -> None:
    ev = "speech_stopped event" if mode == "vad" else "commit -> committed"
    base = "speech_stopped" if mode == "vad" else "commit"
    cpu = (f"server CPU {lv['server_cpu_pct']}% of a core, RSS max {lv['server_rss_mb_max']} MB"
           if "server_cpu_pct" in lv else "server CPU/RSS not measured")
    print(f"{lv['sessions']:>4} sessions: connected {lv['connected']}, turns {lv['turns_measured']}, "
          f"failures {lv['connect_failures']}+{lv['turn_failures']}, {lv['appends_per_s']} appends/s; {cpu}; "
          f"clients CPU {lv['client_cpu_pct']}%; machine busy {lv.get('machine_busy_cores', '?')} of "
          f"{psutil.cpu_count()} cores, {lv.get('other_busy_cores', '?')} of them other processes")
    for label, key in ((f"event latency ({ev})", "event_latency_ms"),
                       (f"{base} -> response.created", "to_response_created_ms"),
                       (f"{base} -> first audio delta", "to_first_audio_ms"),
                       ("client event-loop lag (10 ms probe)", "client_loop_lag_ms")):
        s = lv[key]
        cells = "  ".join(f"p{p} {s[f'p{p}']}" for p in PS)
        print(f"      {label:<40} {cells}  max {s['max']}  (n={s['n']})")
    slow = lv["slow_events_by_second"]
    if slow:
        busy = lv["machine_busy_by_second"]
        where = ", ".join(f"s{sec}: {cnt} (machine {busy.get(sec, '?')} cores)" for sec, cnt in slow.items())
        print(f"      events over {SLOW_MS:g} ms: {sum(slow.values())}; by second of the window: {where}")
    for f in lv["failure_samples"]:
        print(f"      failure: {f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="50,100,200,300", help="comma-separated session counts")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per level")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds to connect the sessions (not measured)")
    p.add_argument("--workers", type=int, default=2, help="client processes")
    p.add_argument("--chunk-ms", type=int, default=40, help="audio per append")
    p.add_argument("--turn-mode", choices=["vad", "manual"], default="vad")
    p.add_argument("--url", default=None, help="use a running server (scripted engines!) instead of starting one")
    p.add_argument("--server-pid", type=int, default=None, help="with --url: the server's pid, for CPU/RSS")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each level, wait up to this long for the machine to be idle (< 0.3 cores busy)")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not levels or any(not 1 <= n <= 2000 for n in levels) or not 1 <= args.duration <= 600:
        p.error("levels must be 1..2000 sessions, duration 1..600 s")
    server = None
    url, pid = args.url, args.server_pid
    if url is None:
        server = ServerProcess("scripted", env={"LIVEVOX_LIMITS__MAX_SESSIONS": str(max(levels) + 50)}).start()
        url, pid = server.ws + VL_PATH, server.pid
    report: dict[str, Any] = {"machine": machine(), "mode": args.turn_mode, "chunk_ms": args.chunk_ms,
                              "duration_s": args.duration, "ramp_s": args.ramp, "workers": args.workers,
                              "levels": []}
    if pid:
        report["server_rss_mb_idle"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    m = report["machine"]
    print(f"machine: {m['nproc']} x {m['cpu']}, {m['ram_gb']} GiB, Python {m['python']}, load "
          f"{m['loadavg_1m_at_start']} at start; mode {args.turn_mode}, {args.chunk_ms} ms appends, "
          f"{args.duration:g} s per level, {args.workers} client processes; server RSS idle "
          f"{report.get('server_rss_mb_idle', '?')} MB")
    try:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            for n in levels:
                before = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                lv = run_level(pool, url, n, args, pid)
                if before is not None:
                    lv["busy_cores_before"] = before
                report["levels"].append(lv)
                print_level(lv, args.turn_mode)
                time.sleep(3.0)  # let the closed sessions drain
                if pid:
                    lv["server_rss_mb_after"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
                    lv["server_sessions_after"] = _sessions_open(url)
                    print(f"      after the level: server RSS {lv['server_rss_mb_after']} MB, "
                          f"{lv['server_sessions_after']} sessions open")
    finally:
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
