"""Readiness: start in any order, and ready only once a turn's work has run at its real sizes.

- A gateway whose remote LLM (and STT, TTS) points at a port where nothing listens starts, serves
  `/readyz` 503 naming the waiting stages and why, refuses sessions with 503 `engines_loading`;
  once the stand-in engine comes up on that port the gateway becomes ready without a restart and
  a turn completes over it.
- A local engine that cannot load (a bad model path) still exits at start, naming the stage.
- The start-up rehearsal ran the real shapes: `/readyz` "warmup" reports what it ran (Piper
  speaking a question, Whisper transcribing that speech, the resampler paths, Silero frames,
  Smart Turn / echo / noise models) - contents, not timings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from engine_standin import EngineStandIn
from livevox.engines.registry import EngineLoadError, Engines
from server_harness import ServerThread, free_port, scripted_settings
from wsclient import RealtimeClient, silence, tone

FAST_RETRY = {"remote_retry_initial_seconds": 0.1, "remote_retry_max_seconds": 0.5, "remote_wait_seconds": 0.3}


def remote(base_url: str) -> dict[str, Any]:
    return {"engine": "openai", "openai": {"base_url": base_url, "max_retries": 0, "connect_timeout": 1.0}}


def readyz(srv: ServerThread) -> httpx.Response:
    return httpx.get(srv.http + "/readyz", timeout=5)


async def until_ready(srv: ServerThread, attempts: int = 300) -> dict[str, Any]:
    """Poll `/readyz` until it says 200 (bounded by attempts, not asserted as a time)."""
    for _ in range(attempts):
        r = await asyncio.to_thread(readyz, srv)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"never ready: {readyz(srv).json()}")


async def test_gateway_started_before_its_engine_becomes_ready_when_it_comes_up(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "livevox.engines.registry")
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    settings = scripted_settings(role="gateway", stt=remote(url), llm=remote(url), tts=remote(url),
                                 startup=FAST_RETRY)
    srv = ServerThread(settings).start(timeout=60)  # nothing listens on `port` yet
    standin = EngineStandIn(port=port)
    try:
        r = readyz(srv)
        assert r.status_code == 503
        body = r.json()
        assert not body["ready"] and body["warmup"] is None
        for stage in ("stt", "llm", "tts"):
            st = body["engines"][stage]
            assert st["state"] == "waiting", st
            assert st["reason"].startswith(f"{stage}_unavailable: connecting to 127.0.0.1:{port}"), st
        assert body["engines"]["vad"]["state"] == "ready"
        waiting = [line for line in body["not_ready"] if ": waiting: " in line]
        assert sorted(line.split(":")[0] for line in waiting) == ["llm", "stt", "tts"], body["not_ready"]
        assert any("llm_unavailable" in line for line in waiting)
        # Sessions opened meanwhile are refused before the upgrade, naming what is not ready.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await RealtimeClient.connect(srv.ws)
        assert refused.value.response.status_code == 503
        assert b"engines_loading" in refused.value.response.body
        assert b"llm: waiting: llm_unavailable" in refused.value.response.body
        # Past startup.remote_wait_seconds the wait is logged as an ERROR, and the retries go on.
        for _ in range(100):
            overdue = [r for r in caplog.records if r.levelno == logging.ERROR and "still no answer" in r.message]
            if len(overdue) == 3:
                break
            await asyncio.sleep(0.1)
        assert sorted(r.message.split()[0] for r in overdue) == ["stage=llm", "stage=stt", "stage=tts"]
        assert readyz(srv).json()["engines"]["llm"]["state"] == "waiting"

        await standin.start()  # the engine comes up on the port the gateway was told about
        body = await until_ready(srv)
        for stage in ("stt", "llm", "tts"):
            st = body["engines"][stage]
            assert st["state"] == "ready" and "reason" not in st and st["attempts"] >= 1, st
        assert "not_ready" not in body and body["warmup"] is not None

        c = await RealtimeClient.connect(srv.ws)
        try:
            await c.update({"turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
                            "input_audio_transcription": {"model": "whisper-1"}})
            await c.append(np.concatenate([silence(0.2), tone(0.8), silence(0.8)]))
            evs = await c.until("response.done", 20)
        finally:
            await c.close()
        done = evs[-1]["response"]
        assert done["status"] == "completed", done
        transcripts = [e["transcript"] for e in evs
                       if e["type"] == "conversation.item.input_audio_transcription.completed"]
        assert transcripts == [standin.transcript]
        spoken = "".join(e["delta"] for e in evs if e["type"].endswith("audio_transcript.delta"))
        assert spoken == standin.reply
        paths = [s.path for s in standin.requests]
        assert {"/v1/chat/completions", "/v1/audio/transcriptions", "/v1/audio/speech"} <= set(paths)
    finally:
        srv.stop()
        await standin.stop()


async def test_a_remote_engine_that_answers_with_an_error_is_a_configuration_error() -> None:
    standin = await EngineStandIn().start()
    standin.llm_mode = "http_401"
    engines = Engines.create(scripted_settings(llm=remote(standin.base_url), startup=FAST_RETRY))
    try:
        with pytest.raises(EngineLoadError) as err:
            await engines.load()
        assert err.value.stage == "llm" and "llm_auth_failed" in str(err.value)
        assert engines.status()["llm"]["state"] == "failed"
    finally:
        await engines.close()
        await standin.stop()


def test_a_bad_local_model_path_still_exits_at_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEVOX_")}
    env |= {"LIVEVOX_VAD__ENGINE": "scripted", "LIVEVOX_STT__ENGINE": "scripted", "LIVEVOX_TTS__ENGINE": "scripted",
            "LIVEVOX_LLM__ENGINE": "llamacpp", "LIVEVOX_LLM__GGUF_PATH": "/nonexistent/model.gguf"}
    proc = subprocess.run([sys.executable, "-m", "livevox", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "cannot start: stage=llm engine=llamacpp failed to load" in proc.stderr, proc.stderr
    assert "/nonexistent/model.gguf" in proc.stderr, proc.stderr


def test_the_warm_up_ran_a_turns_real_shapes(embedded: ServerThread) -> None:
    r = readyz(embedded)
    assert r.status_code == 200
    body = r.json()
    w = body["warmup"]
    assert "error" not in w and all("error" not in v for v in w.values() if isinstance(v, dict)), w
    # Piper spoke a question of typical length, and Whisper transcribed that speech.
    assert w["tts"]["audio_s"] > 1.5, w["tts"]
    assert w["stt"]["audio_s"] > w["tts"]["audio_s"], w["stt"]  # the speech, plus the STT's tail
    words = w["stt"]["transcript"].lower()
    assert "capital" in words and "france" in words, w["stt"]
    assert w["resample"]["paths"] == ["22050->24000", "24000->48000", "24000->16000", "48000->16000"]
    assert w["vad"]["frame_samples"] == 512 and w["vad"]["frames"] >= 16000 * 1.5 // 512, w["vad"]
    for model in ("smart_turn", "echo_cancellation", "noise_suppression"):
        assert "ms" in w[model], (model, w[model])
    assert w["echo_cancellation"]["appends"] == w["noise_suppression"]["appends"] > 50
    for stage in ("vad", "turn", "stt", "llm", "tts"):
        assert body["engines"][stage]["state"] == "ready" and body["engines"][stage]["warm_ms"] > 0


async def test_scripted_engines_are_not_rehearsed_and_a_bare_server_is_ready() -> None:
    srv = ServerThread(scripted_settings()).start(timeout=60)
    try:
        body = readyz(srv).json()
        assert body["ready"] and set(body["warmup"]) == {"resample", "total_ms"}, body["warmup"]
    finally:
        srv.stop()
