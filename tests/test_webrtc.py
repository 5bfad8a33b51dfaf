"""WebRTC: both doors driven by an aiortc client over loopback.

Most tests use the scripted stand-in engines (energy VAD, canned STT/LLM, 440 Hz tone TTS), so
event sequences and audio lengths are exact. `test_embedded_spoken_turn_*` hold one real spoken
turn per door on the embedded models and transcribe the audio received over RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from livevox.engines.base import TranscribeOptions
from livevox.engines.scripted import ScriptedLLM, ScriptedToolCall
from livevox.transports.webrtc.ice import advertise_nat_1to1, allowed_host_addresses, rtc_configuration
from livevox.transports.webrtc.inbound_audio import _InOrderAudio
from livevox.transports.webrtc.outbound_track import AgentAudioTrack
from livevox.transports.webrtc.sdp import AudioCodec
from rtcclient import FIXTURES, VL_CALLS, MicTrack, RtcClient, load_wav, silence, tone
from server_harness import ServerThread, embedded_settings, scripted_settings

KEY = "test-key"
WEBRTC = {"host_addresses": ["127.0.0.1"], "ice_disconnect_timeout_seconds": 3}

#: Events that belong on the Voice Live data channel (never on the control WebSocket once it is open).
DC_TYPES = {
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
    "conversation.item.created", "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed", "response.created", "response.done",
    "response.output_item.added", "response.output_item.done", "response.content_part.added",
    "response.content_part.done", "response.audio_transcript.delta", "response.audio_transcript.done",
    "response.text.delta", "response.text.done", "output_audio_buffer.started", "output_audio_buffer.stopped",
    "output_audio_buffer.cleared", "conversation.item.truncated",
}
TOOL_TYPES = {"response.function_call_arguments.delta", "response.function_call_arguments.done"}


pytestmark = pytest.mark.usefixtures("fresh_scripts")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(api_keys=[KEY], webrtc=WEBRTC)).start()
    yield srv
    srv.stop()


@contextlib.asynccontextmanager
async def rtc(server: ServerThread, **kwargs: Any) -> AsyncIterator[RtcClient]:
    client = RtcClient(server.http, api_key=KEY, **kwargs)
    try:
        yield client
    finally:
        await client.close()


def question() -> np.ndarray:
    """A scripted-VAD "question": 1 s of tone between silences."""
    return np.concatenate([silence(0.3), tone(1.0), silence(0.2)])


def only_g722(offer: str) -> str:
    """The offer with G.722 as its only audio codec (which livevox does not take)."""
    return re.sub(r"a=rtpmap:(96|0|8) .*\r\n", "", offer.replace(" 96 9 0 8\r\n", " 9\r\n"))


def healthy(server: ServerThread) -> None:
    r = httpx.get(server.http + "/healthz", timeout=5)
    assert r.status_code == 200, r.text


def server_calls(server: ServerThread) -> int:
    return len(server.app.state.livevox.calls)


async def calls_left(server: ServerThread, within: float = 5.0) -> int:
    """The server's active calls once the last hang-up has had `within` seconds to be seen
    (the server notices a client's close asynchronously)."""
    for _ in range(int(within / 0.05)):
        if not server_calls(server):
            break
        await asyncio.sleep(0.05)
    return server_calls(server)


# ================================================================ Voice Live door


async def test_voicelive_spoken_turn_and_channel_routing(server: ServerThread) -> None:
    async with rtc(server, mic=MicTrack()) as c:
        created = await c.connect_ws()
        assert created["type"] == "session.created" and c.types("ws")[0] == "session.created"
        await c.start(session={"instructions": "Be brief.", "voice": "alloy"})
        assert c.types("ws")[:3] == ["session.created", "session.updated", "rtc.call.sdp.created"]
        assert c.ws_events[2][1]["rtc_call_id"].startswith("rtc_")
        c.mic.say(question())
        done = await c.wait_for("output_audio_buffer.stopped", timeout=10)
        await asyncio.sleep(0.2)
        dc, ws = c.types("dc"), c.types("ws")
        # The turn: VAD, transcripts and lifecycle on the data channel, in order.
        expected = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                    "input_audio_buffer.committed", "conversation.item.created", "response.created",
                    "response.output_item.added", "response.content_part.added",
                    "response.audio_transcript.delta", "response.audio_transcript.done",
                    "response.content_part.done", "response.output_item.done", "response.done"]
        it = iter(dc)
        assert all(any(x == e for x in it) for e in expected), dc
        assert "conversation.item.input_audio_transcription.completed" in dc
        assert set(dc) <= DC_TYPES, set(dc) - DC_TYPES
        assert set(ws) <= {"session.created", "session.updated", "rtc.call.sdp.created"}, ws
        # No audio inside events in WebRTC mode; the playback events carry the response id.
        assert not [t for _, _, e in c.all_events() for t in [e["type"]] if "audio.delta" in t
                    or t == "response.audio.done"]
        resp = c.find("response.done")[0][2]["response"]
        assert done["response_id"] == resp["id"]
        started = c.find("output_audio_buffer.started")
        assert started and started[0][0] == "dc" and started[0][2]["response_id"] == resp["id"]
        # The agent's voice arrived as RTP: the scripted TTS says 9 words x 60 ms of 440 Hz.
        loud = c.loud_frames()
        assert 0.44 <= len(loud) * 0.02 <= 0.66, len(loud)
        pcm = np.concatenate([f.pcm for f in loud])
        spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
        peak_hz = np.argmax(spectrum) * loud[0].rate / pcm.size
        assert abs(peak_hz - 440) < 15, peak_hz
        # Client events are accepted on both channels.
        n = len(c.all_events())
        await c.send_dc({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await c.wait_for("conversation.item.created", channel="dc", after=n)
        n = len(c.all_events())
        await c.send_ws({"type": "response.create", "response": {"modalities": ["text"]}})
        text_done = await c.wait_for("response.done", channel="dc", after=n)
        assert text_done["response"]["status"] == "completed"
        # input_audio_buffer.append is refused on a WebRTC call (the microphone is the track).
        n = len(c.all_events())
        await c.send_dc({"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"})
        err = await c.wait_for("error", after=n)
        assert err["error"]["code"] == "unsupported_event" and err["error"]["event_id"] == "e1"
        assert c.find("error")[0][0] == "ws"  # errors travel on the control socket


async def test_voicelive_tool_call_events_on_websocket(server: ServerThread) -> None:
    ScriptedLLM.tool_call = ScriptedToolCall("get_weather", {"city": "Paris"})
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with rtc(server) as c:
        await c.start(session={"tools": tools})
        c.mic.say(question())
        args_done = await c.wait_for("response.function_call_arguments.done", timeout=10)
        assert args_done["name"] == "get_weather" and json.loads(args_done["arguments"]) == {"city": "Paris"}
        await c.wait_for("response.done", timeout=5)
        for channel, _, ev in c.all_events():
            item = ev.get("item") or {}
            if ev["type"] in TOOL_TYPES or item.get("type") in ("function_call", "function_call_output"):
                assert channel == "ws", (channel, ev["type"])
        # The answer to the tool result: the client sends the output on the data channel.
        n = len(c.all_events())
        await c.send_dc({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": args_done["call_id"], "output": '{"temp": 21}'}})
        created = await c.wait_for("conversation.item.created", after=n)
        assert created["item"]["type"] == "function_call_output"
        assert [ch for ch, _, e in c.all_events()[n:] if e["type"] == "conversation.item.created"] == ["ws"]


async def test_barge_in_stops_agent_audio_within_100ms(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join(["word"] * 60) + "."  # 3.6 s of agent audio
    async with rtc(server) as c:
        await c.start(session={"turn_detection": {"type": "server_vad", "auto_truncate": True}})
        c.mic.say(question())
        first = await c.wait_for("output_audio_buffer.started", timeout=10)
        for _ in range(300):  # let the user hear 0.5 s of the answer
            if len(c.loud_frames()) >= 25:
                break
            await asyncio.sleep(0.01)
        heard_before = len(c.loud_frames())
        n = len(c.all_events())
        c.mic.say(tone(1.0, freq=300))  # the user talks over the agent
        started = await c.wait_for("input_audio_buffer.speech_started", after=n, timeout=5)
        started_at = next(t for _, t, e in c.all_events()[n:] if e is started)
        await asyncio.sleep(0.4)  # the user is still talking: no new answer yet
        loud = c.loud_frames()
        stop_rtp_ms = (max(f.rtp_at for f in loud) - started_at) * 1000
        stop_track_ms = (max(f.at for f in loud) - started_at) * 1000
        print(f"barge-in: the last agent audio reached the client {stop_rtp_ms:.1f} ms after speech_started "
              f"(RTP arrival); {stop_track_ms:.1f} ms at the output of aiortc's 80 ms jitter buffer")
        assert stop_rtp_ms < 100, stop_rtp_ms
        assert stop_track_ms < 100 + 80 + 20, stop_track_ms
        heard_ms = len(c.loud_frames()) * 20
        cleared = c.find("output_audio_buffer.cleared")
        assert cleared and cleared[0][0] == "dc" and cleared[0][2]["response_id"] == first["response_id"]
        done = next(e for _, _, e in c.all_events() if e["type"] == "response.done"
                    and e["response"]["id"] == first["response_id"])
        assert done["response"]["status"] in ("completed", "cancelled")
        # auto_truncate cut the item at what was actually sent (not at what was generated: 3.6 s).
        truncated = c.find("conversation.item.truncated")[0][2]
        heard_ms = len(c.loud_frames()) * 20
        assert heard_before * 20 <= truncated["audio_end_ms"] <= heard_ms + 100, (truncated, heard_ms)
        assert truncated["audio_end_ms"] < 3000


async def test_client_truncate_cuts_at_sent_audio_and_stops_playout(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join(["word"] * 60) + "."  # 3.6 s of agent audio
    async with rtc(server) as c:
        await c.start()
        c.mic.say(question())
        started = await c.wait_for("output_audio_buffer.started", timeout=10)
        await c.wait_for("response.done", timeout=5)
        await asyncio.sleep(0.5)
        item_id = c.find("response.output_item.added")[0][2]["item"]["id"]
        n = len(c.all_events())
        sent_at = time.monotonic()
        await c.send_dc({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": 3000})
        truncated = await c.wait_for("conversation.item.truncated", after=n)
        cleared = await c.wait_for("output_audio_buffer.cleared", after=n)
        assert cleared["response_id"] == started["response_id"]
        await asyncio.sleep(0.3)
        heard_ms = len(c.loud_frames()) * 20
        # Cut where the track really was (~0.5-0.7 s), not at the 3000 ms the client claimed.
        assert 400 <= truncated["audio_end_ms"] <= heard_ms + 60, (truncated, heard_ms)
        assert max(f.rtp_at for f in c.loud_frames()) - sent_at < 0.1  # and the agent went quiet


async def test_codec_choice_pcmu_fallback_and_opus_stereo(server: ServerThread) -> None:
    registry = server.app.state.livevox.calls
    async with rtc(server, codecs=["audio/PCMU"]) as c:
        await c.start()
        assert "PCMU/8000" in c.pc.remoteDescription.sdp and "opus" not in c.pc.remoteDescription.sdp
        call = registry.get(c.call_id or "")
        assert call is not None and call.track is not None
        assert (call.track.codec.name, call.track.codec.clock_rate) == ("PCMU", 8000)
        assert call.decodes_on_loop  # no decoder-thread hand-offs, no 80 ms inbound jitter buffer
        assert call.pc is not None
        for t in call.pc.getTransceivers():  # no STUN/TURN server configured: none is contacted
            conn = t.sender.transport.transport.iceGatherer._connection
            assert conn.stun_server is None and conn.turn_server is None
        assert [line.split()[4] for line in c.pc.remoteDescription.sdp.splitlines()
                if line.startswith("a=candidate:")] == ["127.0.0.1"] * 2  # the host allow-list
        c.mic.say(question())
        await c.wait_for("output_audio_buffer.stopped", timeout=10)
        await asyncio.sleep(0.1)
        assert c.frames[-1].rate == 8000 and 0.44 <= len(c.loud_frames()) * 0.02 <= 0.7
    for stereo, channels in ((True, 2), (False, 1)):
        async with rtc(server, stereo=stereo) as c:
            await c.start()
            call = registry.get(c.call_id or "")
            assert call is not None and call.track is not None
            assert (call.track.codec.name, call.track.codec.channels) == ("opus", channels)


async def test_bad_offers_get_rtc_call_error_and_server_stays_healthy(server: ServerThread) -> None:
    async with rtc(server) as c:
        await c.connect_ws()

        async def offer(ev: dict[str, Any]) -> dict[str, Any]:
            n = len(c.all_events())
            await c.send_ws({"type": "rtc.call.sdp.create", **ev})
            return await c.wait_for("rtc.call.error", "rtc.call.sdp.created", after=n)

        good = await c.make_offer()
        cases = {
            "missing_sdp": {"event_id": "evt_1"},
            "invalid_sdp": {"sdp_offer": "this is not SDP"},
            "no_audio_section": {"sdp_offer": re.sub(r"m=audio.*?(?=m=application)", "", good, flags=re.S)},
            "no_common_codec": {"sdp_offer": only_g722(good)},
        }
        for code, ev in cases.items():
            got = await offer(ev)
            assert got["type"] == "rtc.call.error", got
            assert got["operation"] == "rtc.call.sdp.create" and got["rtc_call_id"].startswith("rtc_")
            assert got["error"]["code"] == code, got
            assert got["error"]["type"] == "invalid_request_error" and got["error"]["message"]
        missing = c.find("rtc.call.error")[0][2]
        assert missing["error"]["message"] == "SDP offer is required" and missing["error"]["event_id"] == "evt_1"
        assert {ch for ch, _, e in c.all_events() if e["type"] == "rtc.call.error"} == {"ws"}
        # The same socket still takes a good offer after the refused ones ...
        got = await offer({"sdp_offer": good})
        assert got["type"] == "rtc.call.sdp.created"
        # ... and exactly one: a second offer on the call is refused.
        got = await offer({"sdp_offer": good})
        assert got["type"] == "rtc.call.error" and got["error"]["code"] == "call_already_negotiated"
        # An invalid session in the offer is refused with the session's error.
    async with rtc(server) as c:
        await c.connect_ws()
        await c.send_ws({"type": "rtc.call.sdp.create", "sdp_offer": await c.make_offer(),
                         "session": {"turn_detection": {"type": "bogus"}}})
        got = await c.wait_for("rtc.call.error")
        assert got["error"]["param"].startswith("session.turn_detection"), got
    healthy(server)
    async with rtc(server) as c:  # and a new call works
        await c.start()
    assert await calls_left(server) == 0


@pytest.mark.parametrize("door", ["voicelive", "openai"])
async def test_bad_input_on_the_data_channel(server: ServerThread, door: str) -> None:
    # The data channel carries client events too: the same errors as on a WebSocket, and the call
    # goes on. Voice Live sends errors on the control WebSocket; OpenAI's door has only its channel.
    errors_on = "ws" if door == "voicelive" else "dc"
    async with rtc(server, door=door) as c:
        if door == "voicelive":
            await c.connect_ws()
        await c.start()
        await c.wait_for("session.created")
        assert c.dc is not None
        for _ in range(100):
            if c.dc.readyState == "open":
                break
            await asyncio.sleep(0.05)
        cases: list[tuple[str | bytes, str, str | None]] = [
            ("{not json", "invalid_json", None),
            (b"\x00\x01binary", "invalid_json", None),
            (json.dumps({"type": "no.such.event", "event_id": "d1"}), "unknown_event_type", "type"),
            (json.dumps({"type": "conversation.item.delete", "event_id": "d2", "item_id": 42}), "invalid_type",
             "item_id"),
            (json.dumps({"type": "response.cancel", "event_id": "d3"}), "response_cancel_not_active", None),
        ]
        for frame, code, param in cases:
            n = len(c.all_events())
            c.dc.send(frame)
            err = (await c.wait_for("error", channel=errors_on, after=n))["error"]
            assert (err["code"], err["param"]) == (code, param), (frame, err)
            if code != "invalid_json":
                assert err["event_id"] == json.loads(frame)["event_id"]
        n = len(c.all_events())
        await c.send_dc({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "still here"}]}})
        await c.wait_for("conversation.item.created", "conversation.item.added", channel="dc", after=n)


async def test_voicelive_door_auth(server: ServerThread) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(server.ws + VL_CALLS)
    assert info.value.response.status_code == 401


# ================================================================ OpenAI door


async def test_openai_door_turn_sideband_and_hangup(server: ServerThread) -> None:
    async with rtc(server, door="openai") as c:
        await c.start()
        assert c.location and re.fullmatch(r"/v1/realtime/calls/rtc_[0-9a-f]+", c.location)
        first = await c.wait_for("session.created", channel="dc")
        assert first["session"]["type"] == "realtime" and c.types("dc")[0] == "session.created"
        # Side-band WebSocket on the same call.
        side = await websockets.connect(f"{server.ws}/v1/realtime?call_id={c.call_id}",
                                        additional_headers={"Authorization": f"Bearer {KEY}"})
        side_events: list[dict[str, Any]] = []

        async def read_side() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for msg in side:
                    side_events.append(json.loads(msg))

        reader = asyncio.ensure_future(read_side())
        await side.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "instructions": "From the side band."}}))
        updated = await c.wait_for("session.updated", channel="dc")
        assert updated["session"]["instructions"] == "From the side band."
        c.mic.say(question())
        await c.wait_for("output_audio_buffer.stopped", timeout=10)
        dc = c.types("dc")
        assert "response.output_audio_transcript.delta" in dc and "conversation.item.added" in dc  # GA names
        assert not [t for t in dc if t in ("response.audio_transcript.delta", "response.output_audio.delta")]
        assert 0.44 <= len(c.loud_frames()) * 0.02 <= 0.66
        await asyncio.sleep(0.1)
        side_types = [e["type"] for e in side_events]
        assert side_types[0] == "session.created" and "session.updated" in side_types
        assert "response.done" in side_types  # the side band sees the call's events
        # Hang up: the call ends, the side band closes, a second hangup is 404.
        async with httpx.AsyncClient(base_url=server.http, headers={"Authorization": f"Bearer {KEY}"}) as http:
            r = await http.post(f"{c.location}/hangup")
            assert r.status_code == 200, r.text
            await asyncio.wait_for(reader, 5)
            r = await http.post(f"{c.location}/hangup")
            assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found"
        for _ in range(100):
            if c.pc.connectionState == "closed" or c.dc is None or c.dc.readyState == "closed":
                break
            await asyncio.sleep(0.05)
        assert c.dc is not None and c.dc.readyState == "closed"
    assert server_calls(server) == 0


async def test_openai_multipart_session(server: ServerThread) -> None:
    session = {"type": "realtime", "model": "gpt-realtime", "instructions": "Multipart!",
               "audio": {"output": {"voice": "marin"}}}
    async with rtc(server, door="openai") as c:
        await c.start(session=session)
        updated = await c.wait_for("session.updated", channel="dc")
        assert updated["session"]["instructions"] == "Multipart!"
        assert updated["session"]["audio"]["output"]["voice"] == "marin"
        assert c.types("dc")[:2] == ["session.created", "session.updated"]


async def test_openai_door_errors(server: ServerThread) -> None:
    client = RtcClient(server.http, door="openai")
    offer = await client.make_offer()
    await client.close()
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        async def post(body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
            h = {**auth, "Content-Type": "application/sdp", **(headers or {})}
            return await http.post("/v1/realtime/calls", content=body, headers=h, **kw)

        cases: list[tuple[httpx.Response, int, str]] = [
            (await http.post("/v1/realtime/calls", content=offer, headers={"Content-Type": "application/sdp"}),
             401, "invalid_api_key"),
            (await post(b""), 400, "missing_sdp"),
            (await post(b"not sdp at all"), 400, "invalid_sdp"),
            (await post(offer, headers={"Content-Type": "application/json"}), 415, "unsupported_content_type"),
            (await post(re.sub(r"m=audio.*?(?=m=application)", "", offer, flags=re.S)), 400, "no_audio_section"),
            (await post(only_g722(offer)), 400, "no_common_codec"),
            (await post(b"v=0\r\n" + b"a=x\r\n" * 300_000), 413, "request_too_large"),
            (await http.post("/v1/realtime/calls", headers=auth,
                             files={"sdp": (None, offer, "application/sdp"), "session": (None, "{nope")}),
             400, "invalid_json"),
            (await http.post("/v1/realtime/calls", headers=auth,
                             files={"sdp": (None, offer), "session": (None, '{"type": "transcription"}')}),
             400, "invalid_value"),
            (await http.post("/v1/realtime/calls", headers=auth, files={"session": (None, "{}")}),
             400, "missing_sdp"),
            (await http.post("/v1/realtime/calls/rtc_nope/hangup", headers=auth), 404, "call_not_found"),
        ]
        for r, status, code in cases:
            assert r.status_code == status, (code, r.status_code, r.text)
            assert r.json()["error"]["code"] == code, r.text
            assert r.json()["error"]["message"]
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{server.ws}/v1/realtime?call_id=rtc_nope", additional_headers=auth)
    assert info.value.response.status_code == 404
    healthy(server)
    assert server_calls(server) == 0 and not server.app.state.livevox.sessions


# ================================================================ lifecycle


def _server_state(server: ServerThread) -> tuple[int, int, int, int]:
    async def count() -> tuple[int, int]:
        return len(asyncio.all_tasks()), len(server.app.state.livevox.sessions)

    tasks, sessions = server.run_coro(count())
    fds = len(os.listdir("/proc/self/fd"))
    # Thread pools keep idle workers; count only the threads that belong to calls.
    threads = [t for t in threading.enumerate() if not t.name.startswith(("ThreadPoolExecutor", "asyncio_"))]
    return tasks, sessions, len(threads), fds


async def test_50_calls_leave_nothing_behind(server: ServerThread) -> None:
    healthy(server)
    await asyncio.sleep(0.5)
    before = _server_state(server)
    ends = ["ws_close", "client_pc_close", "hangup"]

    async def one(i: int) -> None:
        door = "openai" if i % 2 else "voicelive"
        c = RtcClient(server.http, door=door, api_key=KEY, keep_audio=False)
        try:
            await c.start()
            c.mic.say(tone(0.1))
            await asyncio.sleep(0.1)
            how = ends[i % 3]
            if how == "hangup" and door == "openai":
                async with httpx.AsyncClient(base_url=server.http) as http:
                    r = await http.post(f"{c.location}/hangup", headers={"Authorization": f"Bearer {KEY}"})
                    assert r.status_code == 200
            elif how == "ws_close" and c.ws is not None:
                await c.ws.close()
        finally:
            await c.close()

    started = time.monotonic()
    for batch in range(5):
        await asyncio.gather(*(one(batch * 10 + i) for i in range(10)))
    print(f"50 calls in {time.monotonic() - started:.1f} s")
    for _ in range(100):
        if not server_calls(server) and not _server_state(server)[1]:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    after = _server_state(server)
    print(f"tasks/sessions/threads/fds before {before} after {after}")
    assert server_calls(server) == 0
    assert after[1] == 0
    assert after[0] <= before[0] + 2, (before, after)  # asyncio tasks on the server loop
    assert after[2] <= before[2] + 2, (before, after)  # threads (aiortc decoder threads end with their call)
    assert after[3] <= before[3] + 10, (before, after)  # file descriptors (UDP sockets)
    healthy(server)


@pytest.fixture(scope="module")
def short_server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(webrtc={"host_addresses": ["127.0.0.1"],
                                                 "ice_disconnect_timeout_seconds": 1.5},
                                         limits={"max_session_seconds": 4})).start()
    yield srv
    srv.stop()


async def test_ice_never_connecting_ends_call(short_server: ServerThread) -> None:
    c = RtcClient(short_server.http)
    try:
        await c.connect_ws()
        await c.send_ws({"type": "rtc.call.sdp.create", "sdp_offer": await c.make_offer()})
        await c.wait_ws("rtc.call.sdp.created")  # the client never applies the answer: no ICE
        await asyncio.wait_for(c.ws.wait_closed(), 5)
        assert c.ws.close_reason == "ice_timeout"
    finally:
        await c.close()
    assert server_calls(short_server) == 0


async def test_ice_disconnect_ends_call(short_server: ServerThread) -> None:
    c = RtcClient(short_server.http)
    try:
        await c.start()
        # The client's network goes away silently: nothing more reaches the server.
        for t in c.pc.getTransceivers():
            for proto in t.sender.transport.transport._connection._protocols:
                proto.transport.sendto = lambda *a, **k: None  # type: ignore[method-assign]
        started = time.monotonic()
        await asyncio.wait_for(c.ws.wait_closed(), 6)
        assert c.ws.close_reason == "ice_disconnected", c.ws.close_reason
        assert 1.4 <= time.monotonic() - started <= 4
    finally:
        await c.close()
    assert server_calls(short_server) == 0


async def test_session_limit_ends_call(short_server: ServerThread) -> None:
    c = RtcClient(short_server.http)
    try:
        await c.start()
        err = await c.wait_for("error", timeout=8)
        assert err["error"]["code"] == "session_expired"
        await asyncio.wait_for(c.ws.wait_closed(), 5)
    finally:
        await c.close()
    assert server_calls(short_server) == 0 and not short_server.app.state.livevox.sessions


# ================================================================ ICE settings


def test_ice_settings_units() -> None:
    from livevox.settings import WebRTCSettings

    assert rtc_configuration(WebRTCSettings()).iceServers == []  # never aiortc's default STUN server
    cfg = rtc_configuration(WebRTCSettings(ice_servers=[
        {"urls": "stun:stun.example.org:3478"},
        {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "u", "credential": "p"}]))
    assert cfg.iceServers is not None
    assert [s.urls for s in cfg.iceServers] == [["stun:stun.example.org:3478"],
                                                ["turn:turn.example.org:3478?transport=udp"]]
    assert cfg.iceServers[1].username == "u" and cfg.iceServers[1].credential == "p"
    assert allowed_host_addresses(("127.0.0.1",)) == ["127.0.0.1"]
    assert allowed_host_addresses(("lo",), use_ipv6=False) == ["127.0.0.1"]
    assert allowed_host_addresses(("127.0.0.0/8",), use_ipv6=False) == ["127.0.0.1"]
    assert allowed_host_addresses(("no-such-if0",)) == []
    sdp = "a=candidate:abc 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
    out = advertise_nat_1to1(sdp, "203.0.113.7")
    assert "a=candidate:abcn 1 udp 2130706430 203.0.113.7 40000 typ host" in out and "10.0.0.5" in out
    assert advertise_nat_1to1(sdp, None) == sdp


async def test_agent_track_media_clock_silence_and_discard() -> None:
    events: list[tuple[str, str]] = []
    track = AgentAudioTrack(AudioCodec("opus", 48000, 1), on_event=lambda k, r: events.append((k, r)))
    track.enqueue("resp_1", "item_1", tone(0.5, rate=24000))
    track.end("resp_1", "item_1")
    times: list[float] = []
    for i in range(60):
        await track.recv()
        times.append(time.monotonic())
        if i == 40:
            time.sleep(0.15)  # noqa: ASYNC251 - the loop stalls once: the clock re-anchors instead of bursting
    steady = np.diff(times[:40])
    # Absolute deadlines: a late frame is followed by an early one, and nothing accumulates.
    assert abs((times[39] - times[0]) - 39 * 0.02) < 0.008
    assert abs(float(np.median(steady)) - 0.02) < 0.002
    assert track.clock_resets == 1 and min(np.diff(times[42:])) > 0.012  # no burst after the stall
    assert track.sent_ms("item_1") == 500 and events == [("started", "resp_1"), ("stopped", "resp_1")]
    assert track.audio_frames_sent == 25 and track.frames_sent == 60  # silence when quiet
    track.enqueue("resp_2", "item_2", tone(1.0, rate=24000))
    for _ in range(5):
        await track.recv()
    assert track.discard() == ("resp_2", "item_2") and track.pending_ms == 0
    assert track.sent_ms("item_2") == 100 and events[-1] == ("cleared", "resp_2")
    track.enqueue("resp_2", "item_2", tone(0.2, rate=24000))  # late audio of a cut response: ignored
    assert track.pending_ms == 0
    # A response's leading quiet is skipped (the first word comes sooner) but counted as sent.
    trimmed = track.trimmed_samples
    track.enqueue("resp_3", "item_3", np.concatenate([silence(0.1, rate=24000), tone(0.2, rate=24000)]))
    track.end("resp_3", "item_3")
    frames = 0
    while events[-1] != ("stopped", "resp_3") and frames < 50:
        await track.recv()
        frames += 1
    assert 4700 <= track.trimmed_samples - trimmed <= 4810 and track.sent_ms("item_3") == 300
    assert frames <= 11  # 0.2 s of tone (10 frames) + the frame that reports the end
    track.stop()


async def test_agent_track_starts_an_answer_without_waiting_for_the_tick() -> None:
    """Audio that arrives while the track idles (sending silence) goes out in the frame being
    waited for, not at the next 20 ms tick; the clock is re-anchored on it, so the answer's
    frames keep their 20 ms spacing from there. While audio plays, the clock is not moved."""
    track = AgentAudioTrack(AudioCodec("opus", 48000, 1))
    await track.recv()  # anchors the clock: the next frame waits for its tick
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)  # recv() is now waiting for the tick, idle
    assert not waiting.done()
    track.enqueue("resp_1", "item_1", tone(0.2, rate=24000))
    await waiting
    assert track.early_starts == 1 and track.audio_frames_sent == 1 and track.sent_ms("item_1") == 20
    for _ in range(3):  # playing: paced by the clock, no early start
        await track.recv()
    track.enqueue("resp_1", "item_1", tone(0.2, rate=24000))
    await track.recv()
    assert track.early_starts == 1 and track.audio_frames_sent == 5
    track.stop()


def test_inbound_packets_in_order() -> None:
    class Packet:
        def __init__(self, seq: int) -> None:
            self.sequence_number, self.timestamp, self._data = seq, seq * 960, b"x"

    buf = _InOrderAudio()
    kept = [seq for seq in (65534, 65535, 0, 2, 1, 2, 3) if buf.add(Packet(seq))[1] is not None]
    assert kept == [65534, 65535, 0, 2, 3]  # wrap-around kept; late and duplicate packets dropped


# ================================================================ embedded models


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(webrtc={"host_addresses": ["127.0.0.1"]})).start(timeout=300)
    yield srv
    srv.stop()


def _transcribe(server: ServerThread, pcm16k: np.ndarray) -> str:
    async def run() -> str:
        engines = server.app.state.livevox.engines
        audio = pcm16k.astype(np.float32) / 32768.0
        parts = [p async for p in engines.stt.transcribe(audio, TranscribeOptions(language="en"), "test")]
        return "".join(parts).strip()

    text: str = server.run_coro(run())
    return text


@pytest.mark.parametrize("door", ["voicelive", "openai"])
async def test_embedded_spoken_turn(embedded: ServerThread, door: str) -> None:
    speech = load_wav(FIXTURES / "question_capital.wav")
    async with contextlib.AsyncExitStack() as stack:
        c = RtcClient(embedded.http, door=door)
        stack.push_async_callback(c.close)
        # Voice Live door: word timestamps and visemes on, to check they travel on the data channel.
        await c.start(session={"output_audio_timestamp_types": ["word"], "animation": {"outputs": ["viseme_id"]}}
                      if door == "voicelive" else {
            "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
        c.mic.say(np.concatenate([silence(0.3), speech, silence(0.2)]))
        user = await c.wait_for("conversation.item.input_audio_transcription.completed", timeout=20)
        await c.wait_for("response.done", timeout=40)  # generated (faster than real time) ...
        started = await c.wait_for("output_audio_buffer.started", timeout=5)
        for _ in range(200):  # ... and played: 2.5 s of the answer are enough to recognise speech
            if len(c.loud_frames()) * 0.02 >= 2.5 or c.find("output_audio_buffer.stopped"):
                break
            await asyncio.sleep(0.05)
        assert started["response_id"] == c.find("response.done")[0][2]["response"]["id"]
        transcript_type = ("response.audio_transcript.done" if door == "voicelive"
                           else "response.output_audio_transcript.done")
        agent = c.find(transcript_type)[0][2]["transcript"]
        heard = _transcribe(embedded, c.received_audio(16000))
        print(f"{door}: user={user['transcript']!r} agent={agent!r} heard over RTP={heard!r}")
        assert "capital" in user["transcript"].lower() and "france" in user["transcript"].lower()
        assert len(c.loud_frames()) * 0.02 > 0.5, "less than half a second of agent audio"
        assert len(heard.split()) >= 2, f"the received audio does not transcribe to speech: {heard!r}"
        assert not [e for _, _, e in c.all_events() if "audio.delta" in e["type"]]
        if door == "voicelive":
            for kind in ("response.audio_timestamp.delta", "response.animation_viseme.delta"):
                marks = c.find(kind)
                assert marks and {ch for ch, _, _ in marks} == {"dc"}, kind


def _counter(text: str, name: str, label: str, value: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{{label}="{value}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_client_closing_its_peer_connection_is_a_hang_up_not_an_ice_failure(server: ServerThread) -> None:
    async def metrics() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(server.http + "/metrics")).text

    before = await metrics()
    async with rtc(server, door="openai") as c:
        await c.start()
    # The OpenAI door has no control socket: closing the peer connection is how a client hangs up.
    assert await calls_left(server) == 0
    after = await metrics()
    ended = "livevox_webrtc_calls_ended_total"
    assert _counter(after, ended, "reason", "peer_closed") == _counter(before, ended, "reason", "peer_closed") + 1
    errors = "livevox_webrtc_call_errors_total"
    assert _counter(after, errors, "code", "ice_failed") == _counter(before, errors, "code", "ice_failed")
