"""First turn after start: is it as fast as a warm one? And how long from start to ready?

    python benchmarks/first_turn.py                  # 5 fresh starts per transport, 3 warm turns each
    python benchmarks/first_turn.py --starts 2 --warm 2 --json out.json

For each transport (WebSocket, WebRTC) and each of `--starts` fresh servers (`python -m livevox
serve`, embedded models, 127.0.0.1): the time from process start to `/readyz` 200, then the same
question (tests/fixtures/question_capital.wav, greedy decoding) `1 + --warm` times, one fresh
session each. Latency is what the caller waits: end of speech -> first audible agent audio
(WebSocket: the `response.audio.delta` carrying it; WebRTC: its RTP packet), measured by the turn
drivers of `webrtc_bench.py`. Reported per transport: each start's first turn, the warm turns'
p50, and first / warm p50 (target: within 15 %), with the server's own speech_end ->
first_audio_sent beside them, and `/readyz`'s warm-up report of the first start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webrtc_bench import FIXTURES, ServerProcess, load_wav, trim_speech, webrtc_turn, websocket_turn

QUESTION = "question_capital.wav"
TARGET = 1.15


async def one_start(transport: str, turns: int, speech48: np.ndarray, speech24: np.ndarray) -> dict[str, Any]:
    t0 = time.monotonic()
    server = ServerProcess("embedded")
    try:
        await asyncio.to_thread(server.wait_ready)
        ready_s = time.monotonic() - t0
        async with httpx.AsyncClient() as http:
            readyz = (await http.get(server.http + "/readyz", timeout=5)).json()
        client: list[float] = []
        srv: list[float] = []
        for _ in range(turns):
            if transport == "webrtc":
                rtp, _decoded, server_ms = await webrtc_turn(server.http, speech48)
                client.append(rtp)
            else:
                ws_ms, server_ms = await websocket_turn(server.http, speech24)
                client.append(ws_ms)
            srv.append(server_ms)
        return {"ready_s": round(ready_s, 2), "client_ms": [round(v) for v in client],
                "server_ms": [round(v) for v in srv if v == v], "readyz": readyz}
    finally:
        server.stop()


def summarise(starts: list[dict[str, Any]]) -> dict[str, Any]:
    first = [s["client_ms"][0] for s in starts]
    warm = [v for s in starts for v in s["client_ms"][1:]]
    srv_first = [s["server_ms"][0] for s in starts if s["server_ms"]]
    srv_warm = [v for s in starts for v in s["server_ms"][1:]]
    warm_p50 = statistics.median(warm) if warm else float("nan")
    return {
        "ready_s": [s["ready_s"] for s in starts],
        "first_ms": first,
        "warm_p50_ms": round(warm_p50),
        "first_over_warm_p50": [round(f / warm_p50, 2) for f in first],
        # Each first turn against its own start's warm turns: robust to load that changes
        # between starts on a shared machine.
        "first_over_own_warm": [round(s["client_ms"][0] / statistics.median(s["client_ms"][1:]), 2) for s in starts],
        "within_target": sum(f <= TARGET * warm_p50 for f in first),
        "server_first_ms": srv_first,
        "server_warm_p50_ms": round(statistics.median(srv_warm)) if srv_warm else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech48 = trim_speech(load_wav(FIXTURES / QUESTION, 48000))
    speech24 = soxr.resample(speech48, 48000, 24000).astype(np.int16)
    report: dict[str, Any] = {"nproc": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
                              "question": QUESTION, "starts": args.starts, "warm_turns": args.warm}
    for transport in ("websocket", "webrtc"):
        starts = []
        for i in range(args.starts):
            s = await one_start(transport, 1 + args.warm, speech48, speech24)
            print(f"  {transport} start {i + 1}: ready {s['ready_s']} s, turns {s['client_ms']} ms "
                  f"(server {s['server_ms']})", flush=True)
            starts.append(s)
        report[transport] = summarise(starts)
        report.setdefault("warmup_report", starts[0]["readyz"].get("warmup"))
        report.setdefault("stage_warm_ms", {k: v.get("warm_ms") for k, v in starts[0]["readyz"]["engines"].items()})
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--starts", type=int, default=5, help="fresh server starts per transport")
    p.add_argument("--warm", type=int, default=3, help="warm turns after the first, per start")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    if args.starts < 1 or args.warm < 1:
        p.error("--starts and --warm must be >= 1")
    rep = asyncio.run(run(args))
    for transport in ("websocket", "webrtc"):
        r = rep[transport]
        print(f"{transport}: start -> ready {r['ready_s']} s; first turn {r['first_ms']} ms vs warm p50 "
              f"{r['warm_p50_ms']} ms (ratios {r['first_over_warm_p50']}; {r['within_target']}/{len(r['first_ms'])} "
              f"within 15 %; against the same start's warm turns {r['first_over_own_warm']}); server first "
              f"{r['server_first_ms']} vs warm p50 {r['server_warm_p50_ms']} ms")
    print(f"load average {rep['loadavg_at_start']} at start, {rep['loadavg_at_end']} at end ({rep['nproc']} cores)")
    print(f"stage warm-up ms: {rep['stage_warm_ms']}")
    print(f"rehearsal: {json.dumps(rep['warmup_report'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
