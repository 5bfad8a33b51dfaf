"""The field tables of docs/protocol.md against the server: they list exactly the fields that
`session.update` and `response.create` accept (in all three dialects), every implemented field
names a test that exists, and every rejected field's probe gets `unsupported_feature` naming it,
through the real server. A field added to the schema without a row here fails this test.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from livevox.engines.scripted import ScriptedLLM
from livevox.realtime.config import _READ_ONLY, SessionModel, TurnDetection
from livevox.realtime.dialects import _GA_SESSION_KEYS
from livevox.realtime.response_request import KNOWN_RESPONSE_FIELDS
from livevox.realtime.speech_segmenter import SpeechSegmenter, SpeechStarted
from livevox.realtime.transcription_options import TRANSCRIPTION_FIELDS
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient, silence, tone, types

pytestmark = pytest.mark.usefixtures("fresh_scripts")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
GA_PATH = "/v1/realtime?model=gpt-realtime"
#: GA `response.create` keys that the GA dialect translates (dialects.py inbound).
GA_RESPONSE_ONLY = {"output_modalities", "audio", "reasoning"}


def table(title: str) -> list[dict[str, str]]:
    """The rows of the table under `### {title}` in docs/protocol.md."""
    text = DOC.read_text()
    section = text.split(f"### {title}", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    out = []
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        field, dialects, status, how, evidence = cells
        for name in re.findall(r"`([^`]+)`", field):
            out.append({"field": name, "dialects": dialects, "status": status, "how": how, "evidence": evidence})
    return out


SESSION = table("Session")
RESPONSE = table("Response")
TURN = table("Turn detection")
TRANSCRIPTION = table("Transcription")
NESTED = {"turn_detection": TURN, "input_audio_transcription": TRANSCRIPTION}


def test_the_tables_list_exactly_what_the_server_accepts() -> None:
    session_fields = {r["field"] for r in SESSION}
    assert session_fields == set(SessionModel.model_fields) | _READ_ONLY | {"prompt"}
    for key in _GA_SESSION_KEYS:  # each GA key is a row, or the GA spelling of one
        assert key in session_fields or any(f"`{key}" in r["dialects"] for r in SESSION), key
    response_fields = {r["field"] for r in RESPONSE}
    assert response_fields == set(KNOWN_RESPONSE_FIELDS) | {"additional_instructions"}
    for key in GA_RESPONSE_ONLY:
        assert any(f"`{key}" in r["dialects"] for r in RESPONSE), key
    assert {r["field"] for r in TURN} == set(TurnDetection.model_fields)
    assert {r["field"] for r in TRANSCRIPTION} == set(TRANSCRIPTION_FIELDS)
    for r in SESSION + RESPONSE + TURN + TRANSCRIPTION:
        assert r["status"] in ("implemented", "rejected", "read-only", "warned"), r


@pytest.mark.parametrize("row", [r for r in SESSION + RESPONSE + TURN + TRANSCRIPTION
                                 if r["status"] in ("implemented", "warned")],
                         ids=lambda r: r["field"])
def test_each_implemented_field_names_a_test_that_exists(row: dict[str, str]) -> None:
    m = re.fullmatch(r"`(test_\w+\.py)::(test_\w+)`", row["evidence"])
    assert m, row
    source = (ROOT / "tests" / m.group(1)).read_text()
    assert re.search(rf"^(async )?def {m.group(2)}\(", source, re.M), row


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings()).start()
    yield srv
    srv.stop()


def probe_of(row: dict[str, str]) -> object:
    m = re.fullmatch(r"`probe: (.+)`", row["evidence"])
    assert m, row
    return json.loads(m.group(1))


@pytest.mark.parametrize("row", [r for r in SESSION if r["status"] == "rejected"], ids=lambda r: r["field"])
async def test_each_rejected_session_field_is_refused_by_name(server: ServerThread, row: dict[str, str]) -> None:
    ga = row["dialects"].startswith("GA")
    c = await RealtimeClient.connect(server.ws, GA_PATH) if ga else await RealtimeClient.connect(server.ws)
    try:
        session = {row["field"]: probe_of(row), **({"type": "realtime"} if ga else {})}
        await c.send({"type": "session.update", "event_id": "evt_audit", "session": session})
        err = await c.error()
        assert (err["code"], err["param"], err["event_id"]) == (
            "unsupported_feature", f"session.{row['field']}", "evt_audit"), err
        await c.send({"type": "response.create", "response": {"instructions": "hi"}})
        assert (await c.until("response.done"))[-1]["response"]["status"] == "completed"
    finally:
        await c.close()


@pytest.mark.parametrize("row", [r for r in TRANSCRIPTION if r["status"] == "rejected"], ids=lambda r: r["field"])
async def test_each_rejected_transcription_field_is_refused_by_name(server: ServerThread,
                                                                    row: dict[str, str]) -> None:
    c = await RealtimeClient.connect(server.ws)
    try:
        await c.send({"type": "session.update", "event_id": "evt_audit",
                      "session": {"input_audio_transcription": {"model": "whisper-1", row["field"]: probe_of(row)}}})
        err = await c.error()
        assert (err["code"], err["param"]) == (
            "unsupported_feature", f"session.input_audio_transcription.{row['field']}"), err
        view = await c.update({"input_audio_transcription": {"model": "whisper-1"}})
        assert view["input_audio_transcription"]["model"] == "whisper-1"
    finally:
        await c.close()


@pytest.mark.parametrize(("obj", "extra"), [("turn_detection", {"type": "server_vad"}),
                                            ("input_audio_transcription", {"model": "whisper-1"})])
async def test_an_unknown_nested_field_is_an_unknown_parameter(server: ServerThread, obj: str,
                                                               extra: dict[str, object]) -> None:
    c = await RealtimeClient.connect(server.ws)
    try:
        await c.send({"type": "session.update", "event_id": "evt_nested",
                      "session": {obj: {**extra, "window_size": 3}}})
        err = await c.error()
        assert (err["code"], err["param"], err["event_id"]) == (
            "unknown_parameter", f"session.{obj}.window_size", "evt_nested"), err
    finally:
        await c.close()


def test_segmenter_honours_threshold_prefix_and_minimum_speech() -> None:
    frame = 512  # 32 ms at 16 kHz
    base = {"threshold": 0.5, "prefix_padding_ms": 64, "silence_duration_ms": 500, "speech_duration_ms": 64}

    def starts(cfg: dict[str, object], probs: list[float]) -> list[int]:
        seg = SpeechSegmenter(cfg, frame)
        return [e.start_sample for e in seg.process(probs, 0) if isinstance(e, SpeechStarted)]

    speech = [0.0] * 10 + [0.6] * 10
    assert starts(base, speech) == [10 * frame - 1024]  # 64 ms of prefix before the run
    assert starts({**base, "threshold": 0.7}, speech) == []  # 0.6 is not speech at 0.7
    assert starts({**base, "prefix_padding_ms": 0}, speech) == [10 * frame]
    blip = [0.0] * 10 + [0.9] * 3 + [0.0] * 10  # 96 ms of speech
    assert starts(base, blip) != [] and starts({**base, "speech_duration_ms": 200}, blip) == []


async def test_turn_detection_languages_are_checked(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    try:
        td = {"type": "azure_semantic_vad", "languages": ["en", "de-DE"]}
        assert (await c.update({"turn_detection": td}))["turn_detection"]["languages"] == ["en", "de-DE"]
        await c.send({"type": "session.update", "session": {"turn_detection": {**td, "languages": ["not a code"]}}})
        assert (await c.error())["param"] == "session.turn_detection.languages[0]"
    finally:
        await c.close()


async def test_appended_text_after_truncation(server: ServerThread) -> None:
    ScriptedLLM.reply = " ".join(["word"] * 60) + "."
    ScriptedLLM.token_delay = 0.02
    c = await RealtimeClient.connect(server.ws)
    try:
        await c.update({"turn_detection": {"type": "server_vad", "auto_truncate": True, "silence_duration_ms": 300,
                                           "appended_text_after_truncation": " [cut]"}})
        await c.append(np.concatenate([tone(0.6), silence(0.5)]))
        await c.until("response.audio.delta")
        await c.append(np.concatenate([tone(0.6), silence(0.5)]))  # the user speaks over the answer
        evs = await c.until("conversation.item.truncated")
        item_id = evs[-1]["item_id"]
        await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item = (await c.until("conversation.item.retrieved"))[-1]["item"]
        transcript = item["content"][0]["transcript"]
        assert transcript.endswith(" [cut]") and transcript.count("word") < 60, transcript
    finally:
        await c.close()


@pytest.mark.parametrize("row", [r for r in RESPONSE if r["status"] == "rejected"], ids=lambda r: r["field"])
async def test_each_rejected_response_field_is_refused_by_name(server: ServerThread, row: dict[str, str]) -> None:
    ga = row["dialects"].startswith("GA")
    c = await RealtimeClient.connect(server.ws, GA_PATH) if ga else await RealtimeClient.connect(server.ws)
    try:
        await c.send({"type": "response.create", "event_id": "evt_audit", "response": {row["field"]: probe_of(row)}})
        err = await c.error()
        assert (err["code"], err["param"], err["event_id"]) == (
            "unsupported_feature", f"response.{row['field']}", "evt_audit"), err
        await c.send({"type": "response.create"})
        assert (await c.until("response.done"))[-1]["response"]["status"] == "completed"
    finally:
        await c.close()


async def test_session_metadata_is_echoed(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    try:
        view = await c.update({"metadata": {"customer": "42"}})
        assert view["metadata"] == {"customer": "42"}
    finally:
        await c.close()


@pytest.mark.parametrize("path", [None, GA_PATH], ids=["voicelive", "ga"])
async def test_session_speed_changes_the_speaking_rate(server: ServerThread, path: str | None) -> None:
    """The stand-in TTS speaks 60 ms per word at speed 1: twice as fast is half as long."""
    c = await RealtimeClient.connect(server.ws, path) if path else await RealtimeClient.connect(server.ws)
    try:
        lengths = []
        for speed in (1.0, 2.0):
            session: dict[str, object] = ({"type": "realtime", "audio": {"output": {"speed": speed}}} if path
                                          else {"speed": speed})
            await c.send({"type": "session.update", "session": session})
            await c.until("session.updated")
            await c.send({"type": "response.create"})
            evs = await c.until("response.done")
            delta = "response.output_audio.delta" if path else "response.audio.delta"
            lengths.append(sum(len(base64.b64decode(e["delta"])) // 2 for e in evs if e["type"] == delta))
        assert lengths[0] > 0 and abs(lengths[1] * 2 - lengths[0]) <= 0.02 * lengths[0], lengths
    finally:
        await c.close()


@pytest.mark.parametrize("path", [None, GA_PATH], ids=["voicelive", "ga"])
async def test_tracing_is_accepted_with_a_warning(server: ServerThread, path: str | None) -> None:
    c = await RealtimeClient.connect(server.ws, path) if path else await RealtimeClient.connect(server.ws)
    try:
        session: dict[str, object] = {"tracing": "auto", **({"type": "realtime"} if path else {})}
        await c.send({"type": "session.update", "session": session})
        evs = await c.until("session.updated")
        warning = next(e for e in evs if e["type"] == "warning")
        assert "tracing" in warning["warning"]["message"]
        assert evs[-1]["session"]["tracing"] == "auto"
    finally:
        await c.close()


async def test_response_animation_asks_for_visemes(piper_server: ServerThread) -> None:
    c = await RealtimeClient.connect(piper_server.ws)
    try:
        await c.update({"turn_detection": None})
        await c.send({"type": "response.create", "response": {"animation": {"outputs": ["viseme_id"]}}})
        evs = await c.until("response.done", timeout=30)
        assert "response.animation_viseme.delta" in types(evs)
        await c.send({"type": "response.create"})  # the session's setting (none) is unchanged
        evs = await c.until("response.done", timeout=30)
        assert "response.animation_viseme.delta" not in types(evs)
    finally:
        await c.close()
