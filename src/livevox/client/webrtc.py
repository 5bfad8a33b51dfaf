"""An aiortc client for livevox's two WebRTC doors (`livevox call --webrtc`, tests, benchmarks).

It sends anything queued with `MicTrack.say()` as its microphone track, paced in real time (one
20 ms frame per tick of a media clock, Opus-encoded by aiortc), records every received audio frame
with its arrival time and level, and keeps the events of the data channel and of the control
WebSocket apart (the Voice Live door sends session, error and tool events on the WebSocket).

ICE: only the ICE servers it is given (never aiortc's default STUN server). Host candidates follow
the same policy as the server (`transports/webrtc/ice.py`): an explicit allow-list, or aioice's
interfaces plus loopback when the target host is loopback or the machine has no other address.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import httpx
import numpy as np
import numpy.typing as npt
import soxr
import websockets
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from ..core.audio import Int16Array
from ..transports.webrtc.ice import host_address_policy
from .call import (
    EXIT_AUTH,
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_USAGE,
    RATE,
    CallError,
    RealtimeCall,
    TurnResult,
    dialect_of,
    error_reason,
    open_websocket,
    realtime_url,
    speech_bounds,
    with_query,
)

MIC_RATE = 48000
VL_CALLS = "/voice-live/realtime/calls?api-version=2026-01-01-preview&model=gpt-realtime"
OPENAI_CALLS = "/v1/realtime/calls"
CHANNEL_LABELS = {"voicelive": "voice-live-events", "openai": "oai-events"}
LOUD_RMS = 200.0  # int16 RMS above which a received frame counts as agent audio


class OfferRefused(Exception):
    """The door refused the SDP offer: `status` is the HTTP status (OpenAI door) or None
    (`rtc.call.error` on the Voice Live control WebSocket); `error` the server's error object."""

    def __init__(self, status: int | None, error: dict[str, Any], detail: str) -> None:
        super().__init__(f"offer refused: {detail}")
        self.status = status
        self.error = error


class NoLocalCandidates(Exception):
    """This client gathered no ICE candidate, so it has no offer worth sending."""


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

    def __init__(self, pcm: npt.NDArray[np.int16] | None = None) -> None:
        super().__init__()
        self._queue: list[npt.NDArray[np.int16]] = [] if pcm is None else [pcm.astype(np.int16)]
        self._marks: list[str | None] = [None] * len(self._queue)
        self.marks: dict[str, float] = {}  # mark -> monotonic time its chunk's last sample was sent
        self.speech_end_at: float | None = None  # monotonic time the last queued audio was sent
        self._pending = 0 if pcm is None else int(pcm.size)
        self.drained = asyncio.Event()  # set whenever everything queued has been sent

    def say(self, pcm: npt.NDArray[np.int16], mark: str | None = None) -> None:
        """Queue audio; with `mark`, note in `marks[mark]` when its last sample leaves."""
        self._queue.append(pcm.astype(np.int16))
        self._marks.append(mark)
        self._pending += int(pcm.size)
        self.drained.clear()

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def _take(self, n: int) -> npt.NDArray[np.int16]:
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
            self.drained.set()
        return out

    async def recv(self) -> av.AudioFrame:
        n = await self._tick()
        pcm = self._take(960)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = n * 960
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        return frame


@dataclass
class Received:
    at: float  # when the decoded frame came out of the received track
    rms: float
    pcm: npt.NDArray[np.int16]  # mono int16 at `rate`
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
    ice_servers: list[RTCIceServer] = field(default_factory=list)
    #: Host-candidate allow-list (as `webrtc.host_addresses`); empty: the automatic policy.
    host_addresses: list[str] = field(default_factory=list)
    #: Only relayed (TURN) candidates, as `iceTransportPolicy: "relay"`: checks the TURN path.
    relay_only: bool = False
    #: Query string (without `?`) added to the OpenAI door's POST.
    http_query: str = ""
    #: Called with (arrival time, event) for every event of either channel, and once when the
    #: control WebSocket closes or the peer connection fails.
    on_event: Callable[[float, dict[str, Any]], None] | None = None
    on_closed: Callable[[], None] | None = None
    pc: RTCPeerConnection = field(init=False)
    ws: Any = None
    call_id: str | None = None
    location: str | None = None
    dc_events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ws_events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    frames: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        policy = RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers), iceTransportPolicy=policy))
        self._tasks: list[asyncio.Task[Any]] = []
        self._event = asyncio.Event()
        self.dc: RTCDataChannel | None = None
        self._rtp_origin: int | None = None
        self._rtp_arrivals: dict[int, float] = {}
        self.ws_closed: websockets.ConnectionClosed | None = None

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
            self.dc = self.pc.createDataChannel(CHANNEL_LABELS.get(self.door, "oai-events"))

            def _on_message(msg: str | bytes) -> None:
                try:
                    ev = json.loads(msg)
                except ValueError:
                    return
                if isinstance(ev, dict) and isinstance(ev.get("type"), str):
                    self._arrived(self.dc_events, ev)

            self.dc.on("message", _on_message)

        @self.pc.on("connectionstatechange")
        def _on_state() -> None:
            if self.pc.connectionState == "failed":
                self._ended()

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._hook_rtp()
            self._tasks.append(asyncio.ensure_future(self._read_track(track)))

        with host_address_policy(self.host_addresses, urlsplit(self.base_http).hostname):
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
            self._event.set()

    def _arrived(self, into: list[tuple[float, dict[str, Any]]], ev: dict[str, Any]) -> None:
        t = time.monotonic()
        into.append((t, ev))
        self._event.set()
        if self.on_event is not None:
            self.on_event(t, ev)

    def _ended(self) -> None:
        self._event.set()
        if self.on_closed is not None:
            self.on_closed()

    async def connect_ws(self, path: str = VL_CALLS, open_timeout: float = 10.0) -> dict[str, Any]:
        headers = {"api-key": self.api_key} if self.api_key else {}
        self.attach_ws(await websockets.connect(self.base_ws + path, additional_headers=headers, max_size=None,
                                                open_timeout=open_timeout, ping_interval=None, compression=None))
        return await self.wait_ws("session.created", timeout=open_timeout)

    def attach_ws(self, ws: Any) -> None:
        """Use `ws`, an open connection to the Voice Live door, as the control WebSocket."""
        self.ws = ws
        self._tasks.append(asyncio.ensure_future(self._read_ws()))

    async def _read_ws(self) -> None:
        try:
            async for msg in self.ws:
                ev = json.loads(msg)
                if isinstance(ev, dict) and isinstance(ev.get("type"), str):
                    self._arrived(self.ws_events, ev)
        except websockets.ConnectionClosed as exc:
            self.ws_closed = exc
        self._ended()

    async def start(self, session: dict[str, Any] | None = None, timeout: float = 10.0) -> None:
        """Negotiate through the door and wait until the media path is connected. Raises
        `OfferRefused`, `NoLocalCandidates`, `TimeoutError`, or the transport's errors (OSError,
        httpx, websockets)."""
        offer = await self.make_offer()
        if "\na=candidate:" not in offer:
            raise NoLocalCandidates("no ICE candidate gathered")
        if self.door == "voicelive":
            if self.ws is None:
                await self.connect_ws(open_timeout=timeout)
            ev: dict[str, Any] = {"type": "rtc.call.sdp.create", "sdp_offer": offer}
            if session is not None:
                ev["session"] = session
            await self.ws.send(json.dumps(ev))
            got = await self.wait_ws("rtc.call.sdp.created", "rtc.call.error", timeout=timeout)
            if got["type"] == "rtc.call.error":
                raise OfferRefused(None, got.get("error") or {}, json.dumps(got))
            self.call_id = got["rtc_call_id"]
            answer = got["sdp_answer"]
        else:
            path = OPENAI_CALLS + (f"?{self.http_query}" if self.http_query else "")
            async with httpx.AsyncClient(base_url=self.base_http, timeout=timeout) as http:
                if session is None:
                    r = await http.post(path, content=offer, headers={
                        **self._auth_headers(), "Content-Type": "application/sdp", "Accept": "application/sdp"})
                else:
                    r = await http.post(path, headers=self._auth_headers(), files={
                        "sdp": (None, offer, "application/sdp"),
                        "session": (None, json.dumps(session), "application/json")})
            if r.status_code != 201:
                try:
                    error = r.json().get("error") or {}
                except ValueError:
                    error = {}
                raise OfferRefused(r.status_code, error if isinstance(error, dict) else {},
                                   f"{r.status_code} {r.text}")
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

    async def changed(self, timeout: float) -> None:
        """Wait until an event or an audio frame arrives, or `timeout` passes."""
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass

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
            await self.changed(remaining)

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

    def received_audio(self, rate: int = 16000, frames: list[Received] | None = None) -> npt.NDArray[np.int16]:
        """The received audio (or that of `frames`), mono at `rate`."""
        frames = self.frames if frames is None else frames
        if not frames:
            return np.zeros(0, np.int16)
        pcm = np.concatenate([f.pcm for f in frames])
        out: npt.NDArray[np.int16] = soxr.resample(pcm, frames[0].rate, rate).astype(np.int16)
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


# ---------------------------------------------------------------- `livevox call --webrtc`


class WebRTCCall(RealtimeCall):
    """The same turn as `RealtimeCall`, over WebRTC: the question goes up as the Opus microphone
    track (paced in real time), the answer comes back on the RTP track, the events on the data
    channel (and, for the Voice Live door, on the control WebSocket)."""

    audio_formats = False

    def __init__(self, client: RtcClient) -> None:
        super().__init__(None, client.door)
        self.client = client
        client.on_event = self._put
        client.on_closed = self._closed

    def _closed(self) -> None:
        self.closed = self.client.ws_closed
        self._queue.put_nowait(None)

    @classmethod
    async def open_rtc(cls, url: str, api_key: str | None = None, *, door: str | None = None,
                       ice_servers: list[RTCIceServer] | None = None, relay_only: bool = False,
                       host_addresses: list[str] | None = None, open_timeout: float = 10.0) -> WebRTCCall:
        """Negotiate a call through `door` ("voicelive" or "openai"; by default the one `url`'s
        path names) of the server at `url`, and wait for the media path and `session.created`."""
        target = urlsplit(realtime_url(url))
        door = door or dialect_of(urlunsplit(target))
        http_base = f"{'https' if target.scheme == 'wss' else 'http'}://{target.netloc}"
        latency = "livevox-latency-events=true"
        client = RtcClient(http_base, door=door, api_key=api_key, ice_servers=list(ice_servers or []),
                           relay_only=relay_only, host_addresses=list(host_addresses or []), http_query=latency)
        call = cls(client)
        try:
            if door == "voicelive":
                query = target.query if "voice-live" in target.path else urlsplit(realtime_url(http_base)).query
                ws_url = with_query(urlunsplit((target.scheme, target.netloc, "/voice-live/realtime/calls",
                                                query, "")), **{"livevox-latency-events": "true"})
                client.attach_ws(await open_websocket(ws_url, api_key, open_timeout))
                await call.expect_session_created(open_timeout)
            await client.start(timeout=open_timeout)
            if door != "voicelive":  # the OpenAI door's session.created comes on the data channel
                await call.expect_session_created(open_timeout)
        except BaseException as exc:
            await call.close()
            if isinstance(exc, OfferRefused):
                raise _refused(exc) from None
            if isinstance(exc, NoLocalCandidates):
                need = ("no TURN server answered: --ice-relay needs a reachable --ice-server turn:..." if relay_only
                        else "no local address matches --host-address, and no STUN/TURN server answered")
                raise CallError(EXIT_CONNECT, f"this client gathered no ICE candidate: {need}") from None
            if isinstance(exc, TimeoutError):
                raise CallError(EXIT_CONNECT, f"the WebRTC call did not connect within {open_timeout:g} s "
                                f"(ICE {client.pc.iceConnectionState}); check the ICE servers (--ice-server) and "
                                "that UDP reaches the server") from None
            if isinstance(exc, (OSError, httpx.TransportError)):
                raise CallError(EXIT_CONNECT, f"cannot connect to {http_base}: {error_reason(exc)}") from None
            raise
        return call

    async def send(self, event: dict[str, Any]) -> float:
        dc = self.client.dc
        if dc is None or dc.readyState != "open":
            raise CallError(EXIT_CONNECT, "the data channel is closed")
        dc.send(json.dumps(event, separators=(",", ":")))
        return time.monotonic()

    async def close(self) -> None:
        await self.client.close()

    async def spoken_turn(self, pcm: Int16Array, *, speech_end_s: float | None = None, chunk_ms: int = 20,
                          tail_silence_s: float = 1.5, timeout: float = 60.0, metrics_wait_s: float = 1.0,
                          no_speech_grace_s: float = 3.0, listen_s: float | None = None) -> TurnResult:
        """Play `pcm` (24 kHz) then `tail_silence_s` of silence into the microphone track; collect
        the turn until the agent's audio has played out (`output_audio_buffer.stopped`). The end of
        speech is when the 20 ms frame carrying its last sample left; "first audio delta" is the
        first audible RTP packet of the answer. (`listen_s` is WebSocket-only: the first audio is
        known here only once the turn has been collected.)"""
        if listen_s is not None:
            raise ValueError("listen_s is not supported over WebRTC: a turn waits for its answer to play out")
        if speech_end_s is None:
            bounds = speech_bounds(pcm)
            speech_end_s = bounds[1] if bounds else pcm.size / RATE
        mic48: Int16Array = soxr.resample(pcm, RATE, MIC_RATE, quality="HQ").astype(np.int16)
        cut = min(mic48.size, round(speech_end_s * MIC_RATE))
        mic = self.client.mic
        result = TurnResult(speech_end=time.monotonic() + speech_end_s)  # refined from the mark below
        mic.say(mic48[:cut], mark="speech_end")
        mic.say(np.concatenate([mic48[cut:], np.zeros(int(tail_silence_s * MIC_RATE), np.int16)]))
        sender = asyncio.ensure_future(mic.drained.wait())
        try:
            await self._collect(result, sender, timeout, metrics_wait_s, no_speech_grace_s)
            await self._playout(result, max(1.0, timeout))
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        result.speech_end = mic.marks.get("speech_end", result.speech_end)
        loud = [f for f in self.client.loud_frames() if f.rtp_at > result.speech_end]
        if loud:
            result.first["response.audio.delta"] = loud[0].rtp_at
            frames = self.client.frames  # the answer: first to last audible frame, pauses included
            answer = frames[frames.index(loud[0]):frames.index(loud[-1]) + 1]
            result.audio = [self.client.received_audio(RATE, answer).astype("<i2").tobytes()]
        return result

    async def _playout(self, result: TurnResult, timeout: float) -> None:
        """After `response.done`: wait until the answer's audio has played out on the RTP track
        (and for `livevox.turn.metrics` if it has not come yet)."""
        rid = (result.response or {}).get("id")

        def ended() -> bool:
            return any(e["type"] in ("output_audio_buffer.stopped", "output_audio_buffer.cleared")
                       and e.get("response_id") in (None, rid) for _, e in result.events)

        await self.record_until(result, ended, timeout)
        await self.record_until(result, lambda: result.metrics is not None, 1.0)
        await asyncio.sleep(0.15)  # the client's jitter buffer still holds the last packets


def ice_servers(urls: list[str], username: str | None = None, credential: str | None = None) -> list[RTCIceServer]:
    """`--ice-server` URLs (stun:, turn:, turns:) as ICE servers; the TURN ones get the credentials."""
    servers: list[RTCIceServer] = []
    for url in urls:
        scheme = url.split(":", 1)[0].lower()
        if scheme not in ("stun", "stuns", "turn", "turns") or ":" not in url:
            raise CallError(EXIT_USAGE, f"--ice-server {url!r}: expected stun:host[:port] or turn:host[:port]"
                            "[?transport=udp|tcp]")
        if scheme.startswith("turn"):
            if not (username and credential):
                raise CallError(EXIT_USAGE, f"--ice-server {url!r}: a TURN server needs --ice-username and "
                                "--ice-credential")
            servers.append(RTCIceServer(urls=url, username=username, credential=credential))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


def _refused(exc: OfferRefused) -> CallError:
    message = exc.error.get("message") or exc.error.get("code") or str(exc)
    if exc.status == 401:
        return CallError(EXIT_AUTH, f"authentication refused (HTTP 401): {message}; pass the key with --api-key")
    if exc.status in (404, 503):
        return CallError(EXIT_CONNECT, f"the server refused the call (HTTP {exc.status}): {message}")
    return CallError(EXIT_FAILED, f"the server refused the SDP offer: {exc.error.get('code', '')} {message}".strip())
