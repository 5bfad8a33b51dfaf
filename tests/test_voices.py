"""The voice map: client voice names (OpenAI names, Voice Live `{name, type, rate}` objects) to
engine voices, over a real server with scripted stand-in engines, plus the map's own rules."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from livevox.core.errors import ProtocolError
from livevox.engine_settings import VoiceMapSettings
from livevox.engines.registry import EngineLoadError, build_engines
from livevox.engines.voices import EngineVoice, VoiceMap, parse_rate
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient

STRICT = {"map": {"alloy": "scripted", "en-US-AvaNeural": "scripted"}, "strict": True}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings(tts={"voice_map": STRICT})).start()
    yield srv
    srv.stop()


async def answer_samples(c: RealtimeClient) -> int:
    await c.send({"type": "response.create"})
    evs = await c.until("response.done")
    assert evs[-1]["response"]["status"] == "completed"
    return sum(len(base64.b64decode(e["delta"])) // 2 for e in evs if e["type"] == "response.audio.delta")


async def test_unknown_voice_is_refused_with_the_available_ones(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.send({"type": "session.update", "session": {"voice": "nova", "instructions": "changed"}})
    err = await c.error()
    assert err["code"] == "invalid_value" and err["param"] == "session.voice"
    assert "'nova'" in err["message"] and "alloy, en-US-AvaNeural, scripted" in err["message"]
    # Nothing of the update was applied.
    session = await c.update({"temperature": 0.7})
    assert session["voice"] == "alloy" and session["instructions"] != "changed"
    await c.send({"type": "session.update", "session": {"voice": {
        "type": "azure-standard", "name": "en-US-AvaNeural", "rate": "9"}}})
    err = await c.error()
    assert err["param"] == "session.voice.rate"
    await c.close()


async def test_unknown_response_voice_is_refused_and_a_known_one_used(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None})
    await c.send({"type": "response.create", "event_id": "r1", "response": {"voice": "nova"}})
    err = await c.error()
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "response.voice", "r1")
    assert "alloy, en-US-AvaNeural, scripted" in err["message"]
    base = await answer_samples(c)  # no response was started by the refused one
    await c.send({"type": "response.create", "response": {"voice": {
        "type": "azure-standard", "name": "en-US-AvaNeural", "rate": "2.0"}}})
    err = await c.error()
    assert err["param"] == "response.voice.rate"
    await c.send({"type": "response.create", "response": {"voice": {
        "type": "azure-standard", "name": "en-US-AvaNeural", "rate": "1.5"}}})
    evs = await c.until("response.done")
    fast = sum(len(base64.b64decode(e["delta"])) // 2 for e in evs if e["type"] == "response.audio.delta")
    assert abs(fast / base - 1 / 1.5) < 0.05, (base, fast)
    await c.close()


async def test_voice_live_voice_and_rate(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None})
    base = await answer_samples(c)
    session = await c.update({"voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "rate": "1.5"}})
    assert session["voice"]["name"] == "en-US-AvaNeural"
    fast = await answer_samples(c)
    assert abs(fast / base - 1 / 1.5) < 0.05, (base, fast)
    await c.update({"voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "rate": "-50%"}})
    slow = await answer_samples(c)
    assert abs(slow / base - 2.0) < 0.1, (base, slow)
    await c.close()


def test_voices_endpoint(server: ServerThread) -> None:
    body: dict[str, Any] = httpx.get(server.http + "/v1/voices").json()
    assert body["strict"] is True and body["default_engine_voice"] == "scripted"
    assert [(v["id"], v["engine_voice"]) for v in body["data"]] == [
        ("alloy", "scripted"), ("en-US-AvaNeural", "scripted"), ("scripted", "scripted")]


def test_map_rules() -> None:
    vm = VoiceMap(VoiceMapSettings(map={"alloy": "amy"}), lambda: ["joe", "amy"])
    assert vm.resolve("alloy") == "amy"
    assert vm.resolve({"type": "openai", "name": "amy"}) == "amy"  # an engine voice by its own name
    assert vm.resolve("en-US-AvaNeural") == "joe"  # not strict: the engine's default
    assert vm.resolve({"name": "x", "type": "azure-standard", "rate": "+20%"}).rate == pytest.approx(1.2)
    strict = VoiceMap(VoiceMapSettings(map={"alloy": "amy"}, strict=True, default="amy"), lambda: ["joe", "amy"])
    with pytest.raises(ProtocolError) as info:
        strict.resolve("echo")
    assert info.value.param == "session.voice" and "alloy, joe, amy" in info.value.message
    lenient = strict.resolve("echo", lenient=True)  # mid-response: the default, never an error
    assert isinstance(lenient, EngineVoice) and lenient == "amy"
    assert [parse_rate(v) for v in ("0.5", 1.5, "x-fast", "slow", "-10%")] == [0.5, 1.5, 1.5, 0.75, 0.9]
    for bad in ("2", "fastest", True, "+80%"):
        with pytest.raises(ProtocolError):
            parse_rate(bad)


async def test_map_to_a_voice_the_engine_lacks_fails_the_load() -> None:
    settings = scripted_settings(tts={"voice_map": {"map": {"alloy": "en_US-amy-medium"}}})
    with pytest.raises(EngineLoadError) as info:
        await build_engines(settings)
    assert info.value.stage == "tts" and "tts.voice_map.map.alloy" in str(info.value)
