"""Remote-engine benchmark: what a stage costs over loopback HTTP, and what a gateway sustains
with every stage remote.

    python benchmarks/remote_engines.py                                  # both parts, defaults
    python benchmarks/remote_engines.py --part stages --engines embedded --iters 30
    python benchmarks/remote_engines.py --part throughput --levels 1,10,50 --duration 15

Part 1, `stages`: the same engine in-process and behind an engine livevox
(`livevox serve --role engine`, its own process) reached through the OpenAI-compatible clients
(`engine = "openai"`). Each iteration runs one request per stage both ways, alternating which
goes first; the report gives p50/p95 of each way and of the per-iteration difference (remote
minus in-process = the added latency):
- STT: a 3 s spoken question (16 kHz) -> the whole transcript;
- LLM: a short prompt, max 16 tokens -> first token, and -> the whole answer;
- TTS: one sentence -> first audio chunk, and -> all audio.
`--engines scripted` (instant stand-ins) isolates the HTTP path itself; `embedded` adds the real
models' own time on both sides.

Part 2, `throughput`: a gateway (`--role gateway`, its own process) whose STT, LLM and TTS point
at an engine livevox with instant scripted engines (a third process), against a plain livevox
with the same engines in-process. N sessions each run manual turns back to back (1 s of audio,
commit, response.create, until response.done) for `--duration` seconds; reported: turns per
second, commit -> first audio delta and commit -> response.done p50/p95, and the CPU of the
gateway and engine processes. The client shares the 2-core machine with both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import FIXTURES, ServerProcess, machine, percentiles
from livevox.client.call import CallError, RealtimeCall
from livevox.engines.base import ChatRequest, SynthesisOptions, TextDelta, ToolCallDelta, TranscribeOptions
from livevox.engines.registry import Engines, build_engines
from livevox.settings import load_settings

PS = (50, 95)
VL_PATH = "/voice-live/realtime?api-version=2026-07-15&model=livevox"


def _remote_env(port: int, prefix: str = "LIVEVOX_") -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in ("STT", "LLM", "TTS"):
        env[f"{prefix}{stage}__ENGINE"] = "openai"
        env[f"{prefix}{stage}__OPENAI__BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    return env


def _stage_settings(engines: str, remote_port: int | None) -> dict[str, Any]:
    local = "scripted" if engines == "scripted" else None
    out: dict[str, Any] = {"vad": {"engine": "scripted"}}
    for stage in ("stt", "llm", "tts"):
        if remote_port is not None:
            out[stage] = {"engine": "openai", "openai": {"base_url": f"http://127.0.0.1:{remote_port}/v1"}}
        elif local is not None:
            out[stage] = {"engine": local}
    return out


def _question_16k() -> np.ndarray:
    with wave.open(str(FIXTURES / "question_capital.wav")) as w:
        assert w.getframerate() == 16000
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return pcm.astype(np.float32) / 32768.0


async def _once(engines: Engines, audio: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    async for _ in engines.stt.transcribe(audio, TranscribeOptions(language="en"), "bench"):
        pass
    out["stt_total"] = (time.perf_counter() - t0) * 1000
    req = ChatRequest(messages=[{"role": "system", "content": "Answer in one short sentence."},
                                {"role": "user", "content": "What is the capital of France?"}],
                      temperature=0.0, max_tokens=16)
    t0 = time.perf_counter()
    first = None
    async for ev in engines.llm.stream(req, "bench"):
        if first is None and ((isinstance(ev, TextDelta) and ev.text) or isinstance(ev, ToolCallDelta)):
            first = time.perf_counter()
    end = time.perf_counter()
    out["llm_first_token"] = ((first or end) - t0) * 1000
    out["llm_total"] = (end - t0) * 1000
    t0 = time.perf_counter()
    first = None
    async for _chunk in engines.tts.synthesize("The capital of France is Paris.", SynthesisOptions(), "bench"):
        first = first or time.perf_counter()
    end = time.perf_counter()
    out["tts_first_audio"] = ((first or end) - t0) * 1000
    out["tts_total"] = (end - t0) * 1000
    return out


async def stages(engines_kind: str, iters: int) -> dict[str, Any]:
    server = ServerProcess(engines_kind, env={"LIVEVOX_ROLE": "engine"}).start()
    try:
        local = await build_engines(load_settings(None, **_stage_settings(engines_kind, None)))
        remote = await build_engines(load_settings(None, **_stage_settings(engines_kind, server.port)))
        audio = _question_16k()
        rows: dict[str, dict[str, list[float]]] = {"local": {}, "remote": {}, "added": {}}
        for i in range(iters):
            order = [("local", local), ("remote", remote)] if i % 2 == 0 else [("remote", remote), ("local", local)]
            got: dict[str, dict[str, float]] = {}
            for label, engines in order:
                got[label] = await _once(engines, audio)
            for key in got["local"]:
                rows["local"].setdefault(key, []).append(got["local"][key])
                rows["remote"].setdefault(key, []).append(got["remote"][key])
                rows["added"].setdefault(key, []).append(got["remote"][key] - got["local"][key])
        await local.close()
        await remote.close()
    finally:
        server.stop()
    return {"engines": engines_kind, "iters": iters,
            "stats": {way: {k: percentiles(v, PS) for k, v in vals.items()} for way, vals in rows.items()}}


# ---------------------------------------------------------------- throughput


async def _session(url: str, end_at: float, audio: np.ndarray, out: dict[str, Any]) -> None:
    try:
        call = await RealtimeCall.open(url, latency_events=False, open_timeout=30)
    except CallError as exc:
        out["failures"].append(exc.message)
        return
    try:
        await call.configure(vad=False, transcription=True)
        while time.monotonic() < end_at:
            r = await call.manual_turn(audio, settle_s=0.0, metrics_wait_s=0.0, timeout=30)
            status = (r.response or {}).get("status")
            if status != "completed":
                out["failures"].append(f"response {status}: {r.errors[:1]}")
                continue
            out["turns"] += 1
            for key, etype in (("first_audio", "response.audio.delta"), ("done", "response.done")):
                ms = r.after_commit_ms(etype)
                if ms is not None:
                    out[key].append(ms)
    except CallError as exc:
        out["failures"].append(exc.message)
    finally:
        await call.close()


async def _level(url: str, n: int, duration: float, pids: dict[str, int]) -> dict[str, Any]:
    audio = (np.sin(2 * np.pi * 220 * np.arange(24000) / 24000) * 8000).astype(np.int16)
    out: dict[str, Any] = {"turns": 0, "first_audio": [], "done": [], "failures": []}
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    cpu0 = {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}
    t0 = time.monotonic()
    end_at = t0 + duration
    await asyncio.gather(*(_session(url, end_at, audio, out) for _ in range(n)))
    wall = time.monotonic() - t0
    cpu = {name: round(100 * (sum(p.cpu_times()[:2]) - cpu0[name]) / wall, 1) for name, p in procs.items()}
    return {"sessions": n, "wall_s": round(wall, 1), "turns": out["turns"],
            "turns_per_s": round(out["turns"] / wall, 1),
            "first_audio_ms": percentiles(out["first_audio"], PS), "done_ms": percentiles(out["done"], PS),
            "failures": len(out["failures"]), "failure_sample": out["failures"][:3], "cpu_percent": cpu}


async def throughput(levels: list[int], duration: float) -> dict[str, Any]:
    limits = {"LIVEVOX_LIMITS__MAX_SESSIONS": "2000"}
    engine = ServerProcess("scripted", env={"LIVEVOX_ROLE": "engine", **limits}).start()
    gateway = ServerProcess("scripted", env={"LIVEVOX_ROLE": "gateway", **limits, **_remote_env(engine.port)}).start()
    plain = ServerProcess("scripted", env=limits).start()
    results: dict[str, list[dict[str, Any]]] = {"remote": [], "in_process": []}
    try:
        for n in levels:
            results["remote"].append(await _level(gateway.ws + VL_PATH, n, duration,
                                                  {"gateway": gateway.pid, "engine": engine.pid}))
            results["in_process"].append(await _level(plain.ws + VL_PATH, n, duration, {"gateway": plain.pid}))
    finally:
        for s in (gateway, engine, plain):
            s.stop()
    return {"duration_s": duration, "levels": results}


# ---------------------------------------------------------------- report


def print_stages(rep: dict[str, Any]) -> None:
    print(f"\n== per-stage latency, {rep['engines']} engines, {rep['iters']} iterations (ms) ==")
    print(f"  {'stage':<18}{'in-process p50/p95':>22}{'remote p50/p95':>22}{'added p50/p95':>22}")
    st = rep["stats"]
    for key in st["local"]:
        cells = "".join(f"{str(st[w][key]['p50']) + ' / ' + str(st[w][key]['p95']):>22}"
                        for w in ("local", "remote", "added"))
        print(f"  {key:<18}{cells}")


def print_throughput(rep: dict[str, Any]) -> None:
    print(f"\n== gateway throughput, instant scripted engines, {rep['duration_s']:g} s per level ==")
    print(f"  {'where':<12}{'sessions':>9}{'turns/s':>9}{'1st audio p50/p95':>20}{'done p50/p95':>18}"
          f"{'fail':>6}  cpu %")
    for where, rows in rep["levels"].items():
        for r in rows:
            fa, dn = r["first_audio_ms"], r["done_ms"]
            print(f"  {where:<12}{r['sessions']:>9}{r['turns_per_s']:>9}{str(fa['p50']) + ' / ' + str(fa['p95']):>20}"
                  f"{str(dn['p50']) + ' / ' + str(dn['p95']):>18}{r['failures']:>6}  {r['cpu_percent']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["stages", "throughput", "all"], default="all")
    ap.add_argument("--engines", default="scripted,embedded", help="for stages: scripted, embedded or both")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--levels", default="1,10,50")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--json", default=None, help="also write the report here")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "stages": [], "throughput": None}
    print(json.dumps(report["machine"]))
    if args.part in ("stages", "all"):
        for kind in args.engines.split(","):
            rep = asyncio.run(stages(kind.strip(), args.iters))
            report["stages"].append(rep)
            print_stages(rep)
    if args.part in ("throughput", "all"):
        rep = asyncio.run(throughput([int(x) for x in args.levels.split(",")], args.duration))
        report["throughput"] = rep
        print_throughput(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
