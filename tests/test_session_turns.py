"""Turn-taking, speculation, barge-in, truncation and item order, in process (tests/session_harness.py):
the session and its parts on the scripted stand-in engines, with a fake transport, no sockets
and no sleeps. The end-to-end suites (test_protocol.py, test_webrtc.py, ...) remain the proof
through real clients; these pin the decisions themselves, fast."""

from __future__ import annotations

from livevox.engines.scripted import ScriptedLLM, ScriptedSTT
from livevox.realtime.session import RealtimeSession
from session_harness import PlayoutTransport, feed, new_session, settle, speech, transport_of
from support_audio import silence

TURN_EVENTS = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
               "input_audio_buffer.committed", "conversation.item.created"]


def in_order(seq: list[str], wanted: list[str]) -> bool:
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


async def answer_waiting_to_play(**turn_detection: object) -> tuple[RealtimeSession, PlayoutTransport, str]:
    """A session on a playout transport whose whole answer is generated and still queued, unheard."""
    transport = PlayoutTransport()
    s = await new_session(transport)
    if turn_detection:
        await s.handle_event({"type": "session.update", "session": {"turn_detection": {
            "type": "server_vad", **turn_detection}}})
    await s.handle_event({"type": "response.create"})
    await settle(s)
    item = transport.pending_audio()
    assert item is not None
    return s, transport, item


async def test_a_spoken_turn_is_committed_transcribed_and_answered() -> None:
    s = await new_session()
    await feed(s, speech(1.0))
    await feed(s, silence(0.8))
    await settle(s)
    t = transport_of(s).types()
    assert in_order(t, [*TURN_EVENTS, "conversation.item.input_audio_transcription.completed", "response.done"]), t
    user = transport_of(s).of("conversation.item.input_audio_transcription.completed")[0]
    assert user["transcript"] == "scripted transcript"
    done = transport_of(s).of("response.done")[0]["response"]
    assert done["status"] == "completed"
    # The conversation holds the user's turn, then the answer to it.
    roles = [e.item.get("role") for e in s.conversation.entries]
    assert roles == ["user", "assistant"], roles


async def test_speculation_is_adopted_the_llm_runs_once_on_the_committed_transcript() -> None:
    s = await new_session()
    ScriptedSTT.script(["what is the capital of france"])
    await feed(s, speech(1.0))
    await feed(s, silence(0.8))
    await settle(s)
    # One transcription (the speculative one, adopted at commit) and one LLM request on it.
    assert len(ScriptedSTT.heard) == 1, list(ScriptedSTT.heard)
    assert len(ScriptedLLM.calls) == 1
    assert ScriptedLLM.calls[0].messages[-1] == {"role": "user", "content": "what is the capital of france"}
    assert len(transport_of(s).of("response.created")) == 1
    # It covered the speech and its tail (stt.tail_ms), not the rest of the silence window.
    tail = s.settings.stt.tail_ms * 16
    assert ScriptedSTT.heard[0] <= 16000 * 1.0 + tail + 16000 * 0.3  # + prefix padding and VAD framing


async def test_speech_resuming_in_the_pause_drops_the_speculation_without_a_trace() -> None:
    s = await new_session()
    ScriptedSTT.script(["half a question", "the whole question"])
    await feed(s, speech(0.8))
    await feed(s, silence(0.3))  # past stt.tail_ms: speculation starts; short of silence_duration_ms
    assert s.turns.spec is not None
    await feed(s, speech(0.6))
    assert s.turns.spec is None  # dropped when the user went on
    await feed(s, silence(0.8))
    await settle(s)
    t = transport_of(s).types()
    assert t.count("input_audio_buffer.committed") == 1 and t.count("response.created") == 1, t
    final = transport_of(s).of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert final == "the whole question"
    assert ScriptedLLM.calls[-1].messages[-1]["content"] == "the whole question"


async def test_barge_in_over_audio_still_playing_cuts_it_and_truncates_to_what_was_heard() -> None:
    s, transport, item = await answer_waiting_to_play(auto_truncate=True)
    transport.play(300)
    await feed(s, speech(0.5))  # the user speaks over it
    assert transport.discarded == [item]
    truncated = transport.of("conversation.item.truncated")
    assert truncated and truncated[0]["item_id"] == item and truncated[0]["audio_end_ms"] == 300, truncated
    assert s.conversation.get(item).audio_ms() == 300


async def test_a_backchannel_with_remove_filler_words_leaves_the_answer_playing() -> None:
    s, transport, item = await answer_waiting_to_play(remove_filler_words=True)
    ScriptedSTT.script(["mm-hmm"])
    await feed(s, speech(0.3))
    await feed(s, silence(0.8))
    await settle(s)
    t = transport.types()
    assert "input_audio_buffer.speech_started" in t
    assert transport.discarded == [] and transport.pending_audio() == item  # still audible
    assert "input_audio_buffer.committed" not in t  # neither a barge-in nor a turn


async def test_a_two_word_backchannel_is_not_too_long_to_be_one() -> None:
    # "Oh, okay." at 140 wpm lasts about a second: its length, counted from the speech (not from
    # the prefix padding before it), is within turn.backchannel_max_ms, so its words decide.
    s, transport, item = await answer_waiting_to_play(remove_filler_words=True)
    ScriptedSTT.script(["Oh, okay."])
    await feed(s, speech(1.0))
    assert transport.discarded == []
    await feed(s, silence(0.8))
    await settle(s)
    assert transport.discarded == [] and transport.pending_audio() == item
    assert "input_audio_buffer.committed" not in transport.types()


async def test_a_real_interruption_with_remove_filler_words_barges_in() -> None:
    s, transport, item = await answer_waiting_to_play(remove_filler_words=True)
    await feed(s, speech(1.5))  # longer than any backchannel: barge-in before the turn ends
    assert transport.discarded == [item]
    assert "input_audio_buffer.committed" not in transport.types()  # it is still speaking


async def test_truncate_is_clamped_to_what_the_transport_played() -> None:
    s, transport, item = await answer_waiting_to_play()
    transport.play(200)
    await s.handle_event({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                          "audio_end_ms": 900})
    ev = transport.of("conversation.item.truncated")[-1]
    assert ev["audio_end_ms"] == 200
    assert transport.discarded == [item]  # and the rest of it stops playing


async def test_items_are_ordered_by_previous_item_id() -> None:
    s = await new_session()

    def msg(text: str) -> dict[str, object]:
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}

    await s.handle_event({"type": "conversation.item.create", "item": {**msg("one"), "id": "item_one"}})
    await s.handle_event({"type": "conversation.item.create", "item": {**msg("three"), "id": "item_three"}})
    await s.handle_event({"type": "conversation.item.create", "item": {**msg("two"), "id": "item_two"},
                          "previous_item_id": "item_one"})
    await s.handle_event({"type": "conversation.item.create", "item": {**msg("zero"), "id": "item_zero"},
                          "previous_item_id": "root"})
    assert [e.id for e in s.conversation.entries] == ["item_zero", "item_one", "item_two", "item_three"]
    created = transport_of(s).of("conversation.item.created")
    assert [c["previous_item_id"] for c in created] == [None, "item_one", "item_one", None]


async def test_append_is_refused_when_audio_travels_as_rtp() -> None:
    transport = PlayoutTransport()
    s = await new_session(transport)
    await s.handle_frame('{"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"}')
    err = transport.of("error")[-1]["error"]
    assert err["code"] == "unsupported_event" and err["event_id"] == "e1" and err["param"] == "type"


async def test_a_semantic_mode_without_an_end_of_turn_model_is_refused_at_session_update() -> None:
    s = await new_session()  # turn.engine = "none"
    await s.handle_frame('{"type": "session.update", "event_id": "u1", '
                         '"session": {"turn_detection": {"type": "azure_semantic_vad"}}}')
    err = transport_of(s).of("error")[-1]["error"]
    assert err["param"] == "session.turn_detection.type" and err["event_id"] == "u1", err
    assert s.config["turn_detection"]["type"] == "server_vad"  # nothing applied
    assert "session.updated" not in transport_of(s).types()


async def semantic_turn_end_ms(transcript: str | None) -> int:
    """azure_semantic_vad with a stand-in end-of-turn model that calls every utterance complete:
    where (ms of input audio) the turn ends when the speculative transcript is `transcript`
    (None: the transcription fails)."""
    s = await new_session(turn={"engine": "scripted"})
    await s.handle_event({"type": "session.update", "session": {"turn_detection": {"type": "azure_semantic_vad"}}})
    if transcript is None:
        ScriptedSTT.fail_next = True
    else:
        ScriptedSTT.script([transcript])
    await feed(s, speech(1.0))
    await feed(s, silence(2.5))
    await settle(s)
    stops = transport_of(s).of("input_audio_buffer.speech_stopped")
    assert len(stops) == 1, transport_of(s).types()
    return int(stops[0]["audio_end_ms"])


async def test_a_semantic_turn_heard_as_no_words_waits_to_the_cap() -> None:
    # The audio says finished. Words that finish the sentence end the turn after the short silence
    # (500 ms); speech heard as no words at all is no finished request: it waits to the cap (1500 ms).
    # A failed transcription says nothing about the words: the audio decides, as with words.
    with_words = await semantic_turn_end_ms("What time is it?")
    wordless = await semantic_turn_end_ms("")
    failed = await semantic_turn_end_ms(None)
    assert with_words < 1000 + 1000 <= wordless, (with_words, wordless)
    assert failed < 1000 + 1000, failed


async def test_a_semantic_turn_that_trails_off_waits_to_the_cap() -> None:
    # Whisper's ellipsis ("would be...") is a voice trailing off mid-sentence: held to the cap,
    # while the same words finished end the turn after the short silence.
    finished = await semantic_turn_end_ms("I think the best option would be the train.")
    trailing = await semantic_turn_end_ms("I think the best option would be...")
    assert finished < 1000 + 1000 <= trailing, (finished, trailing)
