"""WebRTC on a machine whose only network is loopback, with default settings and no config file.

`livevox serve` (no flags, no config file, no LIVEVOX_* variable) runs in a fresh network
namespace that has nothing but `lo`, as on an offline machine or in a container without a
network. In the same namespace: `livevox call --webrtc` through each door (its aiortc client has
no monkeypatch either: it gathers loopback because its target is loopback), and the browser page
in headless Chromium with a fake microphone. Neither side is told to use loopback: the server
offers it because it listens on 127.0.0.1 (the default) and nothing else exists.

Needs root (`ip netns`); CI runs as root. As root, failing to create the namespace fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support_audio import read_wav

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "loopback_only_helper.py"
QUESTION = ROOT / "tests" / "fixtures" / "question_capital.wav"
URL = "http://127.0.0.1:8000"  # the default host and port


def _ns_run(ns: str, *cmd: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env, check=False)


def _helper(ns: str, *args: str, timeout: float) -> dict[str, Any]:
    proc = _ns_run(ns, sys.executable, str(HELPER), *args, timeout=timeout)
    assert proc.returncode == 0, f"helper {args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace (ip netns add) needs root; CI runs these tests as root")
    assert shutil.which("ip"), "iproute2 is required (make apt-test installs it)"
    name = f"livevox-lo-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    assert made.returncode == 0, f"ip netns add {name} failed: {made.stderr}"
    try:
        up = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], capture_output=True,
                            text=True, check=False)
        assert up.returncode == 0, f"cannot bring lo up in {name}: {up.stderr}"
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def server(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`livevox serve` with nothing but its defaults, inside the namespace; yields its URL."""
    workdir = tmp_path_factory.mktemp("serve")  # an empty directory: no config file anywhere near
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEVOX_")}
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "livevox", "serve"], cwd=workdir,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = _helper(netns, "wait-ready", URL, "300", timeout=330)
        assert ready["ready"], f"the server did not get ready: {ready}\n{(workdir / 'serve.log').read_text()[-3000:]}"
        yield URL
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_namespace_has_only_loopback(netns: str) -> None:
    # What makes the other tests meaningful: no address but loopback to gather candidates on.
    addresses = _helper(netns, "interfaces", timeout=60)
    assert set(addresses) == {"lo"}, addresses
    assert all(ip in ("127.0.0.1", "::1") for ip in addresses["lo"]), addresses


@pytest.mark.parametrize("door", ["voicelive", "openai"])
def test_call_over_webrtc(netns: str, server: str, door: str, tmp_path: Path) -> None:
    out_wav = tmp_path / "answer.wav"
    proc = _ns_run(netns, sys.executable, "-m", "livevox", "call", "--webrtc", "--door", door, "--url", server,
                   "--wav", str(QUESTION), "--out", str(out_wav), "--timeout", "90", timeout=150)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"over WebRTC ({door} door)" in proc.stdout, proc.stdout
    said = next(line for line in proc.stdout.splitlines() if line.startswith("you said:")).lower()
    assert "capital" in said, said  # the question got through; recognition quality: test_call_cli.py
    agent = next(line for line in proc.stdout.splitlines() if line.startswith("agent said:"))
    assert agent.removeprefix("agent said:").strip(" '\"") != "", agent
    for stage in ("first audio delta", "response.done", "eot_decision", "tts_first_audio"):
        assert stage in proc.stdout, proc.stdout
    pcm, rate = read_wav(out_wav)
    assert (rate, pcm.ndim) == (24000, 1)  # 24 kHz mono
    assert pcm.size > 24000 * 0.5
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300


def test_browser_page_over_webrtc(netns: str, server: str, tmp_path: Path) -> None:
    from test_browser import CHROMIUM

    assert os.path.exists(CHROMIUM), "Debian's chromium is required: apt-get install -y chromium"
    results = _helper(netns, "browser", server, str(tmp_path), timeout=240)
    r = results["webrtc"]
    print(json.dumps({k: v for k, v in r.items() if k != "console"}))
    assert not r["error"], (r["error"], r["console"])
    assert r["user"] and "capital" in r["user"][0].lower(), r
    assert r["agent"] and r["agent"][0].strip(), r
    assert r["played_ms"] >= 500, ("the page played less than 0.5 s of agent audio", r)
    assert r["latency_ms"] > 0, r  # the page measured the turn
    assert Path(r["screenshot"]).stat().st_size > 10_000


# ---------------------------------------------------------------- which candidates the server offers


def _answer_addresses(settings_overrides: dict[str, Any]) -> set[str]:
    """The host-candidate addresses of a Voice Live door answer, from a server with these settings
    (the harness binds 127.0.0.1 whatever `host` says; `host` is what the policy reads)."""
    import asyncio

    from rtcclient import RtcClient
    from server_harness import ServerThread, scripted_settings

    srv = ServerThread(scripted_settings(api_keys=["k"], **settings_overrides)).start()

    async def offer() -> str:
        c = RtcClient(srv.http, api_key="k")
        try:
            await c.connect_ws()
            await c.send_ws({"type": "rtc.call.sdp.create", "sdp_offer": await c.make_offer()})
            got = await c.wait_ws("rtc.call.sdp.created", "rtc.call.error")
            assert got["type"] == "rtc.call.sdp.created", got
            answer: str = got["sdp_answer"]
            return answer
        finally:
            await c.close()

    try:
        sdp = asyncio.run(offer())
    finally:
        srv.stop()
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def test_server_candidates_follow_the_bind_host_and_the_allow_list() -> None:
    from livevox.transports.webrtc.ice import _ORIGINAL, loopback_addresses

    others = set(_ORIGINAL(True, True))  # what aioice alone gathers here: every non-loopback address
    loopback = set(loopback_addresses())
    assert "127.0.0.1" in loopback
    # Default settings: the server listens on 127.0.0.1, so loopback is offered besides the rest.
    assert _answer_addresses({}) == others | loopback
    # Listening on every interface: aioice's choice, unchanged (loopback only if nothing else exists).
    assert _answer_addresses({"host": "0.0.0.0"}) == (others or loopback)
    # An allow-list is used as written, whatever the bind host.
    assert _answer_addresses({"host": "0.0.0.0", "webrtc": {"host_addresses": ["127.0.0.1"]}}) == {"127.0.0.1"}
