"""Two gateways behind a real nginx (Debian's package) on loopback, with the repository's own
sticky load-balancing config (deploy/nginx/livevox.conf): sessions spread across both gateways,
a client address always reaches the same one, and a full SDK turn works through the proxy."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import websockets
from azure.ai.voicelive.aio import connect
from azure.ai.voicelive.models import RequestSession
from azure.core.credentials import AzureKeyCredential

from server_harness import ServerThread, free_port, scripted_settings
from wsclient import VL_PATH, tone

SNIPPET = Path(__file__).parent.parent / "deploy" / "nginx" / "livevox.conf"
CLIENT_IPS = [f"127.0.0.{i}" for i in range(10, 58)]  # 48 client addresses, all loopback


class Nginx:
    def __init__(self, root: Path, gateways: list[int]) -> None:
        self.root = root
        self.port = free_port()
        snippet = SNIPPET.read_text().replace("LISTEN_PORT", str(self.port))
        for i, port in enumerate(gateways, 1):
            snippet = snippet.replace(f"GATEWAY_{i}_PORT", str(port))
        (root / "livevox.conf").write_text(snippet)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp paths
        temps = "".join(f"    {k}_temp_path {root}/{k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (root / "nginx.conf").write_text(
            f"{user}worker_processes 1;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log off;\n{temps}    include {root}/livevox.conf;\n}}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        assert os.path.exists(binary), "nginx is not installed: `make test` installs it (APT_TEST)"
        self.proc = subprocess.Popen([binary, "-p", str(self.root), "-e", str(self.root / "error.log"),
                                      "-c", str(self.root / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):  # up to 10 s
            assert self.proc.poll() is None, (self.proc.stderr.read() if self.proc.stderr else b"").decode()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise TimeoutError("nginx did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def gateways() -> Iterator[list[ServerThread]]:
    gws = [ServerThread(scripted_settings(role="gateway", api_keys=["lb-key"])).start() for _ in range(2)]
    yield gws
    for g in gws:
        g.stop()


@pytest.fixture(scope="module")
def nginx(gateways: list[ServerThread], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    n = Nginx(tmp_path_factory.mktemp("nginx"), [g.port for g in gateways]).start()
    yield n
    n.stop()


def holder(gateways: list[ServerThread], session_id: str) -> list[int]:
    """The gateways whose live sessions include `session_id` (exactly one, if all is well)."""
    return [i for i, g in enumerate(gateways)
            if any(s.id == session_id for s in list(g.app.state.livevox.sessions))]


async def open_from(ip: str, nginx: Nginx) -> tuple[websockets.ClientConnection, str]:
    ws = await websockets.connect(f"ws://127.0.0.1:{nginx.port}{VL_PATH}", local_addr=(ip, 0),
                                  additional_headers={"api-key": "lb-key"})
    event = json.loads(await ws.recv())
    assert event["type"] == "session.created"  # sent after the gateway registered the session
    return ws, event["session"]["id"]


async def placement(nginx: Nginx, gateways: list[ServerThread]) -> dict[str, int]:
    """Open one session per client address and keep them open; which gateway holds each."""
    where: dict[str, int] = {}
    conns = []
    try:
        for ip in CLIENT_IPS:
            ws, session_id = await open_from(ip, nginx)
            conns.append(ws)
            found = holder(gateways, session_id)
            assert len(found) == 1, (ip, session_id, found)
            where[ip] = found[0]
    finally:
        for ws in conns:
            await ws.close()
    return where


async def test_sessions_spread_across_both_gateways_and_stick(nginx: Nginx, gateways: list[ServerThread]) -> None:
    first = await placement(nginx, gateways)
    per_gateway = [list(first.values()).count(i) for i in range(2)]
    assert all(n > 0 for n in per_gateway), per_gateway
    again = await placement(nginx, gateways)
    assert again == first  # sticky: every client address came back to its gateway
    print(f"sessions per gateway: {per_gateway}")


async def test_spoken_turn_through_nginx(nginx: Nginx, gateways: list[ServerThread]) -> None:
    audio = np.concatenate([tone(0.6), np.zeros(24000, np.int16)])
    seq: list[str] = []
    got_audio = 0
    async with connect(endpoint=f"http://127.0.0.1:{nginx.port}", credential=AzureKeyCredential("lb-key"),
                       model="gpt-realtime") as conn:
        await conn.session.update(session=RequestSession(instructions="Be brief."))
        step = 2400
        for i in range(0, len(audio), step):
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + step].tobytes()).decode())
        async for ev in conn:
            seq.append(ev.type)
            if ev.type == "response.audio.delta":
                got_audio += len(ev.delta)
            if ev.type == "response.done":
                assert ev.response.status == "completed"
                break
    assert "input_audio_buffer.speech_stopped" in seq and got_audio > 0
    # A wrong key is refused by the gateway, through the proxy, before the upgrade.
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"ws://127.0.0.1:{nginx.port}{VL_PATH}", additional_headers={"api-key": "no"})
    assert info.value.response.status_code == 401
