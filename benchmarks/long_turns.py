"""Long turns: how soon a monologue's transcript is ready, and how right it is, per `stt.piece_s`.

    python benchmarks/long_turns.py                                   # piece_s off and the default
    python benchmarks/long_turns.py --mode off:LIVEVOX_STT__PIECE_S=0 --mode p10:LIVEVOX_STT__PIECE_S=10
    python benchmarks/long_turns.py --lengths 20,40 --voice piper-joe --json artifacts/long_turns.json
    python benchmarks/long_turns.py --respond --lengths 35 --mode off:LIVEVOX_LLM__PREFILL_PIECES=false --mode on:

A monologue is the prompts of benchmarks/speech_set.py said one after another in one voice,
each cut to its speech (`speech_bounds`) and followed by `--gap-ms` of silence (300: shorter than
server_vad's 500 ms window, so the monologue stays one turn), until it lasts the length asked
for. Each is streamed at real-time pace to a fresh session of a real server (embedded default
engines, `create_response: false`) as in benchmarks/transcripts.py, which measures end of speech
-> `conversation.item.input_audio_transcription.completed`. Per mode and length: word errors and
WER of the reported transcript against the text said, and p50 / max of end of speech ->
transcript. (No full-buffer reference here: a turn over 30 s transcribed whole is the very thing
measured, the `off` mode.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speech_set
import transcripts
from latency import ServerProcess, machine, percentiles, wait_quiet
from livevox.client.call import RATE, CallError, load_wav, speech_bounds, write_wav

DEFAULT_VOICES = ["piper-joe", "espeak-en-us+f3-170", "espeak-en-gb-150"]


def monologue(utts: list[speech_set.Utterance], seconds: float, gap_ms: int, offset: int,
              out: Path) -> speech_set.Utterance:
    """One voice's prompts in turn (starting at `offset`), `gap_ms` apart, until `seconds` long."""
    pieces = [np.zeros(int(speech_set.LEAD_S * RATE), np.int16)]
    texts: list[str] = []
    total = 0
    i = offset
    while total < seconds * RATE:
        utt = utts[i % len(utts)]
        pcm = load_wav(utt.path)
        bounds = speech_bounds(pcm)
        assert bounds is not None, utt.path
        speech = pcm[int(bounds[0] * RATE): int(bounds[1] * RATE)]
        pieces += [speech, np.zeros(gap_ms * RATE // 1000, np.int16)]
        texts.append(utt.text)
        total += speech.size + gap_ms * RATE // 1000
        i += 1
    voice = utts[0].voice
    path = out / f"{voice}-{seconds:g}s-{offset}.wav"
    write_wav(path, np.concatenate(pieces[:-1]))
    return speech_set.Utterance(voice, f"{seconds:g}s", " ".join(texts), str(path))


async def one_turn(base: str, utt: speech_set.Utterance, timeout: float, respond: bool = False) -> dict[str, Any]:
    """One monologue through a fresh session: its reported transcript, word errors and end of
    speech -> transcript (ms); answered (`respond`), also end of speech -> first audio and the
    server's transcript -> first LLM token (the latency event)."""
    row: dict[str, Any] = {"voice": utt.voice, "length": utt.prompt, "text": utt.text, "reported": None,
                           "errors": None, "ms": None, "audio_ms": None, "llm_wait_ms": None, "failure": None}
    path = transcripts.VL_PATH + ("&livevox-latency-events=1" if respond else "")
    try:
        result, reported, _ = await transcripts.spoken_transcript(
            base, path, load_wav(utt.path), {"type": "server_vad"}, respond=respond, timeout=timeout)
    except CallError as exc:
        row["failure"] = exc.message
        return row
    row["reported"] = reported or ""
    row["errors"] = transcripts.word_errors(utt.text, row["reported"])
    ms = result.after_speech_ms(transcripts.TRANSCRIBED)
    row["ms"] = None if ms is None else round(ms, 1)
    audio = result.after_speech_ms("response.audio.delta")
    row["audio_ms"] = None if audio is None else round(audio, 1)
    marks = result.metrics or {}
    if "llm_first_token" in marks and "transcript_final" in marks:
        row["llm_wait_ms"] = round(marks["llm_first_token"] - marks["transcript_final"], 1)
    return row


def p50(values: list[float]) -> float | int | None:
    return percentiles(values, (50,))["p50"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    utts = speech_set.build(args.out, args.voice, None)
    mono_dir = args.out / "long_turns"
    mono_dir.mkdir(exist_ok=True)
    monologues = [monologue([u for u in utts if u.voice == v], s, args.gap_ms, k, mono_dir)
                  for v in args.voice for s in args.lengths for k in range(args.each)]
    modes = [m.split(":", 1) if ":" in m else [m, ""] for m in args.mode]
    report: dict[str, Any] = {"machine": machine(), "modes": args.mode, "lengths_s": args.lengths,
                              "voices": args.voice, "gap_ms": args.gap_ms}
    if args.wait_quiet > 0:
        report["busy_cores_before"] = wait_quiet(args.wait_quiet)
    rows: list[dict[str, Any]] = []
    turns: dict[str, list[dict[str, Any]]] = {}
    for label, env_spec in modes:
        env = dict(kv.split("=", 1) for kv in env_spec.split(",") if kv)
        server = ServerProcess("embedded", env=env).start()
        try:
            await transcripts.measure(server.ws, utts[0], {"type": "server_vad"})  # warm-up, not counted
            by_len: dict[float, list[dict[str, Any]]] = {}
            for seconds in args.lengths:
                for utt in (m for m in monologues if m.prompt == f"{seconds:g}s"):
                    turn = await one_turn(server.ws, utt, args.timeout, args.respond)
                    by_len.setdefault(seconds, []).append(turn)
                    if args.verbose:
                        print(f"{label} {utt.voice} {seconds:g}s: {turn['ms']} ms, {turn['errors']} errors "
                              f"{turn['failure'] or ''}\n  {turn['reported']!r}", file=sys.stderr)
        finally:
            server.stop()
        for seconds, ts in by_len.items():
            ok = [t for t in ts if t["reported"] is not None]
            lat = [t["ms"] for t in ok if t["ms"] is not None]
            rows.append({"mode": label, "length_s": seconds, "n": len(ok), "failed": len(ts) - len(ok),
                         "errors": sum(t["errors"] for t in ok),
                         "wer": round(transcripts.wer([t["text"] for t in ok], [t["reported"] for t in ok]), 1),
                         "p50_ms": p50(lat), "max_ms": max(lat) if lat else None,
                         "audio_p50_ms": p50([t["audio_ms"] for t in ok if t["audio_ms"] is not None]),
                         "llm_wait_p50_ms": p50([t["llm_wait_ms"] for t in ok if t["llm_wait_ms"] is not None])})
        turns[label] = [t for ts in by_len.values() for t in ts]
    report["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report["rows"] = rows
    report["turns"] = turns
    answered = " first audio p50 ms | transcript → first token p50 ms |" if args.respond else ""
    lines = ["| mode | length | n | word errors | WER % | end of speech → transcript p50 / max ms |" + answered,
             "|---|---|---|---|---|---|" + ("---|---|" if args.respond else "")]
    for r in rows:
        fail = f" ({r['failed']} failed)" if r["failed"] else ""
        extra = f" {r['audio_p50_ms']} | {r['llm_wait_p50_ms']} |" if args.respond else ""
        lines.append(f"| {r['mode']} | {r['length_s']:g} s | {r['n']}{fail} | {r['errors']} | {r['wer']} | "
                     f"{r['p50_ms']} / {r['max_ms']} |" + extra)
    report["table"] = "\n".join(lines)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=speech_set.ROOT / "artifacts" / "speech_set",
                   help="speech set cache (benchmarks/speech_set.py)")
    p.add_argument("--voice", action="append", default=None, help=f"default: {', '.join(DEFAULT_VOICES)}")
    p.add_argument("--lengths", type=lambda s: [float(x) for x in s.split(",") if x], default=[15.0, 25.0, 40.0, 60.0])
    p.add_argument("--each", type=int, default=1, help="monologues per voice and length (other prompts first)")
    p.add_argument("--gap-ms", type=int, default=300)
    p.add_argument("--mode", action="append", default=[], metavar="LABEL:ENV=VALUE[,ENV=VALUE]")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per turn")
    p.add_argument("--respond", action="store_true",
                   help="answer each monologue: also end of speech -> first audio, and the server's "
                        "transcript -> first LLM token (llm.prefill_pieces)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.voice = args.voice or DEFAULT_VOICES
    args.mode = args.mode or ["off:LIVEVOX_STT__PIECE_S=0", "default:"]
    transcripts.report(asyncio.run(run(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
