"""An aiortc client for livevox's two WebRTC doors (tests and benchmarks).

It sends a WAV (or anything queued with `say()`) as its microphone track, paced in real time,
records every received audio frame with its arrival time and level, and keeps the events of the
data channel and of the control WebSocket apart, so tests can check the channel routing.

Loopback only: ICE servers are empty and host candidates are restricted to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import soxr
import websockets
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from livevox.transports.webrtc.ice import host_address_policy

FIXTURES = Path(__file__).parent / "fixtures"
VL_CALLS = "/voice-live/realtime/calls?api-version=2026-01-01-preview&model=gpt-realtime"
LOUD_RMS = 200.0  # int16 RMS above which a received frame counts as agent audio


def load_wav(path: Path | str, rate: int = 48000) -> np.ndarray:
    with wave.open(str(path)) as w:
        src = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() == 2:
            pcm = pcm.reshape(-1, 2).mean(axis=1).astype(np.int16)
    out: np.ndarray = soxr.resample(pcm, src, rate).astype(np.int16) if src != rate else pcm.astype(np.int16)
    return out


def tone(seconds: float, rate: int = 48000, amp: int = 8000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate))
    return (np.sin(2 * np.pi * freq * t / rate) * amp).astype(np.int16)


def silence(seconds: float, rate: int = 48000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.int16)


class PacedAudioTrack(MediaStreamTrack):
    """An audio track that hands out one 20 ms frame per tick of a media clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._t0: float | None = None
        self._n = 0  # frames handed out

    async def _tick(self) -> int:
        """Wait for the next frame's time on the clock; return its index (its pts is index * 960)."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        else:
            await asyncio.sleep(max(0.0, self._t0 + self._n * 0.02 - now))
        n = self._n
        self._n += 1
        return n


class MicTrack(PacedAudioTrack):
    """48 kHz mono microphone: plays queued PCM in real time (media clock), silence otherwise."""

    def __init__(self, pcm: np.ndarray | None = None) -> None:
        super().__init__()
        self._queue: list[np.ndarray] = [] if pcm is None else [pcm.astype(np.int16)]
        self._marks: list[str | None] = [None] * len(self._queue)
        self.marks: dict[str, float] = {}  # mark -> monotonic time its chunk's last sample was sent
        self.speech_end_at: float | None = None  # monotonic time the last queued audio was sent
        self._pending = 0 if pcm is None else int(pcm.size)

    def say(self, pcm: np.ndarray, mark: str | None = None) -> None:
        """Queue audio; with `mark`, note in `marks[mark]` when its last sample leaves."""
        self._queue.append(pcm.astype(np.int16))
        self._marks.append(mark)
        self._pending += int(pcm.size)

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def _take(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.int16)
        filled = 0
        while filled < n and self._queue:
            head = self._queue[0]
            k = min(n - filled, head.size)
            out[filled:filled + k] = head[:k]
            filled += k
            if k == head.size:
                self._queue.pop(0)
                mark = self._marks.pop(0)
                if mark is not None:
                    self.marks[mark] = time.monotonic()
            else:
                self._queue[0] = head[k:]
        self._pending -= filled
        if filled and not self._queue:
            self.speech_end_at = time.monotonic()
        return out

    async def recv(self) -> av.AudioFrame:
        n = await self._tick()
        pcm = self._take(960)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


@dataclass
class Received:
    at: float  # when the decoded frame came out of the received track
    rms: float
    pcm: np.ndarray  # mono int16 at `rate`
    rate: int
    rtp_at: float  # when its RTP packet reached the client (before the client's jitter buffer)


@dataclass
class RtcClient:
    """One call. `door` is "voicelive" (WebSocket signalling) or "openai" (HTTP POST)."""

    base_http: str
    door: str = "voicelive"
    api_key: str | None = None
    mic: MicTrack = field(default_factory=MicTrack)
    codecs: list[str] | None = None  # e.g. ["audio/PCMU"] to offer only that
    stereo: bool = False
    with_data_channel: bool = True
    keep_audio: bool = True
    pc: RTCPeerConnection = field(init=False)
    ws: Any = None
    call_id: str | None = None
    location: str | None = None
    dc_events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ws_events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    frames: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._tasks: list[asyncio.Task[Any]] = []
        self._event = asyncio.Event()
        self.dc: RTCDataChannel | None = None
        self._rtp_origin: int | None = None
        self._rtp_arrivals: dict[int, float] = {}

    # ------------------------------------------------------------ setup

    @property
    def base_ws(self) -> str:
        return "ws" + self.base_http.removeprefix("http")

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def make_offer(self) -> str:
        transceiver = self.pc.addTransceiver(self.mic, direction="sendrecv")
        if self.codecs:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for want in self.codecs for c in caps
                                             if c.mimeType.lower() == want.lower()])
        if self.with_data_channel:
            label = "voice-live-events" if self.door == "voicelive" else "oai-events"
            self.dc = self.pc.createDataChannel(label)

            def _on_message(msg: str) -> None:
                self.dc_events.append((time.monotonic(), json.loads(msg)))
                self._event.set()

            self.dc.on("message", _on_message)

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._hook_rtp()
            self._tasks.append(asyncio.ensure_future(self._read_track(track)))

        with host_address_policy(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp: str = self.pc.localDescription.sdp
        if self.stereo:
            sdp = sdp.replace("a=rtpmap:96 opus/48000/2\r\n", "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 stereo=1\r\n")
        return sdp

    def _hook_rtp(self) -> None:
        """Note when each RTP packet arrives: aiortc's receiver holds 4 packets (80 ms) in its jitter
        buffer before decoding, which is the client's latency, not the server's."""
        receiver = self.pc.getReceivers()[0]
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            if self._rtp_origin is None:
                self._rtp_origin = packet.timestamp
            self._rtp_arrivals[packet.timestamp] = time.monotonic()
            await original(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = handle  # type: ignore[method-assign]

    async def _read_track(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            data = frame.to_ndarray().reshape(-1)
            channels = len(frame.layout.channels)
            mono = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data.astype(np.float64)
            rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
            pcm = mono.astype(np.int16) if self.keep_audio else np.zeros(0, np.int16)
            now = time.monotonic()
            rtp_at = now
            if self._rtp_origin is not None and frame.pts is not None:
                ts = (self._rtp_origin + frame.pts) % (1 << 32)
                rtp_at = self._rtp_arrivals.pop(ts, now)
            self.frames.append(Received(now, rms, pcm, frame.sample_rate, rtp_at))

    async def connect_ws(self, path: str = VL_CALLS) -> dict[str, Any]:
        sep = "&" if "?" in path else "?"
        url = self.base_ws + path + (f"{sep}api-key={self.api_key}" if self.api_key else "")
        self.ws = await websockets.connect(url, max_size=None)
        self._tasks.append(asyncio.ensure_future(self._read_ws()))
        return await self.wait_ws("session.created")

    async def _read_ws(self) -> None:
        try:
            async for msg in self.ws:
                self.ws_events.append((time.monotonic(), json.loads(msg)))
                self._event.set()
        except websockets.ConnectionClosed:
            pass
        self._event.set()

    async def start(self, session: dict[str, Any] | None = None, timeout: float = 10.0) -> None:
        """Negotiate through the door and wait until the media path is connected."""
        offer = await self.make_offer()
        if self.door == "voicelive":
            if self.ws is None:
                await self.connect_ws()
            ev: dict[str, Any] = {"type": "rtc.call.sdp.create", "sdp_offer": offer}
            if session is not None:
                ev["session"] = session
            await self.ws.send(json.dumps(ev))
            got = await self.wait_ws("rtc.call.sdp.created", "rtc.call.error")
            if got["type"] == "rtc.call.error":
                raise AssertionError(f"offer refused: {got}")
            self.call_id = got["rtc_call_id"]
            answer = got["sdp_answer"]
        else:
            async with httpx.AsyncClient(base_url=self.base_http, timeout=timeout) as http:
                if session is None:
                    r = await http.post("/v1/realtime/calls", content=offer, headers={
                        **self._auth_headers(), "Content-Type": "application/sdp", "Accept": "application/sdp"})
                else:
                    r = await http.post("/v1/realtime/calls", headers=self._auth_headers(), files={
                        "sdp": (None, offer, "application/sdp"),
                        "session": (None, json.dumps(session), "application/json")})
            if r.status_code != 201:
                raise AssertionError(f"offer refused: {r.status_code} {r.text}")
            self.location = r.headers["location"]
            self.call_id = self.location.rsplit("/", 1)[-1]
            answer = r.text
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pc.connectionState != "connected" or (self.dc is not None and self.dc.readyState != "open"):
            if loop.time() > deadline:
                raise TimeoutError(f"not connected: {self.pc.connectionState}")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------ events

    def all_events(self) -> list[tuple[str, float, dict[str, Any]]]:
        evs = [("dc", t, e) for t, e in self.dc_events] + [("ws", t, e) for t, e in self.ws_events]
        return sorted(evs, key=lambda x: x[1])

    def types(self, channel: str) -> list[str]:
        src = self.dc_events if channel == "dc" else self.ws_events
        return [e["type"] for _, e in src]

    def find(self, etype: str) -> list[tuple[str, float, dict[str, Any]]]:
        return [x for x in self.all_events() if x[2]["type"] == etype]

    async def wait_for(self, *etypes: str, channel: str | None = None, timeout: float = 10.0,
                       after: int = 0) -> dict[str, Any]:
        """The first event of one of `etypes` (on `channel` if given) beyond the first `after` events."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            evs = self.all_events()[after:]
            for ch, _, ev in evs:
                if ev["type"] in etypes and (channel is None or ch == channel):
                    return ev
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {etypes} within {timeout}s; got {[e['type'] for _, _, e in evs]}")
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_ws(self, *etypes: str, timeout: float = 10.0) -> dict[str, Any]:
        return await self.wait_for(*etypes, channel="ws", timeout=timeout)

    async def send_dc(self, event: dict[str, Any]) -> None:
        assert self.dc is not None
        self.dc.send(json.dumps(event))

    async def send_ws(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    # ------------------------------------------------------------ audio

    def loud_frames(self, since: float = 0.0) -> list[Received]:
        return [f for f in self.frames if f.rms > LOUD_RMS and f.at >= since]

    def received_audio(self, rate: int = 16000) -> np.ndarray:
        if not self.frames:
            return np.zeros(0, np.int16)
        pcm = np.concatenate([f.pcm for f in self.frames])
        out: np.ndarray = soxr.resample(pcm, self.frames[0].rate, rate).astype(np.int16)
        return out

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        for t in self._tasks:
            try:
                await t
            except BaseException:
                pass
