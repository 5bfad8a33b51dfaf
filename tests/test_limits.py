"""Limits and lifecycle: session cap, idle timeout, maximum length, and no leaks after 200 sessions
killed mid-response (scripted stand-in engines)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import subprocess
import sys
from collections import Counter

import psutil
import pytest
import websockets

from livevox.engines.scripted import ScriptedLLM, ScriptedTTS
from livevox.realtime.session import RealtimeSession
from livevox.settings import load_settings
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient, tone


async def test_session_limit_503_then_recovers() -> None:
    srv = ServerThread(scripted_settings(limits={"max_sessions": 2})).start()
    try:
        a = await RealtimeClient.connect(srv.ws)
        b = await RealtimeClient.connect(srv.ws)
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(srv.ws + "/voice-live/realtime?model=x")
        assert info.value.response.status_code == 503
        assert b"session_limit_reached" in info.value.response.body
        await a.close()
        await asyncio.sleep(0.2)
        c = await RealtimeClient.connect(srv.ws)
        await c.close()
        await b.close()
    finally:
        srv.stop()


async def test_concurrent_handshakes_cannot_pass_the_session_limit_together() -> None:
    """Sixty clients dial at once, on both WebSocket doors, against a limit of 3: exactly 3 get
    in, each refused one gets 503 `session_limit_reached`; the place is counted before the upgrade."""
    srv = ServerThread(scripted_settings(limits={"max_sessions": 3})).start()
    paths = ["/voice-live/realtime?model=x", "/voice-live/realtime/calls?model=x"] * 30

    async def dial(path: str) -> websockets.ClientConnection | int:
        try:
            return await websockets.connect(srv.ws + path, open_timeout=10)
        except websockets.InvalidStatus as exc:
            assert b"session_limit_reached" in exc.response.body
            return exc.response.status_code

    try:
        results = await asyncio.gather(*(dial(p) for p in paths))
        admitted = [r for r in results if not isinstance(r, int)]
        assert len(admitted) == 3 and sorted(r for r in results if isinstance(r, int)) == [503] * 57
        for ws in admitted:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
            await ws.close()
    finally:
        srv.stop()


async def test_idle_timeout_and_max_length_close_with_error() -> None:
    srv = ServerThread(scripted_settings(limits={"idle_timeout_seconds": 0.6,
                                                 "max_session_seconds": 30})).start()
    try:
        c = await RealtimeClient.connect(srv.ws)
        err = await c.error(timeout=5)
        assert err["code"] == "idle_timeout"
        with pytest.raises(websockets.ConnectionClosed):
            await c.recv(timeout=5)
    finally:
        srv.stop()
    srv = ServerThread(scripted_settings(limits={"max_session_seconds": 1.0})).start()
    try:
        c = await RealtimeClient.connect(srv.ws)
        await c.update({"instructions": "x"})
        err = await c.error(timeout=5)
        assert err["code"] == "session_expired"
    finally:
        srv.stop()


def _live_tasks(srv: ServerThread) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    n: int = srv.run_coro(count())
    return n


def _rss(proc: psutil.Process) -> int:
    """RSS after handing freed heap pages back to the OS, so that it shows memory in use."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss: int = proc.memory_info().rss
    return rss


def _server_objects() -> Counter[str]:
    """Live objects of the types a session is made of (other tests' leftovers in this process,
    imports and caches elsewhere do not count)."""
    names = (f"{m}.{t.__qualname__}" for o in gc.get_objects()
             if isinstance(m := getattr(t := type(o), "__module__", None), str))
    return Counter(n for n in names if n.startswith(SESSION_MODULES))


SESSION_MODULES = ("livevox.", "websockets.", "uvicorn.", "starlette.")


async def test_200_sessions_killed_mid_response_leave_nothing_behind() -> None:
    srv = ServerThread(scripted_settings(limits={"max_sessions": 1000})).start()
    ScriptedLLM.token_delay = 0.02
    ScriptedLLM.reply = "a fairly long scripted answer that keeps streaming for a while " * 4
    proc = psutil.Process(os.getpid())
    try:
        async def one() -> None:
            c = await RealtimeClient.connect(srv.ws)
            await c.update({"turn_detection": None})
            await c.append(tone(0.3))
            await c.send({"type": "input_audio_buffer.commit"})
            await c.send({"type": "response.create"})
            await c.until("response.audio.delta")
            c.ws.transport.abort()  # vanish mid-response, no close handshake

        async def round_of_200() -> None:
            for _ in range(10):
                await asyncio.gather(*(one() for _ in range(20)))
                ScriptedLLM.calls.clear()  # the stand-in records requests; not server state
                ScriptedTTS.calls.clear()

        async def settle() -> None:
            for _ in range(50):  # sessions wind down asynchronously
                await asyncio.sleep(0.1)
                if _live_tasks(srv) <= base_tasks and not srv.app.state.livevox.sessions:
                    break
            gc.collect()

        await round_of_200()  # warm up: allocator arenas, caches, executor threads
        await asyncio.sleep(1.0)
        gc.collect()
        base_tasks = _live_tasks(srv)
        base_objects = _server_objects()
        threads = len(proc.threads())
        rss = [_rss(proc)]
        for _ in range(2):
            await round_of_200()
            await settle()
            rss.append(_rss(proc))
        assert not srv.app.state.livevox.sessions
        assert not [o for o in gc.get_objects() if isinstance(o, RealtimeSession)], "sessions kept alive"
        assert _live_tasks(srv) <= base_tasks, "tasks left behind"
        assert len(proc.threads()) <= threads, "threads left behind"
        grown = _server_objects() - base_objects
        assert grown.total() < 500, f"more live server objects after 400 sessions: {grown.most_common(10)}"
        # With freed pages trimmed, RSS comes back within 1-2 MB of the baseline here; a leak of
        # 20 kB per session would add 8 MB.
        growth = rss[-1] - rss[0]
        print(f"RSS per round vs baseline: {[(r - rss[0]) // 10**6 for r in rss[1:]]} MB")
        assert growth < 8 * 1024 * 1024, f"RSS grew {growth / 1e6:.1f} MB over 400 sessions"
    finally:
        ScriptedLLM.reset()
        srv.stop()


def test_settings_precedence(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "livevox.toml"  # type: ignore[operator]
    cfg.write_text('port = 9001\nlog_level = "warning"\n[llm]\nmax_tokens = 77\n[limits]\nmax_items = 5\n')
    monkeypatch.setenv("LIVEVOX_PORT", "9002")
    monkeypatch.setenv("LIVEVOX_LIMITS__MAX_ITEMS", "6")
    monkeypatch.setenv("LIVEVOX_API_KEYS", "a, b")
    s = load_settings(cfg, port=9003)
    assert s.port == 9003  # flag beats env beats file
    assert s.limits.max_items == 6  # env beats file
    assert s.llm.max_tokens == 77 and s.log_level == "warning"  # file beats defaults
    assert s.api_keys == ["a", "b"]


def test_cli_refuses_public_host_without_keys() -> None:
    env = {**os.environ, "LIVEVOX_VAD__ENGINE": "scripted", "LIVEVOX_STT__ENGINE": "scripted",
           "LIVEVOX_LLM__ENGINE": "scripted", "LIVEVOX_TTS__ENGINE": "scripted"}
    r = subprocess.run([sys.executable, "-m", "livevox", "serve", "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2
    assert "--allow-unauthenticated" in r.stderr


def test_config_check_names_key(tmp_path: pytest.TempPathFactory) -> None:
    bad = tmp_path / "bad.toml"  # type: ignore[operator]
    bad.write_text("[llm]\nengine = \"nope\"\n")
    r = subprocess.run([sys.executable, "-m", "livevox", "config", "check", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "llm.engine" in r.stderr
