"""A long turn through the real server and models (`stt.piece_s`): pieces of it are transcribed
while the caller is still talking, and the joined transcript is as good as the whole audio's.

A monologue of benchmarks/speech_set.py prompts in one espeak-ng voice (none of them a fixture),
300 ms apart, is streamed at real-time pace over the WebSocket with the opt-in latency event.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import long_turns
import speech_set
import transcripts
from livevox.client.call import load_wav
from server_harness import ServerThread, embedded_settings

PROMPTS = ["capital", "table", "sister", "list", "dentist", "weather"]
#: Word errors the joined transcript may have beyond the whole audio's: a piece's Whisper call
#: starts without the words before it, which can change a word at the seam.
SEAM_SLACK = 2


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(stt={"piece_s": 5.0})).start(timeout=300)
    yield srv
    srv.stop()


async def test_a_long_turn_is_transcribed_while_the_caller_talks(server: ServerThread, tmp_path: Path) -> None:
    utts = speech_set.build(tmp_path, ["espeak-en-gb-150"], PROMPTS)
    mono = long_turns.monologue(utts, 14.0, 300, 0, tmp_path)
    path = transcripts.VL_PATH + "&livevox-latency-events=1"
    result, reported, committed = await transcripts.spoken_transcript(
        server.ws, path, load_wav(mono.path), {"type": "server_vad"}, respond=True, timeout=90)
    assert reported, result.first
    metrics = next(ev for _, ev in result.events if ev["type"] == "livevox.turn.metrics")
    stt = sorted((j for j in metrics["jobs"] if j["stage"] == "stt"), key=lambda j: j["started_ms"])
    # Pieces: transcriptions of the turn that finished before its speech ended (ms < 0).
    assert len(stt) >= 2 and stt[0]["finished_ms"] < 0, stt
    # And their words were prefilled into the LLM before the speech ended (llm.prefill_pieces).
    assert any(j["stage"] == "llm" and j["finished_ms"] < 0 for j in metrics["jobs"]), metrics["jobs"]
    full = await asyncio.to_thread(transcripts.full_buffer_transcript, server.http, committed)
    assert transcripts.word_errors(mono.text, reported) <= transcripts.word_errors(mono.text, full) + SEAM_SLACK, (
        mono.text, reported, full)
