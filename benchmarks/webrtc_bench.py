"""WebRTC benchmark: answer latency over WebRTC vs WebSocket, and WebRTC call capacity.

    python benchmarks/webrtc_bench.py                   # both parts
    python benchmarks/webrtc_bench.py --part latency --reps 3
    python benchmarks/webrtc_bench.py --part capacity --levels 25,50,75,100 --hold 10

The server runs as a separate process (`python -m livevox serve`) on 127.0.0.1, so its CPU is
measured on its own and the clients do not share its interpreter.

Latency (embedded models: Silero, Whisper tiny.en, SmolLM2, Piper): the same spoken questions
(tests/fixtures/question_*.wav, espeak-ng) over the Voice Live WebRTC door and over the Voice Live
WebSocket, one fresh session per question, audio streamed in real time (20 ms frames) by both
clients. Measured at the client: from the moment the last sample of speech left the client to the
first received agent audio (a 20 ms window with RMS > 200) - for WebRTC when its RTP packet
arrived (and, for reference, when aiortc's 80 ms jitter buffer released it), for WebSocket when
the `response.audio.delta` carrying it arrived.

Capacity (scripted instant engines): WebRTC calls are added in steps; every client speaks a 0.8 s
tone every 6 s (so answers stream too). Each step holds for `--hold` seconds and reads the
server's own metrics: outbound frame-interval jitter (|interval - 20 ms|, histogram), media-clock
resets (late frames that would have been skipped), frames sent vs expected, and the server
process's CPU. Clients count RTP sequence gaps (drops). A step passes when p99 jitter < 10 ms,
no clock reset, no lost packet and >= 99.5 % of the expected frames were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fractions
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import av
import httpx
import numpy as np
import psutil
import soxr
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from rtcclient import FIXTURES, VL_CALLS, MicTrack, PacedAudioTrack, RtcClient, load_wav, silence  # noqa: E402

QUESTIONS = ("question_capital.wav", "question_weather.wav", "question_story.wav")
AUDIBLE_RMS = 200.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the benchmark process dies (Linux)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerProcess:
    def __init__(self, engines: str) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env["LIVEVOX_WEBRTC__HOST_ADDRESSES"] = '["127.0.0.1"]'
        if engines == "scripted":
            for stage in ("VAD", "STT", "LLM", "TTS"):
                env[f"LIVEVOX_{stage}__ENGINE"] = "scripted"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livevox", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], env=env, cwd=ROOT, preexec_fn=_die_with_parent)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError("server not ready")

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _process_times(exclude: set[int]) -> dict[int, float]:
    times: dict[int, float] = {}
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            times[proc.pid] = t.user + t.system
    return times


class OtherProcesses:
    """CPU used by every process but the benchmark's own (the machine is shared)."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self._start = _process_times(exclude)
        self._t0 = time.monotonic()

    def cores(self) -> float:
        """Cores used by the others since construction (1.0 = one full core)."""
        now = _process_times(self.exclude)
        used = sum(t - self._start.get(pid, 0.0) for pid, t in now.items())
        return used / max(1e-6, time.monotonic() - self._t0)


async def wait_quiet(max_wait: float, exclude: set[int] | None = None, threshold: float = 0.15) -> float:
    """Wait (up to `max_wait` s) until other processes use less than `threshold` of one core over
    3 s. Returns the last reading (in cores)."""
    ours = {os.getpid(), *(exclude or set())}
    deadline = time.monotonic() + max_wait
    while True:
        probe = OtherProcesses(ours)
        await asyncio.sleep(3)
        load = probe.cores()
        if load < threshold or time.monotonic() > deadline:
            return load
        print(f"  (machine busy: {load * 100:.0f} % of a core used by other processes; waiting)", flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def trim_speech(pcm: np.ndarray, threshold: int = 300) -> np.ndarray:
    """The question without its leading/trailing silence (so 'end of speech' is the last word)."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > threshold)[0]
    return pcm[loud[0]:loud[-1] + 1] if loud.size else pcm


# ================================================================ latency


#: Both transports: greedy decoding, so the same question gets the same answer (same first clause,
#: same TTS time) and the difference is the transport's; server-side stage timings are reported.
SESSION = {"temperature": 0.0, "max_response_output_tokens": 60}
LATENCY_EVENTS = "&livevox-latency-events=1"


async def webrtc_turn(base: str, speech48k: np.ndarray) -> tuple[float, float, float]:
    """One question on a fresh call: ms to the first RTP audio, to the first decoded audio, and the
    server's own speech_end -> first_audio_sent."""
    c = RtcClient(base, door="voicelive", mic=MicTrack())
    try:
        await c.connect_ws(VL_CALLS + LATENCY_EVENTS)
        await c.start(session=SESSION)
        await asyncio.sleep(0.3)
        c.mic.say(silence(0.2))
        c.mic.say(speech48k, mark="speech_end")
        end: float | None = None
        for _ in range(1500):  # up to 30 s
            end = c.mic.marks.get("speech_end")
            if end is not None and [f for f in c.frames if f.rms > AUDIBLE_RMS and f.rtp_at > end]:
                break
            await asyncio.sleep(0.02)
        if end is not None:
            await asyncio.sleep(0.2)  # frames decode after their packets arrive
            loud = [f for f in c.frames if f.rms > AUDIBLE_RMS and f.rtp_at > end]
            if loud:
                first = min(loud, key=lambda f: f.rtp_at)
                server_ms = float("nan")
                with contextlib.suppress(TimeoutError):
                    metrics = await c.wait_for("livevox.turn.metrics", timeout=30)
                    server_ms = float(metrics["stages_ms"].get("first_audio_sent", float("nan")))
                return (first.rtp_at - end) * 1000, (first.at - end) * 1000, server_ms
        raise TimeoutError("no agent audio over WebRTC")
    finally:
        await c.close()


async def websocket_turn(base: str, speech24k: np.ndarray) -> tuple[float, float]:
    """One question on a fresh WebSocket session, streamed in real time: ms to the first audible
    `response.audio.delta`, and the server's own speech_end -> first_audio_sent."""
    url = ("ws" + base.removeprefix("http") + "/voice-live/realtime?api-version=2026-01-01-preview"
           "&model=gpt-realtime" + LATENCY_EVENTS)
    async with websockets.connect(url, max_size=None) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
        pcm = np.concatenate([np.zeros(4800, np.int16), speech24k])
        speech_end_sample = pcm.size
        speech_end: list[float] = []
        first_audio: list[float] = []
        server_ms: list[float] = []
        done = asyncio.Event()

        async def reader() -> None:
            async for msg in ws:
                ev = json.loads(msg)
                if ev["type"] == "response.audio.delta" and speech_end and not first_audio:
                    audio = np.frombuffer(base64.b64decode(ev["delta"]), dtype="<i2").astype(np.float64)
                    for i in range(0, max(1, audio.size - 479), 480):
                        if np.sqrt(np.mean(audio[i:i + 480] ** 2)) > AUDIBLE_RMS:
                            first_audio.append(time.monotonic())
                            break
                elif ev["type"] == "livevox.turn.metrics":
                    server_ms.append(float(ev["stages_ms"].get("first_audio_sent", float("nan"))))
                    done.set()
                elif ev["type"] == "error":
                    print(f"  websocket error event: {ev['error']}", flush=True)

        task = asyncio.ensure_future(reader())
        t0 = time.monotonic()
        n = 0
        step = 480  # 20 ms at 24 kHz
        try:
            while not done.is_set() and time.monotonic() - t0 < 60:
                start = n * step
                chunk = pcm[start:start + step] if start < pcm.size else np.zeros(step, np.int16)
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(chunk.astype("<i2").tobytes()).decode()}))
                n += 1
                if not speech_end and n * step >= speech_end_sample:
                    speech_end.append(time.monotonic())
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if not first_audio:
            raise TimeoutError("no agent audio over WebSocket")
        return (first_audio[0] - speech_end[0]) * 1000, server_ms[0] if server_ms else float("nan")


async def latency(reps: int) -> dict[str, Any]:
    server = ServerProcess("embedded")
    try:
        server.wait_ready()
        speech = {q: trim_speech(load_wav(FIXTURES / q, 48000)) for q in QUESTIONS}
        speech24 = {q: soxr.resample(p, 48000, 24000).astype(np.int16) for q, p in speech.items()}
        await webrtc_turn(server.http, speech[QUESTIONS[0]])  # warm-up, not counted
        await websocket_turn(server.http, speech24[QUESTIONS[0]])
        rtp: list[float] = []
        decoded: list[float] = []
        ws: list[float] = []
        srv_rtc: list[float] = []
        srv_ws: list[float] = []
        for rep in range(reps):
            for q in QUESTIONS:
                a, b, sa = await webrtc_turn(server.http, speech[q])
                w, sw = await websocket_turn(server.http, speech24[q])
                rtp.append(a)
                decoded.append(b)
                ws.append(w)
                srv_rtc.append(sa)
                srv_ws.append(sw)
                print(f"  rep {rep} {q:24s} webrtc rtp {a:6.0f} ms (decoded {b:6.0f}, server {sa:6.0f})   "
                      f"websocket {w:6.0f} ms (server {sw:6.0f})", flush=True)

        def summary(values: list[float]) -> dict[str, float]:
            known = [v for v in values if v == v]  # drop NaN (a turn without server metrics)
            if not known:
                return {}
            return {"p50": round(pct(known, 50)), "p95": round(pct(known, 95))}

        result = {
            "turns_per_transport": len(rtp),
            "webrtc_rtp_ms": summary(rtp),
            "webrtc_decoded_ms": summary(decoded),
            "websocket_ms": summary(ws),
            "server_speech_end_to_first_audio_sent_ms": {"webrtc": summary(srv_rtc), "websocket": summary(srv_ws)},
        }
        return result
    finally:
        server.stop()


# ================================================================ capacity


class CheapMic(PacedAudioTrack):
    """A microphone that costs the client almost nothing: pre-encoded Opus packets, paced by a
    media clock; a 0.8 s tone every `period` seconds at a random phase, silence otherwise."""

    _silence: ClassVar[bytes] = b""
    _tone: ClassVar[list[bytes]] = []

    def __init__(self, period: float = 6.0) -> None:
        super().__init__()
        if not CheapMic._tone:
            CheapMic._silence, CheapMic._tone = _encode_opus()
        self.period_frames = int(period / 0.02)
        self.phase = random.randrange(self.period_frames)

    async def recv(self) -> av.Packet[Any]:
        n = await self._tick()
        k = (n + self.phase) % self.period_frames
        data = CheapMic._tone[k] if k < len(CheapMic._tone) else CheapMic._silence
        packet = av.Packet(data)
        packet.pts = n * 960
        packet.time_base = fractions.Fraction(1, 48000)
        return packet


def _encode_opus() -> tuple[bytes, list[bytes]]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.bit_rate = 32000
    ctx.format = "s16"
    ctx.layout = "mono"
    ctx.sample_rate = 48000
    ctx.time_base = fractions.Fraction(1, 48000)
    t = np.arange(48000 * 0.8)
    tone = (np.sin(2 * np.pi * 300 * t / 48000) * 8000).astype(np.int16)
    packets = []
    for i in range(0, tone.size, 960):
        f = av.AudioFrame.from_ndarray(tone[i:i + 960].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = 48000
        f.pts = i
        packets += [bytes(p) for p in ctx.encode(f)]
    f = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
    f.sample_rate = 48000
    f.pts = tone.size
    silent = [bytes(p) for p in ctx.encode(f)]
    return silent[0], packets


class RtpCounter:
    """Replaces the client's RTP receive path: counts packets and sequence gaps, decodes nothing."""

    def __init__(self) -> None:
        self.received = 0
        self.first_seq: int | None = None
        self.last_seq = 0
        self.wraps = 0

    def reset(self) -> None:
        self.received = 0
        self.first_seq = None

    def lost(self) -> int:
        if self.first_seq is None:
            return 0
        expected = self.wraps * 65536 + self.last_seq - self.first_seq + 1
        return max(0, expected - self.received)

    async def handle(self, packet: Any, arrival_time_ms: int) -> None:
        seq = packet.sequence_number
        if self.first_seq is None:
            self.first_seq, self.last_seq, self.wraps = seq, seq, 0
        elif (seq - self.last_seq) % 65536 < 32768:
            if seq < self.last_seq:
                self.wraps += 1
            self.last_seq = seq
        self.received += 1


def _metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^(livevox_webrtc_\w+?)(\{le="([^"]+)"\})? ([0-9.eE+-]+)$', line)
        if m:
            key = m.group(1) + (f"@{m.group(3)}" if m.group(3) else "")
            out[key] = float(m.group(4))
    return out


def _p99_bound(before: dict[str, float], after: dict[str, float]) -> tuple[float, float, int]:
    """(upper bound of p99 jitter in ms, share of intervals over 10 ms, intervals observed)."""
    name = "livevox_webrtc_frame_jitter_seconds_bucket@"
    bounds = sorted(float(k.split("@")[1]) for k in after if k.startswith(name) and k.split("@")[1] != "+Inf")
    total = after.get(name + "+Inf", 0) - before.get(name + "+Inf", 0)
    if total <= 0:
        return float("nan"), float("nan"), 0
    over10 = 1 - (after[f"{name}0.01"] - before.get(f"{name}0.01", 0)) / total
    for b in bounds:
        key = name + repr(b) if name + repr(b) in after else name + str(b)
        if (after[key] - before.get(key, 0)) / total >= 0.99:
            return b * 1000, over10, int(total)
    return float("inf"), over10, int(total)


async def capacity(levels: list[int], hold: float, quiet_wait: float = 300) -> list[dict[str, Any]]:
    server = ServerProcess("scripted")
    me = psutil.Process()
    calls: list[tuple[RtcClient, RtpCounter]] = []
    rows: list[dict[str, Any]] = []
    try:
        server.wait_ready()

        async def add_call() -> None:
            c = RtcClient(server.http, door="voicelive", mic=MicTrack(), keep_audio=False)
            c.mic = CheapMic()
            counter = RtpCounter()
            await c.start()
            c.pc.getReceivers()[0]._handle_rtp_packet = counter.handle
            calls.append((c, counter))

        async with httpx.AsyncClient(base_url=server.http) as http:
            for level in levels:
                while len(calls) < level:
                    await asyncio.gather(*(add_call() for _ in range(min(10, level - len(calls)))))
                for attempt in range(3):
                    await asyncio.sleep(3)
                    before = _metrics((await http.get("/metrics")).text)
                    for _, counter in calls:
                        counter.reset()
                    cpu0, my0 = server.cpu_seconds(), sum(me.cpu_times()[:2])
                    probe, t0 = OtherProcesses({me.pid, server.proc.pid}), time.monotonic()
                    await asyncio.sleep(hold)
                    elapsed = time.monotonic() - t0
                    cpu = (server.cpu_seconds() - cpu0) / elapsed
                    my_cpu = (sum(me.cpu_times()[:2]) - my0) / elapsed
                    others = probe.cores()
                    after = _metrics((await http.get("/metrics")).text)
                    if others < 0.25 or attempt == 2:
                        break
                    print(f"  ({level} calls: other processes used {others * 100:.0f} % of a core; measuring again)",
                          flush=True)
                    await wait_quiet(quiet_wait, exclude={server.proc.pid})
                p99, over10, intervals = _p99_bound(before, after)
                resets = after.get("livevox_webrtc_media_clock_resets_total", 0) - before.get(
                    "livevox_webrtc_media_clock_resets_total", 0)
                sent = after["livevox_webrtc_frames_sent_total"] - before.get("livevox_webrtc_frames_sent_total", 0)
                expected = level * elapsed / 0.02
                lost = sum(counter.lost() for _, counter in calls)
                received = sum(counter.received for _, counter in calls)
                ok = p99 <= 10 and resets == 0 and lost == 0 and sent >= 0.995 * expected
                row = {"calls": level, "other_processes_cpu_pct": round(others * 100, 1),
                       "p99_jitter_ms_le": p99, "share_over_10ms": round(over10, 5),
                       "intervals": intervals, "clock_resets": int(resets),
                       "frames_sent_ratio": round(sent / expected, 4), "rtp_lost": lost, "rtp_received": received,
                       "server_cpu_pct": round(cpu * 100, 1), "cpu_pct_per_call": round(cpu * 100 / level, 2),
                       "client_cpu_pct": round(my_cpu * 100, 1), "pass": ok}
                rows.append(row)
                print("  " + json.dumps(row), flush=True)
                if not ok or cpu > 1.9:
                    break
    finally:
        await asyncio.gather(*(c.close() for c, _ in calls), return_exceptions=True)
        server.stop()
    return rows


# ================================================================ main


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["latency", "capacity", "both"], default="both")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--levels", default="25,50,75,100,125,150")
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--wait-quiet", type=float, default=300.0,
                    help="wait up to this long (s) for other processes to go quiet before measuring")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {psutil.cpu_freq().current if psutil.cpu_freq() else '?'} MHz")
    if args.part in ("latency", "both"):
        print("latency: end of user speech -> first agent audio at the client (embedded models)")
        print(f"  other processes: {await wait_quiet(args.wait_quiet) * 100:.0f} % of a core")
        res = await latency(args.reps)
        print(json.dumps(res, indent=2))
        print(f"RESULT latency webrtc(rtp) p50 {res['webrtc_rtp_ms']['p50']:.0f} ms p95 "
              f"{res['webrtc_rtp_ms']['p95']:.0f} ms | webrtc(decoded) p50 {res['webrtc_decoded_ms']['p50']:.0f} ms "
              f"p95 {res['webrtc_decoded_ms']['p95']:.0f} ms | websocket p50 {res['websocket_ms']['p50']:.0f} ms "
              f"p95 {res['websocket_ms']['p95']:.0f} ms over {res['turns_per_transport']} turns each")
    if args.part in ("capacity", "both"):
        print("capacity: concurrent WebRTC calls, scripted engines")
        print(f"  other processes: {await wait_quiet(args.wait_quiet) * 100:.0f} % of a core")
        rows = await capacity([int(x) for x in args.levels.split(",")], args.hold, args.wait_quiet)
        best = max((r for r in rows if r["pass"]), key=lambda r: r["calls"], default=None)
        if best is None:
            print("RESULT capacity: no level passed")
        else:
            print(f"RESULT capacity: {best['calls']} concurrent calls with p99 frame jitter <= "
                  f"{best['p99_jitter_ms_le']} ms, no drops; server CPU {best['server_cpu_pct']} % "
                  f"({best['cpu_pct_per_call']} % of a core per call)")


if __name__ == "__main__":
    asyncio.run(main())
