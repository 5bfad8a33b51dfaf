"""Turn latency benchmark: replay spoken questions at real-time pace over the WebSocket and report
p50/p95 of what a caller waits after the end of their speech.

    python benchmarks/latency.py --engines embedded --turns 30
    python benchmarks/latency.py --engines scripted --turns 50     # livevox's own overhead
    python benchmarks/latency.py --url ws://127.0.0.1:8000/voice-live/realtime --turns 10

Each turn is a fresh session: `session.update` (server_vad, input transcription, pcm16 24 kHz),
the WAV streamed in 20 ms appends paced against the monotonic clock, then 1.5 s of silence, until
`response.done` and the opt-in `livevox.turn.metrics` event. Client intervals start at the end of
the real speech in the WAV (found by energy, see `livevox.client.call.speech_bounds`), at the
moment it was "spoken" at real-time pace.

With `--engines scripted` (instant stand-in engines) it also runs manual turns
(turn_detection null: append, commit, response.create) and reports commit -> first audio delta:
livevox's own overhead, target p95 < 5 ms.

The server runs in its own process (`python -m livevox serve`, so the benchmark client does not
share its interpreter) unless `--server thread` (the tests' harness) or `--url` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from livevox.client.call import (
    CLIENT_MARKS,
    SERVER_STAGES,
    CallError,
    RealtimeCall,
    TurnResult,
    load_wav,
    speech_bounds,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
VL_PATH = "/voice-live/realtime?api-version=2026-07-15&model=livevox"
SCRIPTED_ENV = {f"LIVEVOX_{stage}__ENGINE": "scripted" for stage in ("VAD", "STT", "LLM", "TTS")}


# ---------------------------------------------------------------- shared helpers (also used by concurrency.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentiles(values: list[float], ps: tuple[int, ...] = (50, 95)) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {"n": len(values), "min": round(min(values), 1) if values else None}
    for p in ps:
        out[f"p{p}"] = round(float(np.percentile(values, p)), 1) if values else None
    out["max"] = round(max(values), 1) if values else None
    return out


def fmt_row(label: str, stats: dict[str, Any], ps: tuple[int, ...] = (50, 95)) -> str:
    mn = "-" if stats.get("min") is None else stats["min"]
    cells = f"{mn:>10}" + "".join(f"{'-' if stats.get(f'p{p}') is None else stats[f'p{p}']:>10}" for p in ps)
    mx = "-" if stats.get("max") is None else stats["max"]
    return f"  {label:<44}{cells}{mx:>10}{stats['n']:>6}"


def header(ps: tuple[int, ...] = (50, 95)) -> str:
    return f"  {'interval (ms)':<44}{'min':>10}" + "".join(f"{'p' + str(p):>10}" for p in ps) + f"{'max':>10}{'n':>6}"


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(mem_gb, 1),
            "python": platform.python_version(), "loadavg_1m_at_start": round(load[0], 2)}


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """A benchmark's JSON report, if asked for (`--json`)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))


def busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores, all processes) so far."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def wait_quiet(max_wait: float, cores: float = 0.3, window: float = 3.0) -> float:
    """Wait (at most `max_wait` s) until the machine kept fewer than `cores` busy over `window` s;
    return the last measured busy cores. Other work on a small machine lands in the tails."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = busy_cpu_seconds(), time.monotonic()
        time.sleep(window)
        busy = (busy_cpu_seconds() - b0) / (time.monotonic() - t0)
        if busy < cores or time.monotonic() >= deadline:
            return round(busy, 2)


class ServerProcess:
    """`python -m livevox serve` on a free loopback port, ready when /readyz says so."""

    def __init__(self, engines: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.engines = engines
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEVOX_")}
        if engines == "scripted":
            self.env.update(SCRIPTED_ENV)
        self.env.update(env or {})
        self.log = tempfile.NamedTemporaryFile(prefix="livevox-bench-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 300.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livevox", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready within {timeout:g} s; log: {self.log.name}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class HarnessServer:
    """The tests' in-process server thread (shares this interpreter: adds client noise)."""

    def __init__(self, engines: str) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        import server_harness

        settings = (server_harness.scripted_settings() if engines == "scripted"
                    else server_harness.embedded_settings())
        self.srv = server_harness.ServerThread(settings)

    @property
    def ws(self) -> str:
        return str(self.srv.ws)

    @property
    def pid(self) -> int:
        return os.getpid()

    def start(self) -> HarnessServer:
        self.srv.start(timeout=300)
        return self

    def stop(self) -> None:
        self.srv.stop()


# ---------------------------------------------------------------- turns


async def spoken_turn(url: str, pcm: np.ndarray, speech_end_s: float, api_key: str | None,
                      chunk_ms: int, timeout: float) -> TurnResult:
    call = await RealtimeCall.open(url, api_key)
    try:
        await call.configure()
        return await call.spoken_turn(pcm, speech_end_s=speech_end_s, chunk_ms=chunk_ms, timeout=timeout)
    finally:
        await call.close()


async def manual_turn(url: str, pcm: np.ndarray, api_key: str | None, timeout: float) -> TurnResult:
    call = await RealtimeCall.open(url, api_key)
    try:
        await call.configure(vad=False)
        return await call.manual_turn(pcm, timeout=timeout, metrics_wait_s=0)
    finally:
        await call.close()


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _between(r: TurnResult, a: str, b: str) -> float | None:
    ta, tb = r.first.get(a), r.first.get(b)
    return None if ta is None or tb is None else (tb - ta) * 1000.0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wavs = [Path(w) for w in args.wav] if args.wav else sorted(FIXTURES.glob("question_*.wav"))
    if not wavs:
        raise SystemExit("no question WAVs: pass --wav or run tests/fixtures/make_fixtures.sh")
    questions = []
    for w in wavs:
        pcm = load_wav(w)
        bounds = speech_bounds(pcm)
        questions.append((w.name, pcm, bounds[1] if bounds else pcm.size / 24000))
    server: ServerProcess | HarnessServer | None = None
    url = args.url
    if url is None:
        env = dict(kv.split("=", 1) for kv in args.server_env)
        server = (HarnessServer(args.engines) if args.server == "thread"
                  else ServerProcess(args.engines, env=env)).start()
        url = server.ws + VL_PATH
    report: dict[str, Any] = {"machine": machine(), "engines": args.engines if args.url is None else "external",
                              "url": url.split("?")[0], "chunk_ms": args.chunk_ms, "server": args.server,
                              "server_env": args.server_env,
                              "questions": [q[0] for q in questions]}
    client: dict[str, list[float]] = {label: [] for _, label in CLIENT_MARKS}
    extra: dict[str, list[float]] = {"speech_stopped -> first audio delta": [],
                                     "speech_stopped event latency (append -> event)": []}
    server_stages: dict[str, list[float]] = {}
    failures: list[str] = []
    transcripts: list[tuple[str, str | None, str]] = []
    statuses: dict[str, int] = {}
    details: list[dict[str, Any]] = []
    if args.wait_quiet > 0:
        report["busy_cores_before"] = wait_quiet(args.wait_quiet)
    busy0, wall0 = busy_cpu_seconds(), time.monotonic()
    try:
        for i in range(args.warmup):
            name, pcm, end_s = questions[i % len(questions)]
            await spoken_turn(url, pcm, end_s, args.api_key, args.chunk_ms, args.timeout)
        for i in range(args.turns):
            name, pcm, end_s = questions[i % len(questions)]
            turn_busy, turn_t = busy_cpu_seconds(), time.monotonic()
            try:
                r = await spoken_turn(url, pcm, end_s, args.api_key, args.chunk_ms, args.timeout)
            except CallError as exc:
                failures.append(f"{name}: {exc.message}")
                continue
            status = str((r.response or {}).get("status"))
            statuses[status] = statuses.get(status, 0) + 1
            if status not in ("completed", "incomplete"):  # incomplete: cut at the server's token cap
                failures.append(f"{name}: response {status}")
            for etype, label in CLIENT_MARKS:
                v = r.after_speech_ms(etype)
                if v is not None:
                    client[label].append(v)
            gap = _between(r, "input_audio_buffer.speech_stopped", "response.audio.delta")
            if gap is not None:
                extra["speech_stopped -> first audio delta"].append(gap)
            ev = r.speech_stopped_event_ms()
            if ev is not None:
                extra["speech_stopped event latency (append -> event)"].append(ev)
            for stage, ms in (r.metrics or {}).items():
                if stage == "speech_end":
                    continue
                server_stages.setdefault(stage, []).append(float(ms))
            if r.metrics and "eot_decision" in r.metrics and "first_audio_sent" in r.metrics:
                server_stages.setdefault("eot_decision -> first_audio_sent", []).append(
                    float(r.metrics["first_audio_sent"]) - float(r.metrics["eot_decision"]))
            transcripts.append((name, r.user_transcript, r.agent_transcript.strip()))
            details.append({"question": name, "status": status, "server_ms": r.metrics,
                            "client_ms": {label: _round(r.after_speech_ms(etype)) for etype, label in CLIENT_MARKS},
                            "busy_cores": round((busy_cpu_seconds() - turn_busy) / (time.monotonic() - turn_t), 2),
                            "user": r.user_transcript, "agent": r.agent_transcript.strip()})
            if args.verbose:
                first_audio = _round(r.after_speech_ms("response.audio.delta"))
                print(f"turn {i + 1}/{args.turns} {name}: first audio {first_audio} ms, machine busy "
                      f"{details[-1]['busy_cores']} cores, server {r.metrics}, "
                      f"user={r.user_transcript!r} agent={r.agent_transcript.strip()[:80]!r}", file=sys.stderr)
        manual: dict[str, list[float]] = {}
        if args.engines == "scripted" or args.manual_turns:
            n_manual = args.manual_turns if args.manual_turns is not None else args.turns
            name, pcm, _ = questions[0]
            for _ in range(args.warmup):
                await manual_turn(url, pcm, args.api_key, args.timeout)
            for _ in range(n_manual):
                try:
                    r = await manual_turn(url, pcm, args.api_key, args.timeout)
                except CallError as exc:
                    failures.append(f"manual: {exc.message}")
                    continue
                for etype in ("input_audio_buffer.committed", "response.created", "response.audio.delta",
                              "response.done"):
                    v = r.after_commit_ms(etype)
                    if v is not None:
                        manual.setdefault(f"commit -> {etype}", []).append(v)
    finally:
        if server is not None:
            server.stop()
    report["machine_busy_cores"] = round((busy_cpu_seconds() - busy0) / (time.monotonic() - wall0), 2)
    report["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report["turns"] = args.turns
    report["warmup_turns"] = args.warmup
    report["failures"] = failures
    report["response_status"] = statuses
    report["client_after_speech_end_ms"] = {k: percentiles(v) for k, v in client.items()}
    report["client_extra_ms"] = {k: percentiles(v) for k, v in extra.items()}
    order = [s for s in SERVER_STAGES if s in server_stages] + [s for s in server_stages
                                                                 if s not in SERVER_STAGES]
    report["server_stages_ms"] = {k: percentiles(server_stages[k]) for k in order}
    report["manual_turns_ms"] = {k: percentiles(v) for k, v in manual.items()}
    report["sample_transcripts"] = transcripts[: len(questions)]
    report["turn_details"] = details
    return report


def print_report(rep: dict[str, Any]) -> None:
    m = rep["machine"]
    print(f"machine: {m['nproc']} x {m['cpu']}, {m['ram_gb']} GiB, Python {m['python']}, "
          f"load {m['loadavg_1m_at_start']} at start, {rep['loadavg_1m_at_end']} at end; machine busy "
          f"{rep['machine_busy_cores']} of {m['nproc']} cores on average (all processes, this run included)")
    print(f"engines: {rep['engines']}  url: {rep['url']}  appends: {rep['chunk_ms']} ms  "
          f"turns: {rep['turns']} (+{rep['warmup_turns']} warm-up)  questions: {', '.join(rep['questions'])}")
    print(f"response status: {rep['response_status']}")
    print("client, after the end of the user's speech:")
    print(header())
    for label, st in rep["client_after_speech_end_ms"].items():
        print(fmt_row(label, st))
    for label, st in rep["client_extra_ms"].items():
        print(fmt_row(label, st))
    if rep["server_stages_ms"]:
        print("server (livevox.turn.metrics), after the server's end of speech:")
        print(header())
        for label, st in rep["server_stages_ms"].items():
            print(fmt_row(label, st))
    if rep["manual_turns_ms"]:
        print("manual turns (turn_detection null), after the client's commit:")
        print(header())
        for label, st in rep["manual_turns_ms"].items():
            print(fmt_row(label, st))
    for name, user, agent in rep["sample_transcripts"]:
        print(f"  {name}: user={user!r} agent={agent[:100]!r}")
    if rep["failures"]:
        print(f"failures ({len(rep['failures'])}):")
        for f in rep["failures"][:20]:
            print(f"  {f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", choices=["embedded", "scripted"], default="embedded")
    p.add_argument("--url", default=None, help="benchmark a running server instead of starting one "
                   "(full realtime URL, e.g. ws://127.0.0.1:8000/voice-live/realtime?api-version=2026-07-15)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--server", choices=["process", "thread"], default="process",
                   help="own server as a subprocess (default) or the tests' in-process thread harness")
    p.add_argument("--server-env", action="append", default=[], metavar="LIVEVOX_X=VALUE",
                   help="extra environment for the server process (repeatable), e.g. LIVEVOX_LLM__THREADS=1")
    p.add_argument("--wav", action="append", default=None, help="question WAV (repeatable); "
                   "default tests/fixtures/question_*.wav")
    p.add_argument("--turns", type=int, default=20, help="measured spoken turns (questions cycle)")
    p.add_argument("--manual-turns", type=int, default=None,
                   help="measured manual turns (default: --turns with scripted engines, else 0)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up turns of each kind")
    p.add_argument("--chunk-ms", type=int, default=20, help="audio per append (20-40)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per turn")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to this long for the machine to be idle (< 0.3 cores busy)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.turns < 1 or args.turns > 10000:
        p.error("--turns must be 1..10000")
    if any("=" not in kv for kv in args.server_env):
        p.error("--server-env takes NAME=VALUE")
    rep = asyncio.run(run(args))
    print_report(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2))
    return 1 if rep["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
