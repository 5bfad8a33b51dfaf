"""The browser page in Debian's Firefox ESR (headless), driven over WebDriver BiDi, on the
embedded models: the same turn and checks as the Chromium test, in both modes.

Firefox has no fake-capture-from-file flag, so the microphone is a real audio device: a private
PulseAudio server with two null sinks, `mic` (its monitor is the default source, which Firefox's
getUserMedia opens) and `speaker` (where the page plays the agent). Once the page is connected the
test plays the question WAV into `mic` with `paplay`: the page hears it as a user speaking.

Loopback only, as for Chromium: browser, PulseAudio and server run in a fresh network namespace
with nothing but `lo`. Firefox gathers loopback ICE candidates (`media.peerconnection.ice.loopback`)
and its background services have no network to reach.

Run directly (inside such a namespace): `python tests/test_browser_firefox.py --run OUT_DIR`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

FIREFOX = "/usr/bin/firefox-esr"
ROOT = Path(__file__).resolve().parent.parent
QUESTION = ROOT / "tests" / "fixtures" / "question_capital.wav"

PREFS: dict[str, object] = {
    "media.navigator.permission.disabled": True,  # no permission prompt for the microphone
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "browser.shell.checkDefaultBrowser": False,
    "app.update.disabledForTesting": True,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "browser.aboutwelcome.enabled": False,
}


def _pulseaudio(runtime: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    sock = runtime / "pulse.sock"
    proc = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
         "--disable-shm=yes", "--load=module-null-sink sink_name=speaker",
         "--load=module-null-sink sink_name=mic",
         f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(runtime), "XDG_RUNTIME_DIR": str(runtime)})
    env = {**os.environ, "PULSE_SERVER": f"unix:{sock}", "HOME": str(runtime), "XDG_RUNTIME_DIR": str(runtime)}
    for _ in range(100):
        if sock.exists() and subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    subprocess.run(["pactl", "set-default-sink", "speaker"], env=env, check=True)
    subprocess.run(["pactl", "set-default-source", "mic.monitor"], env=env, check=True)
    return proc, env


def _firefox(profile: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    profile.mkdir()
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                             for k, v in PREFS.items()))
    proc = subprocess.Popen([FIREFOX, "--headless", "--no-remote", "--profile", str(profile),
                             f"--remote-debugging-port={port}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # Firefox prints the BiDi endpoint once it listens
        if "WebDriver BiDi listening" in proc.stderr.readline():
            return proc
    raise TimeoutError("Firefox did not start its WebDriver BiDi server")


def padded_question(path: Path, lead_s: float = 1.5) -> Path:
    """The question WAV after `lead_s` of silence. Audio played into the null sink before Firefox's
    capture stream is running is lost, and the page cannot tell (a graph with no device input yet
    yields silence too): under load the page heard only "...France." The lead absorbs that."""
    with wave.open(str(QUESTION)) as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(b"\x00" * int(lead_s * params.framerate) * params.sampwidth * params.nchannels + frames)
    return path


async def _drive(bidi_url: str, http: str, out_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    from bidi import BiDi
    from test_browser import ARTIFACTS, MODES, PAGE_STATE_JS, SUBPROTOCOL_JS, turn_heard

    question = padded_question(out_dir / "question_padded.wav")
    bidi = await BiDi.connect(bidi_url)
    await bidi.call("session.subscribe", {"events": ["log.entryAdded"]})
    results: dict[str, Any] = {}
    try:
        for mode in MODES:
            ctx = (await bidi.call("browsingContext.create", {"type": "tab"}))["context"]
            await bidi.call("browsingContext.setViewport", {"context": ctx,
                                                           "viewport": {"width": 1100, "height": 900}})
            await bidi.call("browsingContext.navigate", {"context": ctx, "url": f"{http}/?mode={mode}",
                                                         "wait": "complete"})
            if mode == "websocket":  # the conversation-feature toggles, all on, as for Chromium
                await bidi.evaluate(ctx, "['#semantic','#noise','#echo','#fillers'].forEach((s) => {"
                                         " const e = document.querySelector(s); if (!e.checked) e.click(); }); ''",
                                    user_gesture=True)
            await bidi.evaluate(ctx, "document.querySelector('#talk').click(), ''", user_gesture=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                state = json.loads(await bidi.evaluate(ctx, PAGE_STATE_JS))
                # the page is connected before its microphone's audio goes out: under load Firefox's
                # capture started ~1.5 s late and the server heard only "France." (or "Good friends.")
                if state["conn"] == "connected" and state["mic_ms"] >= 300:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            speaker = await asyncio.create_subprocess_exec("paplay", "--device=mic", str(question), env=env)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                state = json.loads(await bidi.evaluate(ctx, PAGE_STATE_JS))
                if turn_heard(state):
                    break
                await asyncio.sleep(0.25)
            await speaker.wait()
            await asyncio.sleep(0.5)
            state = json.loads(await bidi.evaluate(ctx, PAGE_STATE_JS))
            shot = ARTIFACTS / f"browser_firefox_{mode}.png"
            png = await bidi.call("browsingContext.captureScreenshot", {"context": ctx, "origin": "document"})
            shot.write_bytes(base64.b64decode(png["data"]))
            await bidi.evaluate(ctx, "document.querySelector('#talk').click(), ''", user_gesture=True)  # hang up
            state["screenshot"] = str(shot)
            state["console"] = [f"{e['params'].get('level')}: {e['params'].get('text')}" for e in bidi.events
                                if e["params"].get("level") == "error"][-10:]
            bidi.events.clear()
            results[mode] = state
            if mode == MODES[-1]:
                results["subprotocol"] = json.loads(await bidi.evaluate(ctx, SUBPROTOCOL_JS))
            await bidi.call("browsingContext.close", {"context": ctx})
    finally:
        await bidi.close()
    return results


def run(out_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from server_harness import ServerThread, embedded_settings, free_port

    pulse, env = _pulseaudio(out_dir)
    server = ServerThread(embedded_settings(webrtc={"host_addresses": ["127.0.0.1"]})).start(timeout=300)
    port = free_port()
    firefox = _firefox(out_dir / "profile", port, env)
    try:
        return asyncio.run(_drive(f"ws://127.0.0.1:{port}/session", server.http, out_dir, env))
    finally:
        firefox.kill()
        firefox.wait(timeout=30)
        server.stop()
        pulse.kill()
        pulse.wait(timeout=10)


def test_browser_page_talks_to_the_agent_in_firefox() -> None:
    from test_browser import check_results, run_isolated

    assert os.path.exists(FIREFOX), "Debian's Firefox ESR is required: apt-get install -y firefox-esr"
    check_results(run_isolated(__file__, timeout=240))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--run":
        sys.path.insert(0, str(ROOT / "tests"))
        from test_browser import _loopback_up

        _loopback_up()
        print(json.dumps(run(Path(sys.argv[2]))))
    else:
        print(__doc__)
        sys.exit(2)
