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

import pytest

from livevox.realtime.config import _READ_ONLY, SessionModel
from livevox.realtime.dialects import _GA_SESSION_KEYS
from livevox.realtime.response_request import KNOWN_RESPONSE_FIELDS
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient, types

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


def test_the_tables_list_exactly_what_the_server_accepts() -> None:
    session_fields = {r["field"] for r in SESSION}
    assert session_fields == set(SessionModel.model_fields) | _READ_ONLY | {"prompt"}
    for key in _GA_SESSION_KEYS:  # each GA key is a row, or the GA spelling of one
        assert key in session_fields or any(f"`{key}" in r["dialects"] for r in SESSION), key
    response_fields = {r["field"] for r in RESPONSE}
    assert response_fields == set(KNOWN_RESPONSE_FIELDS) | {"additional_instructions"}
    for key in GA_RESPONSE_ONLY:
        assert any(f"`{key}" in r["dialects"] for r in RESPONSE), key
    for r in SESSION + RESPONSE:
        assert r["status"] in ("implemented", "rejected", "read-only", "warned"), r


@pytest.mark.parametrize("row", [r for r in SESSION + RESPONSE if r["status"] in ("implemented", "warned")],
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
