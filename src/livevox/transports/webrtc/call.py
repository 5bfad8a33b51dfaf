"""One WebRTC call: the peer connection both doors share.

`RtcCall.negotiate(offer)` builds the `RTCPeerConnection` (ICE servers and host-candidate policy
from the settings and the server's bind address, never aiortc's default STUN server), adds the
agent's audio track with the codec chosen from the offer (Opus 48 kHz mono/stereo, else
PCMU/PCMA), applies the offer and returns the answer (non-trickle: host candidates are gathered
before it returns).

Afterwards the call reads the user's audio track into the session, carries client events from
the data channel to the session, reports playback (`output_audio_buffer.*`), and watches ICE.
`close(reason)` ends everything (peer connection, tracks, tasks, session, sockets) exactly once;
it runs when the control WebSocket closes, on hangup, when ICE fails or goes quiet past
`webrtc.ice_disconnect_timeout_seconds`, and when the session ends itself (limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ...core.ids import new_id
from ...settings import WebRTCSettings
from .ice import advertise_nat_1to1, host_address_policy, rtc_configuration
from .inbound_audio import decode_on_loop, pump_inbound
from .metrics import CALL_ERRORS_TOTAL, CALLS_ACTIVE, CALLS_ENDED_TOTAL, CALLS_TOTAL
from .outbound_track import AgentAudioTrack
from .sdp import CallSetupError, Offer

if TYPE_CHECKING:
    from ...realtime.session import RealtimeSession

log = logging.getLogger("livevox.webrtc")

Door = Literal["voicelive", "openai"]
CHANNEL_LABELS: dict[Door, str] = {"voicelive": "voice-live-events", "openai": "oai-events"}
#: Client events queued from the data channel before the session reads them.
_MAX_INBOX = 1024
#: Close a call whose data channel holds this much unsent data (the client stopped reading).
_MAX_BUFFERED = 8 * 1024 * 1024


class RtcCall:
    def __init__(self, *, door: Door, settings: WebRTCSettings, call_id: str | None = None,
                 listen_host: str | None = None) -> None:
        self.id = call_id or new_id("rtc")
        self.door = door
        self.settings = settings
        self.listen_host = listen_host  # the server's bind address: loopback adds loopback candidates
        self.session: RealtimeSession | None = None
        self.pc: RTCPeerConnection | None = None
        self.track: AgentAudioTrack | None = None
        self.channel: RTCDataChannel | None = None
        self.state: Literal["new", "negotiating", "active", "closed"] = "new"
        self.end_reason: str | None = None
        self.ended = asyncio.Event()
        self.connected_at: float | None = None
        self.decodes_on_loop = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue(_MAX_INBOX)
        self._playout: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._close_task: asyncio.Task[None] | None = None
        self._on_channel_open: list[Callable[[RTCDataChannel], None]] = []
        self._on_close: list[Callable[[str], Awaitable[None]]] = []
        self._rx_packets = 0
        self._rx_changed = time.monotonic()
        self._counted = False

    # ------------------------------------------------------------ wiring

    def attach(self, session: RealtimeSession) -> None:
        self.session = session
        self._spawn(self._read_inbox(session))
        self._spawn(self._report_playout(session))

    def on_channel_open(self, fn: Callable[[RTCDataChannel], None]) -> None:
        self._on_channel_open.append(fn)

    def on_close(self, fn: Callable[[str], Awaitable[None]]) -> None:
        self._on_close.append(fn)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as part of the call (cancelled when the call ends)."""
        return self._spawn(coro)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def send_text(self, text: str) -> bool:
        """Send on the data channel; False if it is not open."""
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return False
        try:
            ch.send(text)
        except Exception:  # the association is going away; the monitor ends the call
            return False
        if ch.bufferedAmount > _MAX_BUFFERED:
            self.request_close("data_channel_backlog")
        return True

    # ------------------------------------------------------------ negotiation

    async def negotiate(self, offer: Offer) -> str:
        """Apply a validated offer; return the SDP answer. Raises CallSetupError (the call stays usable
        for another offer if this one failed)."""
        if self.state != "new":
            raise CallSetupError("call_already_negotiated", "This call already has an SDP offer; a call takes "
                             "exactly one offer. Open a new call for a new peer connection.", status=409)
        self.state = "negotiating"
        pc = RTCPeerConnection(rtc_configuration(self.settings))
        track = AgentAudioTrack(offer.codec, self.settings.opus_bitrate, on_event=self._playout_event)
        self.pc, self.track = pc, track  # so that a close during negotiation frees them
        try:
            transceiver = pc.addTransceiver(track, direction="sendrecv")
            transceiver.setCodecPreferences([offer.codec.capability()])
            pc.on("track", self._on_track)
            pc.on("datachannel", self._on_datachannel)
            pc.on("connectionstatechange", self._on_connection_state)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            self.decodes_on_loop = decode_on_loop(transceiver.receiver)
            answer = await pc.createAnswer()
            with host_address_policy(self.settings.host_addresses, self.listen_host):
                await pc.setLocalDescription(answer)
            if self.state != "negotiating":
                raise CallSetupError("call_closed", "The call ended during negotiation.", status=410)
            local = pc.localDescription
            if not any(line.startswith("a=candidate:") for line in local.sdp.splitlines()):
                raise CallSetupError("no_ice_candidates", "The server has no ICE candidate to offer: no "
                                 "interface matches webrtc.host_addresses (or, with it empty, the "
                                 "machine has no address at all) and no STUN/TURN server is set.",
                                 status=500, type_="server_error")
        except Exception as exc:
            if self.state == "negotiating":
                self.state = "new"
                self.pc = self.track = None
            track.stop()
            with contextlib.suppress(Exception):
                await pc.close()
            if isinstance(exc, CallSetupError):
                raise
            log.info("call %s: offer refused by the WebRTC stack: %s", self.id, exc)
            raise CallSetupError("invalid_sdp", f"The SDP offer could not be applied: {exc}") from None
        self.state = "active"
        self._counted = True
        CALLS_TOTAL.labels(self.door).inc()
        CALLS_ACTIVE.labels(self.door).inc()
        self._spawn(self._watch_ice())
        return advertise_nat_1to1(local.sdp, self.settings.nat_1to1_ip)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.session is not None:
            self._spawn(pump_inbound(track, self.session))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        expected = CHANNEL_LABELS[self.door]
        if self.channel is None or (channel.label == expected and self.channel.label != expected):
            self.channel = channel

        @channel.on("message")
        def _message(data: str | bytes) -> None:
            try:
                self._inbox.put_nowait(data)
            except asyncio.QueueFull:
                log.warning("call %s: data channel inbox full, event dropped", self.id)

        def _opened() -> None:
            if channel is self.channel:
                for fn in self._on_channel_open:
                    fn(channel)

        if channel.readyState == "open":
            _opened()
        else:
            channel.on("open", _opened)

    def _on_connection_state(self) -> None:
        pc = self.pc
        if pc is None:
            return
        if pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        elif pc.connectionState in ("failed", "closed") and self.state == "active":
            self.request_close(_ended_by(pc.connectionState))

    # ------------------------------------------------------------ running

    async def _read_inbox(self, session: RealtimeSession) -> None:
        while True:
            data = await self._inbox.get()
            await session.handle_frame(data)

    def _playout_event(self, kind: str, response_id: str) -> None:
        self._playout.put_nowait((kind, response_id))

    async def _report_playout(self, session: RealtimeSession) -> None:
        while True:
            kind, response_id = await self._playout.get()
            await session.emit({"type": f"output_audio_buffer.{kind}", "response_id": response_id})

    def _received_packets(self) -> int:
        pc = self.pc
        if pc is None:
            return 0
        total = 0
        for t in pc.getTransceivers():
            with contextlib.suppress(Exception):
                for stats in t.receiver.transport._get_stats().values():
                    total += int(getattr(stats, "packetsReceived", 0) or 0)
        return total

    async def _watch_ice(self) -> None:
        """End the call when ICE does not connect, fails, or nothing arrives for the timeout."""
        timeout = self.settings.ice_disconnect_timeout_seconds
        started = time.monotonic()
        while self.state == "active":
            await asyncio.sleep(min(1.0, timeout / 4))
            pc = self.pc
            if pc is None:
                return
            now = time.monotonic()
            if pc.connectionState in ("failed", "closed"):
                self.request_close(_ended_by(pc.connectionState))
                return
            if pc.connectionState != "connected":
                if now - started > timeout:
                    self.request_close("ice_timeout")
                    return
                continue
            rx = self._received_packets()
            if rx != self._rx_packets:
                self._rx_packets, self._rx_changed = rx, now
            elif now - self._rx_changed > timeout:
                self.request_close("ice_disconnected")
                return

    # ------------------------------------------------------------ ending

    def request_close(self, reason: str) -> asyncio.Task[None]:
        """Start ending the call (idempotent); returns the task that does it."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._teardown(reason))
        return self._close_task

    async def close(self, reason: str) -> None:
        """End the call and wait until everything is freed. Idempotent; safe from any task (the
        teardown runs in its own task, so cancelling the caller does not interrupt it)."""
        task = self.request_close(reason)
        if task is not asyncio.current_task():
            await asyncio.shield(task)

    async def _teardown(self, reason: str) -> None:
        self.state = "closed"
        self.end_reason = reason
        log.info("call %s (%s) ended: %s", self.id, self.door, reason)
        CALLS_ENDED_TOTAL.labels(reason).inc()
        if reason in ("ice_failed", "ice_timeout", "ice_disconnected"):
            CALL_ERRORS_TOTAL.labels(reason).inc()
        if self._counted:
            CALLS_ACTIVE.labels(self.door).dec()
        me = asyncio.current_task()
        for task in list(self._tasks):
            if task is not me:
                task.cancel()
        for task in list(self._tasks):
            if task is not me:
                with contextlib.suppress(BaseException):
                    await task
        self._tasks.clear()
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        for fn in self._on_close:
            with contextlib.suppress(Exception):
                await fn(reason)
        self._on_close.clear()
        self._on_channel_open.clear()
        self.channel = None
        self.pc = None
        self.track = None
        self.session = None
        self.ended.set()


def _ended_by(connection_state: str) -> str:
    """The end reason for a peer connection that left service: "failed" is ICE/DTLS failing (an
    error); "closed" is the peer closing its side (DTLS close_notify), a normal hang-up."""
    return "ice_failed" if connection_state == "failed" else "peer_closed"
