"""Hostile client input: lone surrogates, NUL, bidi overrides, huge strings, deep nesting, too many
keys or items, broken JSON and bytes. Driven over the WebSocket (all three dialects), the WebRTC
data channel, the engine API and the SDP doors of a real server (scripted stand-in engines).

Each mistake gets one error with the right code and `param`, the session goes on working, and
the server logs no traceback and at most one line per mistake."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rtcclient import VL_CALLS, RtcClient
from server_harness import ServerThread, scripted_settings
from wsclient import VL_PATH, RealtimeClient

pytestmark = pytest.mark.usefixtures("fresh_scripts")

WEBRTC = {"host_addresses": ["127.0.0.1"], "ice_disconnect_timeout_seconds": 3}
DIALECTS = {
    "voicelive": (VL_PATH, {}),
    "openai-ga": ("/v1/realtime?model=gpt-realtime", {}),
    "openai-beta": ("/v1/realtime?model=gpt-realtime", {"OpenAI-Beta": "realtime=v1"}),
}
SAFE_ODD = "nul\x00 bidi\u202etxet\u202c emoji\U0001f600 zero-width\u200b"


def _item(text: str, event_id: str | None = None) -> str:
    ev: dict[str, Any] = {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}
    if event_id is not None:
        ev["event_id"] = event_id
    return json.dumps(ev)  # ensure_ascii: a lone surrogate travels as the escape "\ud83d"


#: (raw frame, error code, param, echoed event_id)
MISTAKES: list[tuple[str | bytes, str, str | None, str | None]] = [
    (_item("\ud83d", "e1"), "invalid_string", "item.content[0].text", "e1"),
    (json.dumps({"type": "session.update", "event_id": "e2", "session": {"instructions": "a\udc00"}}),
     "invalid_string", "session.instructions", "e2"),
    (json.dumps({"type": "no.such.event", "event_id": "\ud83d"}), "invalid_string", "event_id", None),
    (json.dumps({"type": "session.update", "session": {"\ud83d": 1}}), "invalid_string", "session.\\ud83d",
     None),
    ("[" * 100_000, "nesting_too_deep", None, None),
    (json.dumps({"type": "session.update", "event_id": "e3", "session": {str(i): i for i in range(1001)}}),
     "too_many_keys", None, None),
    (json.dumps({"type": "session.update", "session": {"tools": list(range(10_001))}}), "too_many_items",
     None, None),
    ('{"type": "session.update", "session": {"temperature": NaN}}', "invalid_json", None, None),
    ('{"type": "session.update", "session": {"temperature": 1e999}}', "invalid_json", None, None),
    ('{"type": "session.update", "session": {"instr', "invalid_json", None, None),
    (b"\xff\xfe\x00garbage", "invalid_json", None, None),
    ("\x00", "invalid_json", None, None),
    (json.dumps({"type": "x" * 1_000_000}), "unknown_event_type", "type", None),
]
MISTAKE_IDS = ["surrogate-text", "surrogate-instructions", "surrogate-event-id", "surrogate-key", "deep",
               "keys", "items", "nan", "inf", "truncated", "bytes", "nul-frame", "megabyte-type"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def logs() -> Iterator[_Records]:
    """Every record of the server's loggers (livevox at INFO and up, uvicorn, aiortc warnings)."""
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("livevox", "uvicorn", "uvicorn.error", "aiortc")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    logging.getLogger("livevox").setLevel(logging.INFO)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.fixture(scope="module")
def server(logs: _Records) -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(webrtc=WEBRTC)).start()
    yield srv
    srv.stop()


def assert_quiet_logs(logs: _Records, mistakes: int) -> None:
    """No traceback, nothing at ERROR, at most one line per mistake."""
    lines = [f"{r.name} {r.levelname} {r.getMessage()}" for r in logs.records]
    assert not [r for r in logs.records if r.exc_info or "Traceback" in r.getMessage()], lines
    assert all(r.levelno < logging.ERROR for r in logs.records), lines
    assert len(logs.records) <= mistakes, lines


def check_error(err: dict[str, Any], code: str, param: str | None, event_id: str | None) -> None:
    assert err["type"] == "invalid_request_error", err
    assert err["code"] == code, err
    assert err["param"] == param, err
    assert err["event_id"] == event_id, err
    assert isinstance(err["message"], str) and err["message"], err
    assert len(err["message"]) < 500, "a message must not echo a huge value"


async def still_works(c: RealtimeClient) -> None:
    """The session takes odd-but-valid text and echoes it exactly, then answers a response.create."""
    assert (await c.update({"instructions": SAFE_ODD}))["instructions"] == SAFE_ODD
    await c.send(_item(SAFE_ODD))
    created = await c.recv()
    while created["type"] not in ("conversation.item.created", "conversation.item.added"):  # GA: .added
        created = await c.recv()
    assert created["item"]["content"][0]["text"] == SAFE_ODD
    await c.send({"type": "response.create"})
    done = (await c.until("response.done"))[-1]
    assert done["response"]["status"] == "completed", done


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_websocket_mistakes_each_get_one_error(server: ServerThread, logs: _Records, dialect: str) -> None:
    path, headers = DIALECTS[dialect]
    c = await RealtimeClient.connect(server.ws, path, headers=headers)
    logs.records.clear()
    try:
        for frame, code, param, event_id in MISTAKES:
            await c.send(frame)
            got = await c.until("error")
            assert [e["type"] for e in got] == ["error"], got  # nothing but the one error
            check_error(got[-1]["error"], code, param, event_id)
        await still_works(c)
    finally:
        await c.close()
    assert_quiet_logs(logs, len(MISTAKES))


async def test_megabyte_strings_are_accepted_and_echoed(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    try:
        big = "\u202e\x00" + "x" * 2_000_000
        assert (await c.update({"instructions": big}))["instructions"] == big
        await still_works(c)
    finally:
        await c.close()


async def test_data_channel_mistakes_each_get_one_error(server: ServerThread, logs: _Records) -> None:
    client = RtcClient(server.http, door="openai")
    try:
        await client.start()
        await client.wait_for("session.created", channel="dc")
        logs.records.clear()
        assert client.dc is not None
        # The server's SCTP stack takes messages of up to 256 KiB; bigger ones cannot be sent at all.
        small = [m for m in MISTAKES if len(m[0]) <= 256 * 1024]
        assert len(small) == len(MISTAKES) - 1
        for frame, code, param, event_id in small:
            before = len(client.dc_events)
            client.dc.send(frame)
            ev = await client.wait_for("error", channel="dc", after=before, timeout=15)
            check_error(ev["error"], code, param, event_id)
        before = len(client.dc_events)
        await client.send_dc({"type": "session.update", "session": {"instructions": SAFE_ODD}})
        ev = await client.wait_for("session.updated", channel="dc", after=before)
        assert ev["session"]["instructions"] == SAFE_ODD
    finally:
        await client.close()
    assert_quiet_logs(logs, len(MISTAKES))


API_CASES: list[tuple[str, bytes, str, int, str, str | None]] = [
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud83d"}]}', "application/json", 400,
     "invalid_string", "messages[0].content"),
    ("/v1/chat/completions", b"[" * 100_000, "application/json", 400, "nesting_too_deep", None),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "stream_options": 1}',
     "application/json", 400, "invalid_type", "stream_options"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', "application/json", 400,
     "invalid_type", "messages[0].content"),
    ("/v1/chat/completions", b"\xff\xfe", "application/json", 400, "invalid_json", None),
    ("/v1/chat/completions", b"{}", "multipart/form-data; boundary=x", 415, "unsupported_content_type", None),
    ("/v1/chat/completions", b" " * (22 * 1024 * 1024), "application/json", 413, "request_too_large", None),
    ("/v1/audio/speech", b'{"input": "\\udfff", "voice": "alloy"}', "application/json", 400, "invalid_string",
     "input"),
    ("/v1/audio/speech", b'{"input": "hi", "voice": "alloy", "speed": NaN}', "application/json", 400,
     "invalid_json", None),
    ("/v1/audio/transcriptions", b"garbage", "multipart/form-data; boundary=x", 400, "invalid_multipart", None),
    ("/v1/audio/transcriptions", b"{}", "application/json", 415, "unsupported_content_type", None),
    ("/v1/realtime/calls", b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\x00\r\n", "application/sdp", 400, "invalid_sdp",
     "sdp_offer"),
    ("/v1/realtime/calls", b"\xff\xfe not sdp", "application/sdp", 400, "invalid_sdp", "sdp"),
    ("/v1/realtime/calls", b"v=0\r\n" + b"a=x\r\n" * 300_000, "application/sdp", 413, "request_too_large", None),
]


def _multipart(session: str) -> tuple[bytes, str]:
    body = (b'--B\r\nContent-Disposition: form-data; name="sdp"\r\n\r\nv=0\r\ns=-\r\n'
            b'--B\r\nContent-Disposition: form-data; name="session"\r\n\r\n' + session.encode() + b"\r\n--B--\r\n")
    return body, "multipart/form-data; boundary=B"


async def test_http_endpoints_answer_json_errors(server: ServerThread, logs: _Records) -> None:
    cases = list(API_CASES)
    for session, code, param in ((json.dumps({"instructions": "\ud83d"}), "invalid_string", "session.instructions"),
                                 ("[" * 5000, "nesting_too_deep", "session"),
                                 ('{"instructions": NaN}', "invalid_json", "session")):
        body, ctype = _multipart(session)
        cases.append(("/v1/realtime/calls", body, ctype, 400, code, param))
    logs.records.clear()
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        for path, body, ctype, status, code, param in cases:
            r = await http.post(path, content=body, headers={"Content-Type": ctype})
            assert r.status_code == status, (path, code, r.text)
            err = r.json()["error"]
            assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", code, param), (path, err)
        r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": SAFE_ODD}]})
        assert r.status_code == 200, r.text
        r = await http.post("/v1/audio/speech", json={"input": SAFE_ODD, "voice": "alloy",
                                                      "response_format": "wav"})
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text
    assert_quiet_logs(logs, len(cases))


async def test_voice_live_sdp_offer_mistakes(server: ServerThread, logs: _Records) -> None:
    c = await RealtimeClient.connect(server.ws, VL_CALLS)
    logs.records.clear()
    try:
        for offer, code, param, event_id in (
                ("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=\x00\r\n", "invalid_sdp", "sdp_offer", "o1"),
                ("v=0\r\n" + "a=x\r\n" * 20_000, "invalid_sdp", "sdp_offer", "o2"),
                ("\u202e" * 10, "invalid_sdp", "sdp_offer", "o3"),
                ({"sdp": [1]}, "invalid_sdp", "sdp_offer", None)):
            await c.send({"type": "rtc.call.sdp.create", "sdp_offer": offer, "event_id": event_id})
            ev = (await c.until("rtc.call.error"))[-1]
            assert ev["error"]["code"] == code and ev["error"]["param"] == param, ev
            assert ev["error"]["event_id"] == event_id, ev
        # A surrogate anywhere in the event is refused before the offer is looked at.
        await c.send({"type": "rtc.call.sdp.create", "sdp_offer": "v=0\r\n\ud83d\r\n", "event_id": "o5"})
        check_error(await c.error(), "invalid_string", "sdp_offer", "o5")
        assert (await c.update({"instructions": SAFE_ODD}))["instructions"] == SAFE_ODD
    finally:
        await c.close()
    assert_quiet_logs(logs, 5)
