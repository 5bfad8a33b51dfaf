"""`livevox call`: one spoken turn against a server, over WebSocket or WebRTC, and its report.
Exit codes and options: `client/call.py`'s module docstring."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TextIO

from .call import (
    CLIENT_MARKS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RATE,
    SERVER_STAGES,
    CallError,
    RealtimeCall,
    TurnResult,
    load_wav,
    speech_bounds,
    write_wav,
)
from .webrtc import WebRTCCall, ice_servers


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:7.0f} ms"


def report(result: TurnResult, out: TextIO, *, wav: str, speech: tuple[float, float] | None, seconds: float,
           chunk_ms: int, saved: str | None, webrtc_door: str | None = None) -> None:
    def p(line: str = "") -> None:
        print(line, file=out)

    span = f"speech {speech[0]:.2f}-{speech[1]:.2f} s" if speech else "no speech found by energy"
    how = (f"as 20 ms Opus RTP frames over WebRTC ({webrtc_door} door)" if webrtc_door
           else f"in {chunk_ms} ms appends")
    p(f"question: {wav}: {seconds:.2f} s ({span}), streamed at real-time pace {how}")
    user = result.user_transcript
    p(f"you said:   {user!r}" if user is not None else "you said:   (no input transcription received)")
    p(f"agent said: {result.agent_transcript.strip()!r}")
    answer = result.answer_pcm()
    status = (result.response or {}).get("status", "?")
    where = f", saved to {saved}" if saved else ""
    p(f"answer:     {answer.size / RATE:.2f} s of 24 kHz audio, response {status}{where}")
    p("latency of the turn, after the end of your speech:")
    if webrtc_door:
        p("  (over WebRTC: 'first audio delta' is the first audible RTP packet of the answer)")
    p("  measured by this client")
    for etype, label in CLIENT_MARKS:
        p(f"    {label:<26}{_fmt_ms(result.after_speech_ms(etype))}")
    ev_ms = result.speech_stopped_event_ms() if result.metrics is not None else None  # livevox only
    if ev_ms is not None:
        p(f"    speech_stopped event latency (from the append that closed the silence window): {ev_ms:.1f} ms")
    if result.metrics:
        p("  measured by the server (livevox.turn.metrics)")
        stages = [s for s in SERVER_STAGES if s in result.metrics]
        stages += [s for s in result.metrics if s not in SERVER_STAGES and s != "speech_end"]
        for stage in stages:
            p(f"    {stage:<26}{_fmt_ms(float(result.metrics[stage]))}")
    else:
        p("  (the server sent no livevox.turn.metrics event)")


async def _call(args: argparse.Namespace, out: TextIO) -> int:
    pcm = load_wav(args.wav)
    speech = speech_bounds(pcm)
    chunk_ms = int(getattr(args, "chunk_ms", 20) or 20)
    api_key = args.api_key or os.environ.get("LIVEVOX_API_KEY") or None
    timeout = float(args.timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    door: str | None = None
    call: RealtimeCall
    if getattr(args, "webrtc", False):
        servers = ice_servers(args.ice_server or [], args.ice_username, args.ice_credential)
        rtc = await WebRTCCall.open_rtc(args.url, api_key, door=args.door, ice_servers=servers,
                                        relay_only=args.ice_relay, host_addresses=args.host_address or [],
                                        open_timeout=min(10.0, timeout))
        call, door = rtc, rtc.client.door
    elif getattr(args, "door", None) or getattr(args, "ice_server", None) or getattr(args, "ice_relay", False):
        raise CallError(EXIT_USAGE, "--door, --ice-server and --ice-relay need --webrtc")
    else:
        call = await RealtimeCall.open(args.url, api_key, open_timeout=min(10.0, timeout))
    try:
        await call.configure(timeout=max(0.1, deadline - loop.time()))
        result = await call.spoken_turn(pcm, speech_end_s=speech[1] if speech else None, chunk_ms=chunk_ms,
                                        timeout=max(0.1, deadline - loop.time()))
    finally:
        await call.close()
    answer = result.answer_pcm()
    saved = None
    if args.out:
        try:
            write_wav(args.out, answer)
            saved = str(args.out)
        except OSError as exc:
            raise CallError(EXIT_USAGE, f"cannot write {args.out}: {exc.strerror or exc}") from None
    report(result, out, wav=str(args.wav), speech=speech, seconds=pcm.size / RATE, chunk_ms=chunk_ms,
           saved=saved, webrtc_door=door)
    status = (result.response or {}).get("status")
    if status == "incomplete":  # cut at the output-token cap: a real, if shortened, answer
        print("livevox call: the answer was cut at the server's output-token limit (status incomplete)",
              file=sys.stderr)
    elif status != "completed":
        details = (result.response or {}).get("status_details")
        print(f"livevox call: the response ended {status}: {json.dumps(details)}", file=sys.stderr)
        return EXIT_FAILED
    if answer.size == 0:
        print("livevox call: the answer has no audio", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def run_call(args: argparse.Namespace) -> int:
    """`livevox call`: returns the process exit code (see the module docstring)."""
    try:
        return await _call(args, sys.stdout)
    except CallError as exc:
        print(f"livevox call: {exc.message}", file=sys.stderr)
        return exc.code
