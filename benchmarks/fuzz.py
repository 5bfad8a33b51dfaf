"""A seeded protocol fuzzer: mutated event sequences of the three dialects, plus raw garbage, over
many concurrent WebSocket sessions and (for `--dc-share` of the frames) WebRTC data channels.

    .venv/bin/python benchmarks/fuzz.py --frames 1000000 --seed 1

It starts its own server (scripted engines, a subprocess) unless given `--url`, and prints one
JSON summary: frames sent, error events received, sessions the server closed (documented limit
closes apart), whether the server process is still alive, its RSS at the start and the end, and
every frame that had to get an error but did not. Each session ends with a marker event whose
error proves that the server read every frame before it (frames are handled in order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from latency import ServerProcess  # noqa: E402

DIALECTS = [
    ("/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime", {}),
    ("/v1/realtime?model=gpt-realtime", {}),
    ("/v1/realtime?model=gpt-realtime", {"OpenAI-Beta": "realtime=v1"}),
]
#: Close reasons the server documents (limits): not counted as unexpected closes.
LIMIT_CLOSES = {"idle_timeout", "session_expired"}
#: The data channel's SCTP limit (the server advertises 256 KiB messages).
DC_MAX = 256 * 1024
ODD = ["\ud83d", "\udc00", "\x00", "\u202e", "\u2066", "\ufeff", "\uffff", "\U0010ffff", "\\", '"', "\n",
       "\u200b", "\U0001f600", "é"]


def _audio(rng: random.Random) -> str:
    import base64
    return base64.b64encode(rng.randbytes(rng.choice([0, 2, 3, 480, 4800]))).decode()


def _item(rng: random.Random) -> dict[str, Any]:
    role = rng.choice(["user", "assistant", "system"])
    part = "input_text" if role != "assistant" else rng.choice(["text", "output_text"])
    return {"type": "message", "role": role, "content": [{"type": part, "text": rng.choice(["hi", "ok", ""])}]}


def base_event(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    """One valid-looking client event (any dialect); wrong-state calls included on purpose."""
    some_id = rng.choice(ids) if ids and rng.random() < 0.7 else f"item_missing{rng.randrange(99)}"
    choices: list[dict[str, Any]] = [
        {"type": "session.update", "session": {"instructions": "Be brief.", "temperature": 0.8}},
        {"type": "session.update", "session": {"type": "realtime", "voice": rng.choice(["alloy", "nope", 5]),
                                               "turn_detection": rng.choice([None, {"type": "server_vad"}])}},
        {"type": "session.update", "session": {"modalities": ["text"], "output_modalities": ["text"]}},
        {"type": "conversation.item.create", "item": _item(rng)},
        {"type": "conversation.item.create", "previous_item_id": some_id, "item": _item(rng)},
        {"type": "conversation.item.retrieve", "item_id": some_id},
        {"type": "conversation.item.delete", "item_id": some_id},
        {"type": "conversation.item.truncate", "item_id": some_id, "content_index": 0,
         "audio_end_ms": rng.randrange(-5, 5000)},
        {"type": "input_audio_buffer.append", "audio": _audio(rng)},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "output_audio_buffer.clear"},
        {"type": "response.create", "response": {"modalities": ["text"], "output_modalities": ["text"]}},
        {"type": "response.create"},
        {"type": "response.cancel"},
        {"type": "response.cancel", "response_id": "resp_nope"},
        {"type": rng.choice(["session.close", "rtc.call.sdp.create", "x.y", ""])},
    ]
    return rng.choice(choices)


def _odd_string(rng: random.Random) -> str:
    if rng.random() < 0.002:
        return rng.choice("ab\u202e") * rng.choice([100_000, 300_000])  # rare: large strings
    return "".join(rng.choice([*ODD, "a", "b"]) for _ in range(rng.randrange(1, 12)))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _set(node[path[0]], path[1:], value)
    return node


@dataclass
class Frame:
    data: str | bytes
    #: The frame is invalid whatever the server's state: it must get an error.
    must_error: bool
    #: The event_id the error must echo (None: the frame's id cannot be read, or it has none).
    event_id: str | None


def mutate(rng: random.Random, ev: dict[str, Any], event_id: str) -> Frame:
    """`ev` with one mutation, tagged `event_id` (which the mutations never remove)."""
    op = rng.random()
    if op < 0.12:  # garbage: random bytes, text, binary frames, non-objects
        kind = rng.randrange(5)
        if kind == 0:
            return Frame(rng.randbytes(rng.randrange(1, 64)), True, None)
        if kind == 1:
            return Frame("".join(rng.choice('{}[]",:0aé\x00\\') for _ in range(rng.randrange(1, 40))),
                         True, None)
        if kind == 2:
            return Frame(json.dumps(rng.choice([[], 1, "s", None, True])), True, None)
        if kind == 3:
            return Frame(json.dumps(ev)[: rng.randrange(1, max(2, len(json.dumps(ev))))], True, None)
        return Frame(b'{"type":"session.update"}', False, None)  # binary frame holding valid JSON
    ev = {**json.loads(json.dumps(ev)), "event_id": event_id}
    if op < 0.2:  # deep nesting or too many keys/items (bounded by limits.max_json_*)
        kind = rng.randrange(3)
        depth = rng.choice([70, 1000, 100_000])
        if kind == 0:
            return Frame("[" * depth + "]" * depth, True, None)
        if kind == 1:
            return Frame(json.dumps({**ev, "extra": {str(i): 0 for i in range(1001)}}), True, None)
        return Frame(json.dumps({**ev, "extra": [0] * 10_001}), True, None)
    paths = [p for p in _paths(ev) if p and p[0] != "event_id"]
    path = rng.choice(paths)
    if op < 0.4:  # odd strings anywhere (a lone surrogate makes the frame invalid)
        s = _odd_string(rng)
        ev = _set(ev, path, s)
        # What the server reads: JSON joins an escaped high+low pair into one character.
        bad = any(0xD800 <= ord(c) <= 0xDFFF for c in json.loads(json.dumps(s)))
        return Frame(json.dumps(ev), bad, event_id)
    if op < 0.55:  # change a value's type
        ev = _set(ev, path, rng.choice([None, True, -1, 1.5, 10**30, "", [], {}, [1, "a"], {"a": {}}]))
    elif op < 0.65:  # drop a key
        parent, last = path[:-1], path[-1]
        node = ev
        for p in parent:
            node = node[p]
        del node[last]
    elif op < 0.72:  # duplicate a key in the text (the last one wins)
        text = json.dumps(ev)
        return Frame(text[:-1] + ', "type": ' + json.dumps(ev.get("type", "x")) + "}", False, event_id)
    elif op < 0.78:  # surrogate in the event_id: invalid, and not echoed
        return Frame(json.dumps({**ev, "event_id": event_id + "\ud800"}), True, None)
    elif op < 0.82:  # NaN / Infinity are not JSON
        return Frame(json.dumps({**ev, "x": float(rng.choice(["nan", "inf"]))}), True, None)
    return Frame(json.dumps(ev), False, event_id)  # the rest: valid-looking, state decides


@dataclass
class Tally:
    frames: int = 0
    dc_frames: int = 0
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    sessions: int = 0
    unexpected_closes: list[str] = field(default_factory=list)
    limit_closes: int = 0
    missed: list[str] = field(default_factory=list)
    client_lag_max: float = 0.0
    client_lag_over_half_s: int = 0
    server_lag_max: float = 0.0
    server_lag_over_half_s: int = 0


class Receiver:
    """Counts error events; `seen` holds the echoed event_ids, `anonymous` the errors without one."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.seen: set[str] = set()
        self.anonymous = 0
        self.got_end = asyncio.Event()
        self.end_id = ""

    def on_text(self, text: str | bytes) -> None:
        ev = json.loads(text)
        if ev.get("type") not in ("error", "rtc.call.error"):
            return
        err = ev.get("error") or {}
        self.tally.errors += 1
        code = str(err.get("code"))
        self.tally.codes[code] = self.tally.codes.get(code, 0) + 1
        eid = err.get("event_id")
        if eid == self.end_id:
            self.got_end.set()
        elif eid is None:
            self.anonymous += 1
        else:
            self.seen.add(eid)


def _check(rx: Receiver, frames: list[Frame], tally: Tally, label: str) -> None:
    need_anonymous = 0
    for f in frames:
        if f.must_error and f.event_id is None:
            need_anonymous += 1
        elif f.must_error and f.event_id not in rx.seen:
            tally.missed.append(f"{label}: {f.event_id}")
    if rx.anonymous < need_anonymous:
        tally.missed.append(f"{label}: {need_anonymous - rx.anonymous} unparsable frames without an error")


def session_frames(rng: random.Random, n: int, tag: str, max_bytes: int | None = None) -> list[Frame]:
    frames: list[Frame] = []
    ids = [f"{tag}_item{i}" for i in range(3)]
    while len(frames) < n:
        ev = base_event(rng, ids)
        if ev["type"] == "conversation.item.create" and rng.random() < 0.5:
            ev["item"]["id"] = rng.choice(ids)
        f = mutate(rng, ev, f"{tag}-{len(frames)}")
        if max_bytes is None or len(f.data) <= max_bytes:
            frames.append(f)
    return frames


async def ws_session(base: str, rng: random.Random, n: int, tag: str, tally: Tally) -> None:
    path, headers = DIALECTS[rng.randrange(len(DIALECTS))]
    frames = session_frames(rng, n, tag)
    rx = Receiver(tally)
    rx.end_id = f"{tag}-end"
    async with websockets.connect(base + path, additional_headers=headers, max_size=None,
                                  open_timeout=30) as ws:
        tally.sessions += 1

        async def read() -> None:
            async for msg in ws:
                rx.on_text(msg)

        reader = asyncio.ensure_future(read())
        try:
            for f in frames:
                await ws.send(f.data)
                tally.frames += 1
            await ws.send(json.dumps({"type": "livevox.fuzz.end", "event_id": rx.end_id}))
            await asyncio.wait([reader, asyncio.ensure_future(rx.got_end.wait())],
                                         timeout=120, return_when=asyncio.FIRST_COMPLETED)
            if not rx.got_end.is_set():
                reason = ws.close_reason
                if reason in LIMIT_CLOSES:
                    tally.limit_closes += 1
                else:
                    tally.unexpected_closes.append(f"{tag}: {ws.close_code} {reason!r}")
                return
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
    _check(rx, frames, tally, tag)


async def dc_session(http: str, rng: random.Random, n: int, tag: str, tally: Tally) -> None:
    from rtcclient import RtcClient

    frames = session_frames(rng, n, tag, max_bytes=DC_MAX)
    rx = Receiver(tally)
    rx.end_id = f"{tag}-end"
    client = RtcClient(http, door="openai", keep_audio=False,
                       on_event=lambda _t, ev: rx.on_text(json.dumps(ev)))
    try:
        await client.start(timeout=30)
        tally.sessions += 1
        assert client.dc is not None
        low = asyncio.Event()
        client.dc.bufferedAmountLowThreshold = 1 << 18
        client.dc.on("bufferedamountlow", low.set)
        for i, f in enumerate(frames):
            if client.dc.bufferedAmount > 1 << 20:  # let SCTP drain
                low.clear()
                await asyncio.wait_for(low.wait(), 60)
            client.dc.send(f.data)
            tally.frames += 1
            tally.dc_frames += 1
            if i % 64 == 0:
                await asyncio.sleep(0)
        client.dc.send(json.dumps({"type": "livevox.fuzz.end", "event_id": rx.end_id}))
        try:
            await asyncio.wait_for(rx.got_end.wait(), 120)
        except TimeoutError:
            tally.unexpected_closes.append(f"{tag}: data channel went quiet ({client.pc.connectionState})")
            return
    finally:
        await client.close()
    _check(rx, frames, tally, tag)


class _ClientIceLog(logging.Handler):
    """Counts this process's (the clients') aioice/aiortc records: a consent expiry closes a call."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.consent_expired = 0
        self.examples: list[str] = []

    @classmethod
    def attach(cls) -> _ClientIceLog:
        handler = cls()
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).setLevel(logging.INFO)
        return handler

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "Consent to send expired" in msg:
            self.consent_expired += 1
        elif record.levelno >= logging.WARNING and len(self.examples) < 5:
            self.examples.append(f"{record.name}: {msg[:300]}")


def plan(frames: int, seed: int, per_session: int, dc_share: float) -> list[tuple[str, int, int]]:
    """The sessions to run, shuffled: (kind "ws" or "dc", frames, seed)."""
    rng = random.Random(seed)
    dc_frames = int(frames * dc_share)
    queue: list[tuple[str, int, int]] = []
    left = frames - dc_frames
    while left > 0:
        queue.append(("ws", min(per_session, left), rng.randrange(1 << 30)))
        left -= per_session
    left = dc_frames
    while left > 0:
        queue.append(("dc", min(per_session, left), rng.randrange(1 << 30)))
        left -= per_session
    rng.shuffle(queue)
    return queue


async def run_sessions(base_ws: str, queue: list[tuple[str, int, int]], concurrency: int,
                       probe_server: bool = True) -> Tally:
    tally = Tally()
    http = "http" + base_ws.removeprefix("ws")

    async def worker() -> None:
        while queue:
            kind, n, s = queue.pop()
            tag = f"{kind}{s}"
            try:
                if kind == "ws":
                    await ws_session(base_ws, random.Random(s), n, tag, tally)
                else:
                    await dc_session(http, random.Random(s), n, tag, tally)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                tally.unexpected_closes.append(f"{tag}: {type(exc).__name__}: {exc}")

    async def lag_monitor() -> None:  # this process's (the clients') event-loop lag
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.1)
            lag = time.monotonic() - t - 0.1
            tally.client_lag_max = max(tally.client_lag_max, lag)
            tally.client_lag_over_half_s += lag > 0.5

    def server_lag(stop: Any) -> None:  # the server's: /readyz round trips from a thread
        import urllib.request
        while not stop.is_set():
            t = time.monotonic()
            with contextlib.suppress(OSError), urllib.request.urlopen(http + "/readyz", timeout=30):
                pass
            lag = time.monotonic() - t
            tally.server_lag_max = max(tally.server_lag_max, lag)
            tally.server_lag_over_half_s += lag > 0.5
            stop.wait(0.2)

    import threading
    stop = threading.Event()
    if probe_server:
        threading.Thread(target=server_lag, args=(stop,), daemon=True).start()
    monitor = asyncio.ensure_future(lag_monitor())
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        monitor.cancel()
        stop.set()
    return tally


def _data_channel_client(base_ws: str, queue: list[tuple[str, int, int]], concurrency: int, conn: Any) -> None:
    """A child process: the data-channel sessions, on an event loop of their own (the WebSocket
    sessions' frame storm would otherwise starve the peers' ICE consent checks)."""
    ice_log = _ClientIceLog.attach()
    tally = asyncio.run(run_sessions(base_ws, queue, concurrency, probe_server=False))
    conn.send((asdict(tally), ice_log.consent_expired, ice_log.examples))
    conn.close()


def fuzz(base_ws: str, frames: int, seed: int, concurrency: int, per_session: int, dc_share: float,
         dc_process: bool = True) -> tuple[Tally, _ClientIceLog]:
    queue = plan(frames, seed, per_session, dc_share)
    ice_log = _ClientIceLog.attach()
    if not dc_process or not any(k == "dc" for k, _, _ in queue):
        return asyncio.run(run_sessions(base_ws, queue, concurrency)), ice_log
    import multiprocessing
    dc = [q for q in queue if q[0] == "dc"]
    ws = [q for q in queue if q[0] == "ws"]
    dc_workers = max(1, round(concurrency * dc_share))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_data_channel_client, args=(base_ws, dc, dc_workers, child), daemon=True)
    proc.start()
    tally = asyncio.run(run_sessions(base_ws, ws, concurrency - dc_workers))
    theirs, expired, examples = parent.recv()
    proc.join(60)
    for name, value in theirs.items():
        mine = getattr(tally, name)
        if isinstance(mine, list):
            mine.extend(value)
        elif isinstance(mine, dict):
            for k, v in value.items():
                mine[k] = mine.get(k, 0) + v
        elif name.endswith("_max"):
            setattr(tally, name, max(mine, value))
        else:
            setattr(tally, name, mine + value)
    ice_log.consent_expired += expired
    ice_log.examples.extend(examples)
    return tally, ice_log


def tracebacks(log: str, head: int = 4) -> list[str]:
    """Each traceback in `log`: the line before it (the logger's message), its first `head` lines
    after "Traceback", and its last line (the exception), so that a summary explains itself."""
    lines = log.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line:  # also mid-line (aiortc logs format_exc())
            continue
        end = i + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or lines[end] == ""):
            end += 1
        last = lines[end] if end < len(lines) else ""
        before = lines[i - 1] if i > 0 else ""
        out.append("\n".join([before, *lines[i:min(end, i + 1 + head)], "...", last]))
    return out


def call_end_reasons(http: str) -> dict[str, int]:
    """The server's `livevox_webrtc_calls_ended_total` by reason (why each data-channel call ended)."""
    import urllib.request
    try:
        with urllib.request.urlopen(http + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("livevox_webrtc_calls_ended_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def _rss(pid: int | None) -> int | None:
    return psutil.Process(pid).memory_info().rss if pid is not None else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Seeded protocol fuzzer (see the module docstring).")
    p.add_argument("--frames", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16, help="sessions at once")
    p.add_argument("--per-session", type=int, default=1000, help="frames per session")
    p.add_argument("--dc-share", type=float, default=0.1, help="share of the frames sent on data channels")
    p.add_argument("--one-process", action="store_true",
                   help="run the data-channel clients in this process too (they share its event loop)")
    p.add_argument("--url", default=None, help="ws://host:port of a running server (scripted engines)")
    args = p.parse_args(argv)
    server = None
    if args.url is None:
        server = ServerProcess("scripted", env={"LIVEVOX_WEBRTC__HOST_ADDRESSES": '["127.0.0.1"]'}).start()
    base: str = args.url if server is None else server.ws
    pid = server.pid if server is not None else None
    rss_start = _rss(pid)
    t0 = time.monotonic()
    try:
        tally, ice_log = fuzz(base, args.frames, args.seed, args.concurrency, args.per_session, args.dc_share,
                              dc_process=not args.one_process)
        alive = server is None or (server.proc is not None and server.proc.poll() is None)
        rss_end = _rss(pid) if alive else None
        ended = call_end_reasons("http" + base.removeprefix("ws")) if alive else {}
    finally:
        if server is not None:
            server.stop()
    log_path = server.log.name if server is not None else None
    log = Path(log_path).read_text(errors="replace") if log_path is not None else ""
    found = tracebacks(log)
    summary = {
        "seed": args.seed, "frames_sent": tally.frames, "data_channel_frames": tally.dc_frames,
        "error_events": tally.errors, "error_codes": dict(sorted(tally.codes.items(), key=lambda kv: -kv[1])),
        "sessions": tally.sessions, "unexpected_closes": len(tally.unexpected_closes),
        "unexpected_close_examples": tally.unexpected_closes[:5], "calls_ended_by_reason": ended,
        "client_consent_expired": ice_log.consent_expired, "client_rtc_warnings": ice_log.examples,
        "loop_lag": {"client_max_s": round(tally.client_lag_max, 2), "client_over_0.5s": tally.client_lag_over_half_s,
                     "server_readyz_max_s": round(tally.server_lag_max, 2),
                     "server_readyz_over_0.5s": tally.server_lag_over_half_s},
        "limit_closes": tally.limit_closes,
        "invalid_frames_without_error": len(tally.missed), "missed_examples": tally.missed[:5],
        "server_alive": alive, "server_crashes": 0 if alive else 1,
        "server_log": log_path, "server_log_tracebacks": len(found), "traceback_examples": found[:5],
        "server_log_lines": len(log.splitlines()),
        "rss_start_mib": None if rss_start is None else round(rss_start / 2**20, 1),
        "rss_end_mib": None if rss_end is None else round(rss_end / 2**20, 1),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
