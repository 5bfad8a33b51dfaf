"""`livevox call` as a real subprocess against a real server (scripted engines, then the embedded
pipeline): transcripts and latencies printed, the answer saved, clear exit codes on failure."""

from __future__ import annotations

import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from livevox.client.call import load_wav, speech_bounds
from livevox.engines.scripted import reset_scripted
from server_harness import ServerThread, free_port, scripted_settings
from support_audio import FIXTURES, read_wav

QUESTION = FIXTURES / "question_capital.wav"
VL_PATH = "/voice-live/realtime?api-version=2026-07-15&model=livevox"


def run_call(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livevox", "call", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def assert_reported(out: str) -> None:
    for text in ("you said:", "agent said:", "speech_stopped", "transcription.completed", "response.created",
                 "first audio delta", "response.done", "livevox.turn.metrics", "eot_decision",
                 "first_audio_sent"):
        assert text in out, f"{text!r} missing from:\n{out}"


def assert_scripted_answer(proc: subprocess.CompletedProcess[str], out_wav: Path) -> None:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert_reported(proc.stdout)
    assert "you said:   'scripted transcript'" in proc.stdout, proc.stdout
    assert "This is a scripted answer." in proc.stdout, proc.stdout
    pcm, rate = read_wav(out_wav)
    assert (rate, pcm.ndim) == (24000, 1)  # 24 kHz mono
    assert pcm.size > 24000 * 0.3  # the scripted TTS: 60 ms per word
    assert np.abs(pcm.astype(np.int32)).max() > 500


@pytest.fixture(scope="module")
def scripted() -> Iterator[ServerThread]:
    reset_scripted()
    srv = ServerThread(scripted_settings(api_keys=["call-key"])).start()
    yield srv
    srv.stop()


@pytest.fixture
def wav_question() -> Path:
    if not QUESTION.exists():
        # The fixture is committed: a missing one is a broken checkout, not a reason to skip.
        pytest.fail("tests/fixtures/question_capital.wav is missing (tests/fixtures/make_fixtures.sh makes it)",
                    pytrace=False)
    return QUESTION


@pytest.mark.parametrize("path", [VL_PATH, "/v1/realtime?model=livevox"], ids=["voicelive", "openai-ga"])
def test_call_scripted(scripted: ServerThread, wav_question: Path, tmp_path: Path, path: str) -> None:
    reset_scripted()
    out_wav = tmp_path / "answer.wav"
    proc = run_call("--wav", str(wav_question), "--url", scripted.ws + path, "--out", str(out_wav),
                    "--api-key", "call-key", "--timeout", "30")
    assert_scripted_answer(proc, out_wav)


@pytest.mark.parametrize("form", ["ws", "http"])
def test_call_bare_server_address(scripted: ServerThread, wav_question: Path, form: str) -> None:
    # `--url ws://host:port` (or http://host:port) means the Voice Live endpoint.
    reset_scripted()
    base = scripted.ws if form == "ws" else scripted.http
    proc = run_call("--wav", str(wav_question), "--url", base, "--api-key", "call-key", "--timeout", "30")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "This is a scripted answer." in proc.stdout, proc.stdout


def test_call_wrong_path(scripted: ServerThread, wav_question: Path) -> None:
    proc = run_call("--wav", str(wav_question), "--url", scripted.ws + "/nope", "--api-key", "call-key")
    assert proc.returncode == 4, proc.stderr
    assert "no realtime endpoint at" in proc.stderr and "/voice-live/realtime" in proc.stderr, proc.stderr


def test_call_auth_refused(scripted: ServerThread, wav_question: Path) -> None:
    for key in ([], ["--api-key", "wrong"]):
        proc = run_call("--wav", str(wav_question), "--url", scripted.ws + VL_PATH, *key, "--timeout", "20")
        assert proc.returncode == 3, proc.stderr
        assert "authentication refused (HTTP 401)" in proc.stderr, proc.stderr


def test_call_connection_refused(wav_question: Path) -> None:
    port = free_port()  # nothing listens there
    proc = run_call("--wav", str(wav_question), "--url", f"ws://127.0.0.1:{port}{VL_PATH}", "--timeout", "10")
    assert proc.returncode == 4, proc.stderr
    assert "cannot connect" in proc.stderr, proc.stderr


def test_call_bad_wav(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file at all")
    proc = run_call("--wav", str(bad), "--url", f"ws://127.0.0.1:{free_port()}{VL_PATH}")
    assert proc.returncode == 2, proc.stderr
    assert "not a usable WAV file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("door", ["voicelive", "openai"])
def test_call_webrtc_scripted(scripted: ServerThread, wav_question: Path, tmp_path: Path, door: str) -> None:
    # The same turn and report over WebRTC, with default ICE settings on both sides.
    reset_scripted()
    out_wav = tmp_path / "answer.wav"
    proc = run_call("--wav", str(wav_question), "--url", scripted.ws, "--webrtc", "--door", door,
                    "--out", str(out_wav), "--api-key", "call-key", "--timeout", "30")
    assert_scripted_answer(proc, out_wav)
    assert f"as 20 ms Opus RTP frames over WebRTC ({door} door)" in proc.stdout, proc.stdout


@pytest.mark.parametrize("door", ["voicelive", "openai"])
def test_call_webrtc_auth_refused(scripted: ServerThread, wav_question: Path, door: str) -> None:
    proc = run_call("--wav", str(wav_question), "--url", scripted.ws, "--webrtc", "--door", door,
                    "--api-key", "wrong", "--timeout", "20")
    assert proc.returncode == 3, proc.stderr
    assert "authentication refused (HTTP 401)" in proc.stderr, proc.stderr


def test_call_webrtc_relay_only_without_turn(scripted: ServerThread, wav_question: Path) -> None:
    # Relayed candidates only and no TURN server: nothing to connect with, said clearly.
    proc = run_call("--wav", str(wav_question), "--url", scripted.ws, "--webrtc", "--ice-relay",
                    "--api-key", "call-key", "--timeout", "3")
    assert proc.returncode == 4, proc.stderr
    assert "gathered no ICE candidate" in proc.stderr and "--ice-server turn:" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [["--webrtc", "--ice-server", "http://turn.invalid"],
                                  ["--webrtc", "--ice-server", "turn:127.0.0.1:3478"],
                                  ["--door", "openai"]], ids=["bad-url", "turn-no-credentials", "door-no-webrtc"])
def test_call_webrtc_bad_options(wav_question: Path, args: list[str]) -> None:
    proc = run_call("--wav", str(wav_question), "--url", f"ws://127.0.0.1:{free_port()}", *args)
    assert proc.returncode == 2, proc.stderr
    assert "--ice-server" in proc.stderr or "--webrtc" in proc.stderr, proc.stderr


def test_load_wav_converts_rate_and_channels(tmp_path: Path) -> None:
    rate = 48000
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 300 * t) * 12000).astype(np.int16)
    stereo = np.stack([tone, tone // 2], axis=1)
    path = tmp_path / "stereo48k.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate([np.zeros((rate // 2, 2), np.int16), stereo]).astype("<i2").tobytes())
    pcm = load_wav(path)
    assert pcm.dtype == np.int16
    assert abs(pcm.size - 36000) <= 2  # 1.5 s at 24 kHz
    peak = np.abs(pcm[12000:]).max()
    assert 8000 < peak < 10000  # the channels are averaged: (12000 + 6000) / 2
    bounds = speech_bounds(pcm)
    assert bounds is not None
    assert bounds[0] == pytest.approx(0.5, abs=0.02) and bounds[1] == pytest.approx(1.5, abs=0.02)


def test_call_embedded(embedded: ServerThread, wav_question: Path, tmp_path: Path) -> None:
    out_wav = tmp_path / "answer.wav"
    proc = run_call("--wav", str(wav_question), "--url", embedded.ws + VL_PATH, "--out", str(out_wav),
                    "--timeout", "90", timeout=150)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert_reported(proc.stdout)
    said = next(line for line in proc.stdout.splitlines() if line.startswith("you said:")).lower()
    assert "capital" in said and "france" in said, said
    for stage in ("transcript_final", "llm_first_token", "tts_first_audio"):
        assert stage in proc.stdout, proc.stdout
    pcm, rate = read_wav(out_wav)
    assert (rate, pcm.ndim) == (24000, 1)  # 24 kHz mono
    assert pcm.size > 24000 * 0.5
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300
