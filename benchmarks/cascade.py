"""livevox against a naive serial cascade of the same engines, in the same run.

    python benchmarks/cascade.py --rounds 3              # WebSocket and WebRTC, server_vad and azure_semantic_vad
    python benchmarks/cascade.py --rounds 5 --transports ws --json artifacts/cascade.json

Absolute times depend on the host, so issue 10 sets its targets as ratios to a baseline measured
in the same run:

- **Serial cascade** (in this process, after the server has stopped, so nothing else runs): the
  same embedded engines, built from the same default settings. It waits for the silence window,
  then transcribes the whole utterance, streams the LLM until the first clause (livevox's own
  clause splitter and first-clause rule), and synthesizes that clause until its first audio. Its
  time after the window is STT + LLM to the first clause + TTS to the first audio.
- **livevox** (the real server in its own process, real clients on loopback): the same questions
  spoken in real time, over WebSocket and over WebRTC (aiortc client, Voice Live door). The
  end-of-turn decision is when `input_audio_buffer.speech_stopped` reaches the client; first
  audio is the first `response.audio.delta` (WebSocket) or the first audible RTP packet (WebRTC).

Targets: decision -> first audio p50 <= 35 % of the cascade's p50 (each transport), and with
`azure_semantic_vad` end of speech -> first audio p50 <= 60 % of `server_vad` (500 ms).
Both sides decode greedily (temperature 0), so they give the same answers.
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

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import FIXTURES, ServerProcess, machine, percentiles, wait_quiet, write_report
from livevox.client.call import RealtimeCall, TurnResult, load_wav, speech_bounds
from livevox.client.webrtc import WebRTCCall
from livevox.engines.base import ChatRequest, SynthesisOptions, TextDelta, TranscribeOptions
from livevox.engines.registry import build_engines
from livevox.realtime.clauses import ClauseSplitter
from livevox.settings import load_settings

RATE = 24000
WINDOW_S = 0.5  # server_vad's silence_duration_ms, the cascade's wait
SESSION = {"temperature": 0.0, "max_response_output_tokens": 60}
MODES = {
    "server_vad": {"type": "server_vad", "silence_duration_ms": 500},
    "azure_semantic_vad": {"type": "azure_semantic_vad"},
}


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000.0


async def livevox_turn(server: ServerProcess, transport: str, mode: str, pcm: np.ndarray,
                       speech_end_s: float) -> dict[str, Any]:
    url = f"{server.ws}/voice-live/realtime?api-version=2026-01-01-preview&model=gpt-realtime"
    call: RealtimeCall = (await WebRTCCall.open_rtc(url) if transport == "webrtc"
                          else await RealtimeCall.open(url))
    try:
        await call.configure(MODES[mode])
        await call.send({"type": "session.update", "session": SESSION})
        while (await call.next_event(10))["type"] != "session.updated":
            pass
        r: TurnResult = await call.spoken_turn(pcm, speech_end_s=speech_end_s, timeout=60)
    finally:
        await call.close()
    decision = r.first.get("input_audio_buffer.speech_stopped")
    audio = r.first.get("response.audio.delta")
    m = r.metrics or {}
    server_after = (m["first_audio_sent"] - m["eot_decision"]
                    if "first_audio_sent" in m and "eot_decision" in m else None)
    return {"transport": transport, "mode": mode, "decision_to_audio_ms": _ms(decision, audio),
            "speech_end_to_audio_ms": r.after_speech_ms("response.audio.delta"),
            "speech_end_to_decision_ms": r.after_speech_ms("input_audio_buffer.speech_stopped"),
            "server_decision_to_audio_sent_ms": server_after, "user": r.user_transcript,
            "agent": r.agent_transcript[:80], "errors": r.errors,
            "server_stages_ms": {k: round(v, 1) for k, v in m.items()},
            "server_jobs_ms": next((e.get("jobs") for _, e in r.events if e.get("type") == "livevox.turn.metrics"),
                                   None)}


async def cascade_turn(engines: Any, instructions: str, first_max_words: int, pcm: np.ndarray,
                       speech_end_s: float) -> dict[str, Any]:
    """The serial cascade after the silence window: STT, LLM to the first clause, TTS to first audio."""
    audio = pcm[: int((speech_end_s + WINDOW_S) * RATE)]
    f32 = soxr.resample(audio.astype(np.float32) / 32768.0, RATE, 16000)
    t0 = time.monotonic()
    text = "".join([p async for p in engines.stt.transcribe(f32, TranscribeOptions(language="en"), "cascade")])
    t1 = time.monotonic()
    splitter = ClauseSplitter(first_max_words=first_max_words)
    request = ChatRequest(messages=[{"role": "system", "content": instructions},
                                    {"role": "user", "content": text.strip()}],
                          temperature=0.0, max_tokens=SESSION["max_response_output_tokens"])
    clause = ""
    stream = engines.llm.stream(request, "cascade")
    async for ev in stream:
        if isinstance(ev, TextDelta):
            clauses = splitter.push(ev.text)
            if clauses:
                clause = clauses[0]
                break
    await stream.aclose()
    clause = clause or " ".join(splitter.flush())
    t2 = time.monotonic()
    synth = engines.tts.synthesize(clause, SynthesisOptions(), "cascade")
    async for chunk in synth:
        if chunk.size:
            break
    await synth.aclose()
    t3 = time.monotonic()
    return {"stt_ms": (t1 - t0) * 1000, "llm_first_clause_ms": (t2 - t1) * 1000, "tts_first_audio_ms": (t3 - t2) * 1000,
            "after_window_ms": (t3 - t0) * 1000, "user": text.strip(), "clause": clause}


def _p(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return percentiles([r[key] for r in rows if r.get(key) is not None], (50, 90))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wavs = [Path(w) for w in args.wav] if args.wav else sorted(FIXTURES.glob("question_*.wav"))
    qs = []
    for w in wavs:
        pcm = load_wav(w)
        bounds = speech_bounds(pcm)
        qs.append((w.name, pcm, bounds[1] if bounds else pcm.size / RATE))
    info = machine()
    info["busy_cores_before"] = wait_quiet(args.wait_quiet)
    rows: list[dict[str, Any]] = []
    env = dict(kv.split("=", 1) for kv in args.env)
    server = ServerProcess("embedded", env).start()
    try:
        # Warm-up: one turn per transport, not counted.
        for transport in args.transports:
            await livevox_turn(server, transport, "server_vad", qs[0][1], qs[0][2])
        for rnd in range(args.rounds):
            for name, pcm, end_s in qs:
                for transport in args.transports:
                    for mode in args.modes:
                        row = await livevox_turn(server, transport, mode, pcm, end_s)
                        row.update(question=name, round=rnd)
                        rows.append(row)
                        if args.verbose:
                            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    os.environ.update(env)  # the cascade reads the server's settings the way the server did
    settings = load_settings()
    engines = await build_engines(settings)
    cascade: list[dict[str, Any]] = []
    try:
        await cascade_turn(engines, settings.llm.default_instructions, settings.tts.first_clause_max_words,
                           qs[0][1], qs[0][2])
        for rnd in range(args.rounds):
            for name, pcm, end_s in qs:
                c = await cascade_turn(engines, settings.llm.default_instructions,
                                       settings.tts.first_clause_max_words, pcm, end_s)
                c.update(question=name, round=rnd)
                cascade.append(c)
                if args.verbose:
                    print(json.dumps(c), flush=True)
    finally:
        await engines.close()
    info["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    base = statistics.median(c["after_window_ms"] for c in cascade)
    summary: dict[str, Any] = {"cascade": {k: percentiles([c[k] for c in cascade], (50, 90))
                                           for k in ("stt_ms", "llm_first_clause_ms", "tts_first_audio_ms",
                                                     "after_window_ms")}}
    for transport in args.transports:
        for mode in args.modes:
            sel = [r for r in rows if r["transport"] == transport and r["mode"] == mode]
            s = {k: _p(sel, k) for k in ("decision_to_audio_ms", "speech_end_to_audio_ms",
                                         "speech_end_to_decision_ms", "server_decision_to_audio_sent_ms")}
            p50 = s["decision_to_audio_ms"]["p50"]
            s["ratio_to_cascade"] = None if p50 is None else round(p50 / base, 3)
            s["failed"] = sum(1 for r in sel if r["decision_to_audio_ms"] is None)
            summary[f"{transport}/{mode}"] = s
    for transport in args.transports:
        sem = summary.get(f"{transport}/azure_semantic_vad", {}).get("speech_end_to_audio_ms", {}).get("p50")
        srv = summary.get(f"{transport}/server_vad", {}).get("speech_end_to_audio_ms", {}).get("p50")
        if sem is not None and srv:
            summary[f"{transport}/semantic_over_server_vad"] = round(sem / srv, 3)
    return {"machine": info, "summary": summary, "turns": rows, "cascade_turns": cascade}


def print_report(rep: dict[str, Any]) -> None:
    m, s = rep["machine"], rep["summary"]
    print(f"machine: {m['nproc']} x {m['cpu']}, load {m['loadavg_1m_at_start']} -> {m['loadavg_1m_at_end']}, "
          f"busy before {m['busy_cores_before']} cores")
    c = s["cascade"]
    print("serial cascade after the window (ms): " + ", ".join(
        f"{k} p50 {v['p50']} p90 {v['p90']}" for k, v in c.items()))
    for key, v in s.items():
        if key == "cascade" or not isinstance(v, dict):
            continue
        print(f"{key}: decision->audio p50 {v['decision_to_audio_ms']['p50']} p90 {v['decision_to_audio_ms']['p90']} "
              f"(ratio to cascade {v['ratio_to_cascade']}); end of speech->audio p50 "
              f"{v['speech_end_to_audio_ms']['p50']} p90 {v['speech_end_to_audio_ms']['p90']}; "
              f"end of speech->decision p50 {v['speech_end_to_decision_ms']['p50']}; "
              f"server decision->audio sent p50 {v['server_decision_to_audio_sent_ms']['p50']}; failed {v['failed']}")
    for key, v in s.items():
        if key.endswith("semantic_over_server_vad"):
            print(f"{key}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wav", action="append", default=[])
    ap.add_argument("--transports", type=lambda v: v.split(","), default=["ws", "webrtc"])
    ap.add_argument("--modes", type=lambda v: v.split(","), default=list(MODES))
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="server settings as environment (repeatable), applied to the cascade too")
    ap.add_argument("--wait-quiet", type=float, default=120)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    rep = asyncio.run(run(args))
    print_report(rep)
    write_report(args.json, rep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
