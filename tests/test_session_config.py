"""session.update in process (tests/session_harness.py): what the session cannot deliver is said."""

from __future__ import annotations

from session_harness import new_session, transport_of


async def test_word_timestamps_from_a_tts_without_timings_are_warned_once() -> None:
    s = await new_session()  # the scripted TTS gives no word timings
    update = {"type": "session.update", "session": {"output_audio_timestamp_types": ["word"]}}
    await s.handle_event(update)
    warnings = transport_of(s).of("warning")
    assert len(warnings) == 1, warnings
    w = warnings[0]["warning"]
    assert w["code"] == "unsupported_setting" and "output_audio_timestamp_types" in w["message"]
    assert "scripted-tts" in w["message"]
    assert transport_of(s).types()[-1] == "session.updated"  # still applied: the rest works
    await s.handle_event(update)  # asked again: already said
    assert len(transport_of(s).of("warning")) == 1
