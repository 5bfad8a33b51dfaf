"""Unseen speech: the transcript a turn reports against the transcript of its committed audio.

    python benchmarks/transcripts.py                       # all voices, server_vad + azure_semantic_vad
    python benchmarks/transcripts.py --voice espeak-en-us-150 --prompt capital -v
    python benchmarks/transcripts.py --mode tail0:LIVEVOX_STT__TAIL_MS=0 --mode tail200:LIVEVOX_STT__TAIL_MS=200

Each utterance of benchmarks/speech_set.py (synthetic voices and the human recordings) is one
fresh session on a real server (`python -m livevox serve`, embedded default engines): it is
streamed at real-time pace in 20 ms appends, 24 kHz PCM16, followed by silence, with the
turn detection under test (default `silence_duration_ms`) and `create_response: false` (the
answer does not change what is transcribed; `--respond` keeps it). Per turn it records:

- the reported transcript (`conversation.item.input_audio_transcription.completed`);
- end of speech -> transcript: from the moment the utterance's last speech sample (the last
  10 ms frame within 35 dB of the loudest, `livevox.client.call.speech_bounds`) was sent at
  real-time pace to the arrival of that event (the client's view of `transcript_final`);
- the committed audio, as the server holds it (`conversation.item.retrieve` returns it), and its
  full-buffer transcript: the same server's Whisper engine (same model and decoding options)
  on the whole committed audio, through `POST /v1/audio/transcriptions`.

WER uses a small normaliser (lowercase, punctuation dropped, hyphens split, digits spelled out)
and word-level Levenshtein distance. Per voice: n, WER of the reported and of the full-buffer
transcripts, the turns where the reported one had more errors, and p50/p90 of end of speech ->
transcript. `--mode LABEL:ENV=VALUE[,ENV=VALUE]` (repeatable) runs the whole set once per
server setting (e.g. `stt.tail_ms` as `LIVEVOX_STT__TAIL_MS`); the default is one run, `default`,
with no extra setting. Prints a markdown table; `--json` writes every turn.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import sys
import time
import urllib.request
import uuid
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speech_set
from latency import ServerProcess, machine, wait_quiet
from livevox.client.call import RATE, CallError, RealtimeCall, TurnResult, load_wav, speech_bounds
from livevox.core.audio import speech_tail_end
from livevox.settings import STTSettings

VL_PATH = "/voice-live/realtime?api-version=2026-07-15&model=livevox"
GA_PATH = "/v1/realtime?model=livevox"
TRANSCRIBED = "conversation.item.input_audio_transcription.completed"

# ---------------------------------------------------------------- WER

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell(n: int) -> str:
    """0..999999 in words ("twenty one", "three hundred five"); larger numbers digit by digit."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + spell(n % 100))
    if n < 1_000_000:
        return spell(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + spell(n % 1000))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalise(text: str) -> list[str]:
    text = text.lower().replace("-", " ").replace("mr.", "mister").replace("’", "'")
    text = re.sub(r"\d+", lambda m: f" {spell(int(m.group()))} ", text)
    return re.sub(r"[^a-z' ]+", " ", text).replace(" '", " ").replace("' ", " ").split()


def word_errors(ref: str, hyp: str) -> int:
    """Substitutions + deletions + insertions between the normalised word sequences."""
    r, h = normalise(ref), normalise(hyp)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    words = sum(len(normalise(r)) for r in refs)
    return 100.0 * sum(word_errors(r, h) for r, h in zip(refs, hyps, strict=True)) / max(1, words)


# ---------------------------------------------------------------- one turn


@dataclass
class Turn:
    voice: str
    prompt: str
    text: str
    reported: str | None = None
    full_buffer: str | None = None
    speech_tail: str | None = None  # the committed audio cut at its acoustic end + stt.tail_ms
    speech_end_to_transcript_ms: float | None = None
    speech_end_to_stopped_ms: float | None = None
    server_transcript_final_ms: float | None = None
    committed_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    committed: npt.NDArray[np.int16] | None = field(default=None, repr=False)

    @property
    def worse_than_speech_tail(self) -> bool:
        return word_errors(self.text, self.reported or "") > word_errors(self.text, self.speech_tail or "")

    @property
    def reported_worse(self) -> bool:
        """The reported transcript has more word errors than the committed audio's full-buffer one."""
        return word_errors(self.text, self.reported or "") > word_errors(self.text, self.full_buffer or "")

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("committed")
        return d


async def spoken_transcript(base: str, path: str, pcm: npt.NDArray[np.int16], turn_detection: dict[str, Any],
                            *, respond: bool = False, tail_silence_s: float = 3.0,
                            timeout: float = 60.0) -> tuple[TurnResult, str | None, npt.NDArray[np.int16]]:
    """Stream `pcm` (24 kHz) then silence at real-time pace to a fresh session; return the turn's
    events, the reported transcript and the committed audio (24 kHz, from conversation.item.retrieve)."""
    call = await RealtimeCall.open(base + path)
    try:
        await call.configure({**turn_detection, "create_response": respond})
        bounds = speech_bounds(pcm)
        audio = np.concatenate([pcm, np.zeros(int(tail_silence_s * RATE), np.int16)])
        t0 = time.monotonic()
        result = TurnResult(speech_end=t0 + (bounds[1] if bounds else pcm.size / RATE))
        sender = asyncio.create_task(call.stream_paced(audio, 20, t0, result))
        item_id: str | None = None
        transcript: str | None = None
        deadline = time.monotonic() + timeout
        try:
            while transcript is None or (respond and "response.done" not in result.first):
                t, ev = await call.next_timed(max(0.01, deadline - time.monotonic()))
                result.events.append((t, ev))
                result.first.setdefault(ev["type"], t)
                if ev["type"] == "input_audio_buffer.committed":
                    item_id = ev["item_id"]
                elif ev["type"] == TRANSCRIBED and ev.get("item_id") == item_id:
                    transcript = str(ev.get("transcript") or "").strip()
                elif ev["type"] == "conversation.item.input_audio_transcription.failed":
                    raise CallError(1, f"transcription failed: {ev.get('error')}")
                elif ev["type"] == "error":
                    raise CallError(1, f"server error: {ev.get('error')}")
            if respond:
                await call.record_until(result, lambda: result.metrics is not None, 1.0)
        finally:
            sender.cancel()
        assert item_id is not None
        await call.send({"type": "conversation.item.retrieve", "item_id": item_id})
        while True:
            ev = await call.next_event(max(0.01, deadline - time.monotonic()))
            if ev["type"] == "conversation.item.retrieved" and (ev.get("item") or {}).get("id") == item_id:
                data = ev["item"]["content"][0].get("audio") or ""
                committed = np.frombuffer(base64.b64decode(data), "<i2").astype(np.int16)
                return result, transcript, committed
            if ev["type"] == "error":
                raise CallError(1, f"retrieve failed: {ev.get('error')}")
    finally:
        await call.close()


def _wav_bytes(pcm: npt.NDArray[np.int16], rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def full_buffer_transcript(http: str, pcm: npt.NDArray[np.int16]) -> str:
    """The server's own STT engine on `pcm` (24 kHz), via its OpenAI-compatible endpoint."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"turn.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + _wav_bytes(pcm) + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{http}/v1/audio/transcriptions", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return str(json.loads(r.read())["text"]).strip()


async def measure(base: str, utt: speech_set.Utterance, turn_detection: dict[str, Any], *, path: str = VL_PATH,
                  respond: bool = False, timeout: float = 60.0, tail_ms: int | None = None) -> Turn:
    """One utterance through a fresh session, with its full-buffer transcript."""
    turn = Turn(utt.voice, utt.prompt, utt.text)
    pcm = load_wav(utt.path)
    try:
        result, turn.reported, committed = await spoken_transcript(
            base, path, pcm, turn_detection, respond=respond, timeout=timeout)
    except CallError as exc:
        turn.errors.append(exc.message)
        return turn
    turn.committed = committed
    turn.committed_ms = round(committed.size * 1000 / RATE, 1)
    ms = result.after_speech_ms(TRANSCRIBED)
    turn.speech_end_to_transcript_ms = None if ms is None else round(ms, 1)
    ms = result.after_speech_ms("input_audio_buffer.speech_stopped")
    turn.speech_end_to_stopped_ms = None if ms is None else round(ms, 1)
    if result.metrics and "transcript_final" in result.metrics:
        turn.server_transcript_final_ms = float(result.metrics["transcript_final"])
    http = base.replace("ws://", "http://", 1)
    turn.full_buffer = await asyncio.to_thread(full_buffer_transcript, http, committed)
    if tail_ms is not None:
        cut = speech_tail_end(committed, tail_ms * RATE // 1000, block=RATE // 100)
        turn.speech_tail = await asyncio.to_thread(full_buffer_transcript, http, committed[:cut])
    return turn


# ---------------------------------------------------------------- the run


def _pct(values: list[float], p: int) -> float | None:
    return round(float(np.percentile(values, p)), 1) if values else None


def summarise(turns: list[Turn]) -> dict[str, Any]:
    ok = [t for t in turns if t.reported is not None and t.full_buffer is not None]
    lat = [t.speech_end_to_transcript_ms for t in ok if t.speech_end_to_transcript_ms is not None]
    return {
        "n": len(ok), "failed": len(turns) - len(ok),
        "wer_reported": round(wer([t.text for t in ok], [t.reported or "" for t in ok]), 1) if ok else None,
        "wer_full_buffer": round(wer([t.text for t in ok], [t.full_buffer or "" for t in ok]), 1) if ok else None,
        "reported_worse": sum(t.reported_worse for t in ok),
        "wer_speech_tail": (round(wer([t.text for t in ok], [t.speech_tail or "" for t in ok]), 1)
                            if ok and all(t.speech_tail is not None for t in ok) else None),
        "worse_than_speech_tail": sum(t.worse_than_speech_tail for t in ok if t.speech_tail is not None),
        "p50_ms": _pct(lat, 50), "p90_ms": _pct(lat, 90),
    }


def table(results: dict[str, dict[str, list[Turn]]]) -> str:
    lines = ["| mode | turn detection | voice | n | WER reported % | WER full buffer % | reported worse | "
             "WER speech + tail % | worse than it | end of speech → transcript p50 / p90 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, by_voice in results.items():
        mode, td = key.split("|")
        everything = [t for turns in by_voice.values() for t in turns]
        for voice, turns in [*by_voice.items(), ("**all**", everything)]:
            s = summarise(turns)
            fail = f" ({s['failed']} failed)" if s["failed"] else ""
            lines.append(f"| {mode} | {td} | {voice} | {s['n']}{fail} | {s['wer_reported']} | "
                         f"{s['wer_full_buffer']} | {s['reported_worse']} | {s['wer_speech_tail']} | "
                         f"{s['worse_than_speech_tail']} | {s['p50_ms']} / {s['p90_ms']} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    utts = speech_set.build(args.out, args.voice, args.prompt)
    modes = [m.split(":", 1) if ":" in m else [m, ""] for m in args.mode] or [["default", ""]]
    report: dict[str, Any] = {"machine": machine(), "modes": args.mode or ["default"],
                              "turn_detection": args.turn_detection, "respond": args.respond}
    if args.wait_quiet > 0:
        report["busy_cores_before"] = wait_quiet(args.wait_quiet)
    results: dict[str, dict[str, list[Turn]]] = {}
    for label, env_spec in modes:
        env = dict(kv.split("=", 1) for kv in env_spec.split(",") if kv)
        tail_ms = int(env.get("LIVEVOX_STT__TAIL_MS", STTSettings().tail_ms))
        server = ServerProcess("embedded", env=env).start()
        try:
            base = server.ws
            await measure(base, utts[0], {"type": "server_vad"})  # warm-up, not counted
            for td in args.turn_detection:
                by_voice: dict[str, list[Turn]] = {}
                for utt in utts:
                    turn = await measure(base, utt, {"type": td}, respond=args.respond, timeout=args.timeout,
                                         tail_ms=tail_ms)
                    by_voice.setdefault(utt.voice, []).append(turn)
                    if args.verbose:
                        print(f"{label} {td} {utt.voice} {utt.prompt}: reported={turn.reported!r} "
                              f"full={turn.full_buffer!r} speech+tail={turn.speech_tail!r} "
                              f"{turn.speech_end_to_transcript_ms} ms "
                              f"(stopped {turn.speech_end_to_stopped_ms}) "
                              f"committed {turn.committed_ms} ms {' '.join(turn.errors)}", file=sys.stderr)
                results[f"{label}|{td}"] = by_voice
        finally:
            server.stop()
    report["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report["summary"] = {k: {v: summarise(ts) for v, ts in bv.items()} for k, bv in results.items()}
    report["turns"] = {k: [t.row() for ts in bv.values() for t in ts] for k, bv in results.items()}
    report["table"] = table(results)
    return report


def report(rep: dict[str, Any], json_path: Path | None) -> None:
    """Print a run's machine line and table; write the whole report to `json_path` if given."""
    m = rep["machine"]
    print(f"machine: {m['nproc']} x {m['cpu']}, load {m['loadavg_1m_at_start']} at start, "
          f"{rep['loadavg_1m_at_end']} at end")
    print(rep["table"])
    if json_path:
        json_path.write_text(json.dumps(rep, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=speech_set.ROOT / "artifacts" / "speech_set",
                   help="speech set cache (benchmarks/speech_set.py)")
    p.add_argument("--voice", action="append", default=None)
    p.add_argument("--prompt", action="append", default=None)
    p.add_argument("--turn-detection", action="append", default=None,
                   help="server_vad, azure_semantic_vad, ... (repeatable; default both of these)")
    p.add_argument("--mode", action="append", default=[], metavar="LABEL:ENV=VALUE[,ENV=VALUE]",
                   help="one run per server setting (repeatable), e.g. tail0:LIVEVOX_STT__TAIL_MS=0")
    p.add_argument("--respond", action="store_true", help="let the server answer each turn too")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per turn")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.turn_detection = args.turn_detection or ["server_vad", "azure_semantic_vad"]
    report(asyncio.run(run(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
