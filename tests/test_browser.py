"""The browser page, in Debian's headless Chromium driven by Playwright, on the embedded models.

Chromium's fake microphone plays a WAV of the question (espeak-ng, not the agent's voice). The test
clicks Talk and checks that the user's and the agent's transcripts appear, that agent audio was
played, and that a latency was measured; it saves a screenshot per mode under artifacts/.

Loopback only: the browser and the server run in a fresh network namespace that has nothing but
`lo` (`unshare --net`), so WebRTC cannot pick any other interface; Chromium gathers loopback
candidates with `--allow-loopback-in-peer-connection`, and the server's `webrtc.host_addresses`
allows 127.0.0.1 only.

Run directly (inside such a namespace): `python tests/test_browser.py --run OUT_DIR`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
MODES = ("webrtc", "websocket")


def _make_wav(path: Path) -> None:
    from support_audio import fixture  # tests/ is on the path, run by pytest or directly

    pcm = fixture("question_capital.wav", 48000)
    # 2 s before (the call connects meanwhile), then the question, then a long silence: the file
    # is read once (%noloop), so the agent answers once, with no barge-in.
    out = np.concatenate([np.zeros(96000, np.int16), pcm, np.zeros(48000 * 10, np.int16)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(out.tobytes())


# What the page shows, as JSON: the same probe for Chromium (Playwright) and Firefox (BiDi).
PAGE_STATE_JS = """JSON.stringify({
  conn: document.querySelector("#conn").textContent,
  mic_ms: parseInt(document.querySelector("#conn").dataset.micMs || "0", 10),
  user: [...document.querySelectorAll(".msg.user[data-final] .text")].map((e) => e.textContent),
  agent: [...document.querySelectorAll(".msg.agent .text")].map((e) => e.textContent)
    .filter((t) => t.replace(/^[ …]+|[ …]+$/g, "").length > 0),
  played_ms: parseInt(document.querySelector("#agent-played").dataset.ms || "0", 10),
  latency_ms: parseInt(document.querySelector("#latency-last").dataset.ms || "-1", 10),
  error: document.querySelector("#error").textContent || "",
  waterfall: [...document.querySelectorAll("#waterfall .turn[data-response-id]")].map((t) => ({
    response_id: t.dataset.responseId,
    scale_ms: parseFloat(t.dataset.scaleMs),
    stages: [...t.querySelectorAll(".stage[data-stage][data-ms]")].map((s) => ({
      stage: s.dataset.stage,
      ms: parseFloat(s.dataset.ms),
      text: s.textContent,
      bar_px: s.querySelector(".bar").getBoundingClientRect().width,
      track_px: s.querySelector(".track").clientWidth,
    })),
  })),
})"""


# OpenAI's browser client authenticates with subprotocols (no headers in a browser WebSocket);
# the browser fails the handshake unless the server selects one it offered.
SUBPROTOCOL_JS = """new Promise((resolve) => {
  const url = location.origin.replace("http", "ws") + "/v1/realtime?model=gpt-realtime";
  const ws = new WebSocket(url, ["realtime", "openai-insecure-api-key.browser-key", "openai-beta.realtime-v1"]);
  const done = (r) => { try { ws.close(); } catch (e) {} resolve(JSON.stringify(r)); };
  ws.onmessage = (e) => { const ev = JSON.parse(e.data);
    done({protocol: ws.protocol, first: ev.type, beta: "input_audio_format" in (ev.session || {})}); };
  ws.onerror = () => done({error: "handshake failed"});
  setTimeout(() => done({error: "timeout"}), 10000);
})"""


# The waterfall's rows (app.js STAGES, then the browser's own measure).
WATERFALL_STAGES = ("speech_end", "eot_decision", "transcript_final", "llm_first_token", "first_clause",
                    "tts_first_audio", "first_audio_sent", "browser")


def turn_heard(state: dict[str, Any]) -> bool:
    """The turn was heard and drawn (livevox.turn.metrics comes after response.done)."""
    drawn = any(s["stage"] == "browser" for t in state["waterfall"][:1] for s in t["stages"])
    return bool(state["user"] and state["agent"] and state["played_ms"] >= 1000 and drawn)


def check_waterfall(mode: str, r: dict[str, Any]) -> None:
    """One turn drawn: the server's stages in time order, the browser's measure last,
    each bar as wide as its ms on the turn's axis, each row's ms readable as text."""
    assert r["waterfall"], (mode, "no waterfall drawn", r)
    turn = r["waterfall"][0]
    assert turn["response_id"], (mode, turn)
    rows = turn["stages"]
    names = [s["stage"] for s in rows]
    assert names[0] == "speech_end" and rows[0]["ms"] == 0, (mode, rows)
    assert {"llm_first_token", "first_audio_sent"} <= set(names) and names[-1] == "browser", (mode, names)
    assert len(set(names)) == len(names) and set(names) <= set(WATERFALL_STAGES), (mode, names)
    # in time order (not always the pipeline's: the transcript may be final before the end-of-turn decision)
    server_ms = [s["ms"] for s in rows[:-1]]
    assert server_ms == sorted(server_ms), (mode, "server stages not in time order", rows)
    # the browser's row is on its own clock (from the microphone's end of speech), so only its place is fixed
    assert rows[-1]["ms"] == r["latency_ms"], (mode, rows[-1], r["latency_ms"])
    assert turn["scale_ms"] == max(s["ms"] for s in rows), (mode, turn)
    for s in rows:
        assert f" {math.floor(s['ms'] + 0.5)} ms" in s["text"], (mode, s)  # as JS Math.round
        assert s["track_px"] > 100, (mode, "the axis is too narrow to read", s)
        want = s["track_px"] * max(0.0, s["ms"]) / turn["scale_ms"]
        assert abs(s["bar_px"] - want) <= 1.5, (mode, s["stage"], "bar width not proportional", want, s)


def check_results(results: dict[str, Any]) -> None:
    for mode in MODES:
        r = results[mode]
        print(f"{mode}: {json.dumps({k: v for k, v in r.items() if k != 'console'})}")
        assert not r["error"], (mode, r["error"], r["console"])
        assert r["user"] and "capital" in r["user"][0].lower(), (mode, r)
        assert r["agent"] and r["agent"][0].strip(), (mode, r)
        assert r["played_ms"] >= 500, (mode, "the page played less than 0.5 s of agent audio", r)
        assert r["latency_ms"] > 0, (mode, r)  # measured; how fast is the benchmarks' business
        check_waterfall(mode, r)
        assert Path(r["screenshot"]).stat().st_size > 10_000
    assert results["subprotocol"] == {"protocol": "realtime", "first": "session.created", "beta": True}, results


def run_isolated(script: str, timeout: float) -> dict[str, Any]:
    """Run `script --run TMP` in a fresh network namespace with only loopback; return its JSON."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is required to isolate the browser on loopback"
    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [unshare, "--net", "--", sys.executable, script, "--run", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"browser run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    results: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def _page_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(page.evaluate(PAGE_STATE_JS))
    return state


def run(out_dir: Path) -> dict[str, Any]:
    """Start a server on the embedded models, drive the page in each mode, return what was seen."""
    sys.path.insert(0, str(ROOT / "tests"))
    from server_harness import ServerThread, embedded_settings

    server = ServerThread(embedded_settings(webrtc={"host_addresses": ["127.0.0.1"]})).start(timeout=300)
    try:
        return drive(server.http, out_dir)
    finally:
        server.stop()


def drive(http: str, out_dir: Path, shot_prefix: str = "browser", modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """Drive the page of the server at `http` in each of `modes` (screenshots
    `artifacts/{shot_prefix}_{mode}.png`)."""
    from playwright.sync_api import sync_playwright

    wav = out_dir / "question.wav"
    _make_wav(wav)
    results: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop", "--allow-loopback-in-peer-connection",
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        for mode in modes:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            console: list[str] = []
            page.on("console", lambda m, log=console: log.append(f"{m.type}: {m.text}"))  # type: ignore
            page.on("pageerror", lambda e, log=console: log.append(f"pageerror: {e}"))  # type: ignore
            page.goto(f"{http}/?mode={mode}")
            if mode == "websocket":  # the conversation-feature toggles, all on for one spoken turn
                for toggle in ("#semantic", "#noise", "#echo", "#fillers"):
                    page.check(toggle)
            page.click("#talk")
            deadline = time.monotonic() + 40
            state = _page_state(page)
            while time.monotonic() < deadline:
                state = _page_state(page)
                if turn_heard(state):
                    break
                time.sleep(0.25)
            time.sleep(0.5)
            state = _page_state(page)
            shot = ARTIFACTS / f"{shot_prefix}_{mode}.png"
            page.screenshot(path=str(shot), full_page=True)
            page.click("#talk")  # hang up
            state["screenshot"] = str(shot)
            state["console"] = [c for c in console if c.startswith(("error", "pageerror"))][-10:]
            results[mode] = state
            page.close()
        page = browser.new_page()
        page.goto(http + "/")
        results["subprotocol"] = json.loads(page.evaluate(SUBPROTOCOL_JS))
        page.close()
        browser.close()
    return results


def test_browser_page_talks_to_the_agent() -> None:
    assert os.path.exists(CHROMIUM), "Debian's chromium is required: apt-get install -y chromium"
    check_results(run_isolated(__file__, timeout=240))


def _loopback_up() -> None:
    """Bring `lo` up in the fresh network namespace (what `ip link set lo up` does)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--run":
        _loopback_up()
        print(json.dumps(run(Path(sys.argv[2]))))
    else:
        print(__doc__)
        sys.exit(2)
