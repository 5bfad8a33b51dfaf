"""`livevox call`: a terminal caller. It streams a WAV file to a realtime server at real-time pace,
as a microphone would, saves the spoken answer and prints both transcripts and the per-stage
latencies of the turn.

    livevox call --wav question.wav [--url ws://127.0.0.1:8000/voice-live/realtime?...] [--out answer.wav]
    livevox call --wav question.wav --webrtc [--door voicelive|openai] [--ice-server turn:host:3478
                 --ice-username U --ice-credential P [--ice-relay]]

The URL's path picks the dialect: a path with `voice-live` speaks Voice Live (the default URL),
any other path the OpenAI GA dialect (`/v1/realtime`). `livevox-latency-events=true` is added
to the query so a livevox server reports its own stage timings (`livevox.turn.metrics`);
other servers ignore it.

With `--webrtc` the same turn goes over WebRTC (aiortc, `client/webrtc.py`): through the Voice
Live door (`/voice-live/realtime/calls`, `rtc.call.sdp.create` on its control WebSocket) or the
OpenAI door (`POST /v1/realtime/calls`), the door named by `--door` or else by the URL's path. The
question is the microphone track (Opus RTP at real-time pace), the answer the received track; the
events come on the data channel (and the control WebSocket). Only the ICE servers given with
`--ice-server` are used; `--ice-relay` allows relayed (TURN) candidates only, to check a
deployment's TURN path. Host candidates: `--host-address` (an allow-list, as
`webrtc.host_addresses`), else every non-loopback address, plus loopback when the server's host
is loopback or the machine has no other address.

Timing model: audio sample `s` of the question is "spoken" at `t0 + s / 24000`, and each append
leaves when its last sample has been spoken (a microphone cannot send audio before it is
captured). The end of speech is the last 10 ms frame whose energy is within 35 dB of the
loudest frame (and above -50 dBFS); every client latency is measured from that moment.

The pieces (`load_wav`, `RealtimeCall`, `TurnResult`) are reused by `benchmarks/`.

Exit codes: 0 ok (response `completed`, or `incomplete` when cut at the output-token limit);
1 the server answered with an error, a failed or cancelled response, or no audio;
2 bad input (unreadable WAV, bad URL); 3 authentication refused (HTTP 401);
4 cannot connect, server busy/not ready (HTTP 503), or the connection dropped; 5 timed out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import soxr
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..core.audio import SESSION_RATE, Int16Array, StreamResampler
from ..core.protocol_names import CANONICAL_EVENT_NAMES, is_voice_live_path

RATE = 24000

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_CONNECT = 4
EXIT_TIMEOUT = 5

#: GA event names -> the canonical (Voice Live / beta) names this client works with.

#: Client-side intervals, measured from the end of the user's speech (event type -> label).
CLIENT_MARKS = (
    ("input_audio_buffer.speech_stopped", "speech_stopped"),
    ("conversation.item.input_audio_transcription.completed", "transcription.completed"),
    ("response.created", "response.created"),
    ("response.audio.delta", "first audio delta"),
    ("response.done", "response.done (total)"),
)

#: Server stages of `livevox.turn.metrics`, in turn order.
SERVER_STAGES = ("eot_decision", "transcript_final", "llm_first_token", "first_clause", "tts_first_audio",
                 "first_audio_sent")


class CallError(Exception):
    """A failure with the exit code it maps to."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- audio


def _decode_wav(data: bytes) -> tuple[npt.NDArray[np.float32], int]:
    """A RIFF/WAVE file -> (float32 frames x channels, rate). PCM 8/16/24/32-bit and float 32/64."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None or len(fmt) < 16:
        raise ValueError("missing 'fmt ' or 'data' chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
        tag = struct.unpack("<H", fmt[24:26])[0]
    if channels < 1 or rate < 1:
        raise ValueError("bad channel count or sample rate")
    width = bits // 8
    usable = len(payload) // (width * channels) * width * channels
    raw = payload[:usable]
    x: npt.NDArray[Any]
    if tag == 1 and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif tag == 1 and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    elif tag == 3 and bits in (32, 64):
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise ValueError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    return x.reshape(-1, channels), rate


def load_wav(path: str | Path) -> Int16Array:
    """Any WAV file -> mono 24 kHz PCM16 (channels averaged, resampled with soxr)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CallError(EXIT_USAGE, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        frames, rate = _decode_wav(data)
    except (ValueError, struct.error) as exc:
        raise CallError(EXIT_USAGE, f"{path} is not a usable WAV file: {exc}") from None
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    if rate != RATE and mono.size:
        mono = soxr.resample(mono, rate, RATE, quality="HQ").astype(np.float32)
    if mono.size == 0:
        raise CallError(EXIT_USAGE, f"{path} holds no audio")
    out: Int16Array = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
    return out


def speech_bounds(pcm: Int16Array, rate: int = RATE) -> tuple[float, float] | None:
    """(start, end) of the speech in seconds, by energy: 10 ms frames within 35 dB of the loudest
    frame and above -50 dBFS. None if nothing qualifies."""
    n = rate // 100
    if pcm.size < n:
        return None
    frames = pcm[: pcm.size // n * n].astype(np.float64).reshape(-1, n) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    peak = float(rms.max())
    threshold = max(peak * 10 ** (-35 / 20), 10 ** (-50 / 20))
    loud = np.flatnonzero(rms >= threshold)
    if loud.size == 0:
        return None
    return float(loud[0] * n / rate), float((loud[-1] + 1) * n / rate)


def write_wav(path: str | Path, pcm: Int16Array, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


# ---------------------------------------------------------------- URL and dialect


def with_query(url: str, **params: str) -> str:
    """`url` with these query parameters set (existing ones kept unless overridden)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def realtime_url(url: str) -> str:
    """Accept a bare server address (`ws://host:port`, or `http(s)://`): the Voice Live endpoint."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if parts.path in ("", "/"):
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.setdefault("api-version", "2026-07-15")
        query.setdefault("model", "livevox")
        return urlunsplit((scheme, parts.netloc, "/voice-live/realtime", urlencode(query), parts.fragment))
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def dialect_of(url: str) -> str:
    return "voicelive" if is_voice_live_path(urlsplit(url).path) else "openai"


def session_update(dialect: str, turn_detection: dict[str, Any] | None, transcription: bool = True,
                   formats: bool = True) -> dict[str, Any]:
    """A `session.update` in the dialect's shape, for pcm16 24 kHz both ways (`formats`; over
    WebRTC the audio is RTP, so the formats are left out)."""
    tr = {"model": "whisper-1"} if transcription else None
    if dialect == "voicelive":
        session: dict[str, Any] = {"modalities": ["text", "audio"], "turn_detection": turn_detection,
                                   "input_audio_transcription": tr}
        if formats:
            session.update(input_audio_format="pcm16", input_audio_sampling_rate=RATE, output_audio_format="pcm16")
    else:
        audio_in: dict[str, Any] = {"transcription": tr, "turn_detection": turn_detection}
        session = {"type": "realtime", "output_modalities": ["audio"], "audio": {"input": audio_in}}
        if formats:
            audio_in["format"] = {"type": "audio/pcm", "rate": RATE}
            session["audio"]["output"] = {"format": {"type": "audio/pcm", "rate": RATE}}
    return {"type": "session.update", "session": session}


# ---------------------------------------------------------------- the connection


async def open_websocket(url: str, api_key: str | None, open_timeout: float) -> ClientConnection:
    """Open a realtime WebSocket; failures become CallErrors with their exit codes."""
    headers = {"api-key": api_key} if api_key else {}
    try:
        return await websockets.connect(url, additional_headers=headers, max_size=None,
                                        open_timeout=open_timeout, ping_interval=None, compression=None)
    except InvalidURI as exc:
        raise CallError(EXIT_USAGE, f"bad URL {url!r}: {exc}") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        detail = _error_body(exc.response.body)
        if status == 401:
            raise CallError(EXIT_AUTH, f"authentication refused (HTTP {status}){detail}; "
                            "pass the key with --api-key") from None
        if status in (403, 404):  # Starlette's answer to a WebSocket on a path it does not route
            raise CallError(EXIT_CONNECT, f"no realtime endpoint at {_redact(url)} (HTTP {status}); "
                            "use /voice-live/realtime or /v1/realtime") from None
        raise CallError(EXIT_CONNECT, f"the server refused the WebSocket (HTTP {status}){detail}") from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise CallError(EXIT_CONNECT, f"cannot connect to {_redact(url)}: {error_reason(exc)}") from None


def error_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__


@dataclass
class TurnResult:
    """What one turn looked like from the client. Times are `time.monotonic()` seconds."""

    speech_end: float  # wall time the user's speech ended (client side)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)  # canonical type -> first arrival
    user_transcript: str | None = None
    agent_transcript: str = ""
    audio: list[bytes] = field(default_factory=list)
    metrics: dict[str, float] | None = None  # livevox.turn.metrics stages_ms
    response: dict[str, Any] | None = None  # the response.done resource
    errors: list[dict[str, Any]] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)  # when each append of the turn left
    clocks: list[int] = field(default_factory=list)  # a livevox session's 16 kHz clock after each append
    commit_sent: float | None = None  # manual turns

    def after_speech_ms(self, etype: str) -> float | None:
        t = self.first.get(etype)
        return None if t is None else (t - self.speech_end) * 1000.0

    def after_commit_ms(self, etype: str) -> float | None:
        t = self.first.get(etype)
        return None if t is None or self.commit_sent is None else (t - self.commit_sent) * 1000.0

    def answer_pcm(self) -> Int16Array:
        if not self.audio:
            return np.zeros(0, np.int16)
        return np.frombuffer(b"".join(self.audio), "<i2").astype(np.int16)

    def speech_stopped_event_ms(self) -> float | None:
        """Event latency of `speech_stopped`: from the append that carried the sample closing the
        silence window (its `audio_end_ms` on a livevox session's 16 kHz clock) to the event's
        arrival. `clocks` replays every append of the session through the same streaming resampler
        as a livevox session (24 kHz -> 16 kHz, soxr HQ), whose output count is the session's
        audio clock: the first append after which the clock reaches `audio_end_ms` is the one that
        triggered the decision. Meaningful against livevox only.
        """
        got = self.first.get("input_audio_buffer.speech_stopped")
        ev = next((e for _, e in self.events if e["type"] == "input_audio_buffer.speech_stopped"), None)
        if got is None or ev is None or not isinstance(ev.get("audio_end_ms"), int):
            return None
        target = ev["audio_end_ms"] * SESSION_RATE // 1000
        for clock, sent in zip(self.clocks, self.send_times, strict=False):
            if clock >= target:
                return (got - sent) * 1000.0
        return None


class RealtimeCall:
    """One realtime WebSocket session, from the client's side."""

    #: The session carries audio in events (pcm16 24 kHz both ways), not over RTP.
    audio_formats = True

    def __init__(self, ws: ClientConnection | None, dialect: str) -> None:
        self.ws = ws
        self.dialect = dialect
        self.session: dict[str, Any] | None = None
        self._queue: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read()) if ws is not None else None  # else: `_put` feeds it
        self.closed: ConnectionClosed | None = None
        # The server's audio clock, replayed (see TurnResult.speech_stopped_event_ms).
        self._clock_rs = StreamResampler(RATE, SESSION_RATE)
        self.server_clock = 0

    @classmethod
    async def open(cls, url: str, api_key: str | None = None, *, latency_events: bool = True,
                   open_timeout: float = 10.0) -> RealtimeCall:
        url = realtime_url(url)
        if latency_events:
            url = with_query(url, **{"livevox-latency-events": "true"})
        call = cls(await open_websocket(url, api_key, open_timeout), dialect_of(url))
        await call.expect_session_created(open_timeout)
        return call

    async def expect_session_created(self, timeout: float) -> None:
        first = await self.next_event(timeout)
        if first["type"] != "session.created":
            await self.close()
            raise CallError(EXIT_FAILED, f"expected session.created first, got {first['type']}: "
                            f"{_short(first)}")
        self.session = first.get("session")

    def _put(self, t: float, ev: dict[str, Any]) -> None:
        """Queue a server event under its canonical name."""
        ev = {**ev, "type": CANONICAL_EVENT_NAMES.get(ev["type"], ev["type"])}
        self._queue.put_nowait((t, ev))

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                t = time.monotonic()
                try:
                    ev = json.loads(message)
                except ValueError:
                    continue
                if isinstance(ev, dict) and isinstance(ev.get("type"), str):
                    self._put(t, ev)
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            self._queue.put_nowait(None)

    async def next_timed(self, timeout: float | None) -> tuple[float, dict[str, Any]]:
        """The next server event and its arrival time; CallError when the connection ends."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise CallError(EXIT_TIMEOUT, "timed out waiting for the server") from None
        if item is None:
            self._queue.put_nowait(None)  # stays closed for later readers
            rcvd = self.closed.rcvd if self.closed is not None else None
            why = f" (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})" if rcvd else ""
            raise CallError(EXIT_CONNECT, f"the server closed the connection{why}")
        return item

    async def next_event(self, timeout: float | None) -> dict[str, Any]:
        return (await self.next_timed(timeout))[1]

    async def send(self, event: dict[str, Any]) -> float:
        """Send an event; return when it left."""
        assert self.ws is not None
        try:
            await self.ws.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed:
            raise CallError(EXIT_CONNECT, "the server closed the connection") from None
        return time.monotonic()

    async def configure(self, turn_detection: dict[str, Any] | None = None, *, vad: bool = True,
                        transcription: bool = True, timeout: float = 10.0) -> dict[str, Any]:
        td = (turn_detection or {"type": "server_vad"}) if vad else None
        await self.send(session_update(self.dialect, td, transcription, formats=self.audio_formats))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = await self.next_event(max(0.01, deadline - loop.time()))
            if ev["type"] == "session.updated":
                self.session = ev.get("session")
                return ev
            if ev["type"] == "error":
                raise CallError(EXIT_FAILED, f"session.update refused: {_err(ev)}")

    async def append(self, pcm: Int16Array) -> float:
        """Append 24 kHz audio; return when it left."""
        sent = await self.send({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")})
        self.server_clock += self._clock_rs.process(np.zeros(pcm.size, np.int16)).size
        return sent

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader

    # ------------------------------------------------------------ turns

    async def spoken_turn(self, pcm: Int16Array, *, speech_end_s: float | None = None, chunk_ms: int = 20,
                          tail_silence_s: float = 1.5, timeout: float = 60.0, metrics_wait_s: float = 1.0,
                          no_speech_grace_s: float = 3.0, listen_s: float | None = None) -> TurnResult:
        """Stream `pcm` (24 kHz) then `tail_silence_s` of silence at real-time pace; collect the
        server-VAD turn until `response.done` (and the `livevox.turn.metrics` after it), or, with
        `listen_s`, until that long after the answer's first audio if it is still going on (the
        caller's next words then interrupt it). Events of earlier responses are not the turn's."""
        if speech_end_s is None:
            bounds = speech_bounds(pcm)
            speech_end_s = bounds[1] if bounds else pcm.size / RATE
        audio = np.concatenate([pcm, np.zeros(int(tail_silence_s * RATE), np.int16)])
        t0 = time.monotonic()
        result = TurnResult(speech_end=t0 + speech_end_s)
        sender = asyncio.create_task(self.stream_paced(audio, chunk_ms, t0, result))
        try:
            await self._collect(result, sender, timeout, metrics_wait_s, no_speech_grace_s, listen_s)
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        return result

    async def manual_turn(self, pcm: Int16Array, *, timeout: float = 60.0, settle_s: float = 0.05,
                          metrics_wait_s: float = 1.0) -> TurnResult:
        """Manual turn (turn_detection null): append all of `pcm` at once, let the server take it in,
        then commit + response.create; times are measured from the commit."""
        step = RATE // 10
        for i in range(0, pcm.size, step):
            await self.append(pcm[i:i + step])
        await asyncio.sleep(settle_s)
        result = TurnResult(speech_end=time.monotonic())
        result.commit_sent = await self.send({"type": "input_audio_buffer.commit"})
        result.speech_end = result.commit_sent
        await self.send({"type": "response.create"})
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        await self._collect(result, done, timeout, metrics_wait_s, None)
        return result

    async def stream_paced(self, audio: Int16Array, chunk_ms: int, t0: float, result: TurnResult) -> None:
        """Append 24 kHz audio at real-time pace, `chunk_ms` per append, paced against the monotonic
        clock from `t0` (sample 0): each append leaves once its last sample has been 'spoken'."""
        step = max(1, RATE * chunk_ms // 1000)
        for i in range(0, audio.size, step):
            end = min(i + step, audio.size)
            delay = t0 + end / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = await self.append(audio[i:end])
            result.send_times.append(sent)
            result.clocks.append(self.server_clock)

    async def _collect(self, result: TurnResult, sender: asyncio.Future[Any], timeout: float,
                       metrics_wait_s: float, no_speech_grace_s: float | None,
                       listen_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sender_done_at: float | None = None
        response_id: str | None = None
        while True:
            now = loop.time()
            heard = result.first.get("response.audio.delta")
            listened = heard + listen_s if listen_s is not None and heard is not None else None
            if listened is not None and now >= listened:
                return  # listened long enough; the answer goes on until the caller speaks again
            if now >= deadline:
                seen = ", ".join(sorted(result.first)) or "nothing"
                raise CallError(EXIT_TIMEOUT, f"no complete answer within {timeout:g} s (once the answer "
                                f"has begun: of its latest event; seen: {seen})")
            wait = (deadline if listened is None else min(deadline, listened)) - now
            if no_speech_grace_s is not None and "input_audio_buffer.speech_started" not in result.first:
                if sender.done():
                    failure = sender.exception()
                    if failure is not None:
                        raise failure
                    sender_done_at = sender_done_at or now
                    if now - sender_done_at >= no_speech_grace_s:
                        raise CallError(EXIT_FAILED, "the server's VAD heard no speech in the audio "
                                        "(no input_audio_buffer.speech_started)")
                    wait = min(wait, no_speech_grace_s - (now - sender_done_at))
                else:
                    wait = min(wait, 0.25)
            try:
                t, ev = await self.next_timed(max(0.005, wait))
            except CallError as exc:
                if exc.code == EXIT_TIMEOUT:
                    continue
                raise
            etype = ev["type"]
            rid = ev.get("response_id") or (ev.get("response") or {}).get("id")
            if etype.startswith("response.") and etype != "response.created" and rid is not None \
                    and rid != response_id:
                continue  # an earlier answer's tail (still playing when this turn began)
            if response_id is not None and rid == response_id:
                # The answer is coming: the timeout counts from its latest event, so a long answer
                # that the server paces to its playback (llm.pace_ahead_s) is not cut short.
                deadline = max(deadline, loop.time() + timeout)
            result.events.append((t, ev))
            result.first.setdefault(etype, t)
            if etype == "error":
                result.errors.append(ev.get("error") or {})
                if response_id is None and "input_audio_buffer.speech_stopped" in result.first:
                    raise CallError(EXIT_FAILED, f"the server answered the turn with an error: {_err(ev)}")
                if result.commit_sent is not None and response_id is None:
                    raise CallError(EXIT_FAILED, f"the server answered the turn with an error: {_err(ev)}")
            elif etype == "conversation.item.input_audio_transcription.completed":
                result.user_transcript = str(ev.get("transcript") or "").strip()
            elif etype == "conversation.item.input_audio_transcription.failed":
                result.user_transcript = ""
                result.errors.append(ev.get("error") or {})
            elif etype == "response.created":
                response_id = response_id or (ev.get("response") or {}).get("id")
            elif etype == "response.audio.delta" and isinstance(ev.get("delta"), str):
                result.audio.append(base64.b64decode(ev["delta"]))
            elif etype == "response.audio_transcript.delta" and isinstance(ev.get("delta"), str):
                result.agent_transcript += ev["delta"]
            elif etype == "response.audio_transcript.done" and isinstance(ev.get("transcript"), str):
                result.agent_transcript = ev["transcript"]
            elif etype == "response.text.done" and isinstance(ev.get("text"), str) and not result.agent_transcript:
                result.agent_transcript = ev["text"]
            elif etype == "response.done":
                result.response = ev.get("response") or {}
                break
        # The opt-in metrics event follows response.done; wait for it a little.
        await self.record_until(result, lambda: result.metrics is not None, metrics_wait_s)

    async def record_until(self, result: TurnResult, done: Callable[[], bool], timeout: float) -> None:
        """Record further events of the turn (and its `livevox.turn.metrics`) until `done()`, the
        timeout, or the end of the connection."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not done() and loop.time() < end:
            try:
                t, ev = await self.next_timed(max(0.005, end - loop.time()))
            except CallError as exc:
                if exc.code in (EXIT_TIMEOUT, EXIT_CONNECT):
                    return
                raise
            result.events.append((t, ev))
            result.first.setdefault(ev["type"], t)
            if ev["type"] == "livevox.turn.metrics" and result.metrics is None:
                stages = ev.get("stages_ms")
                result.metrics = stages if isinstance(stages, dict) else {}


# ---------------------------------------------------------------- CLI


def _error_body(body: bytes | bytearray | None) -> str:
    if not body:
        return ""
    try:
        err = json.loads(body).get("error") or {}
        msg = err.get("message") or err.get("code")
        return f": {msg}" if msg else ""
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        return f": {text[:200]}" if text else ""


def _err(ev: dict[str, Any]) -> str:
    e = ev.get("error") or {}
    code = e.get("code") or e.get("type") or "error"
    return f"{code}: {e.get('message', '')}".strip()


def _short(ev: dict[str, Any]) -> str:
    return json.dumps(ev)[:300]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, "***" if k.lower() in ("api-key", "authorization") else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
