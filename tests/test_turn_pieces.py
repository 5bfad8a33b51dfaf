"""Long turns transcribed in pieces while the caller talks (`stt.piece_s`, realtime/turn_pieces.py).

In process (tests/session_harness.py) on the scripted stand-in engines: `ScriptedSTT.heard` is
the length of audio each transcription was given, and `ScriptedSTT.script` the texts the calls
return in order, so which audio went to which call shows. The real models hear a long turn in
test_long_turns.py.
"""

from __future__ import annotations

from typing import Any

from livevox.engines.scripted import ScriptedLLM, ScriptedSTT
from session_harness import feed, new_session, settle, speech, transport_of
from support_audio import silence

STT_RATE = 16000
COMPLETED = "conversation.item.input_audio_transcription.completed"


async def three_sentences(piece_s: float, texts: list[str],
                          **settings: Any) -> tuple[list[int], str, list[dict[str, object]]]:
    """1.2 s of speech, a 0.3 s pause, 1.2 s, 0.3 s, 0.5 s, then the end of turn: what each STT
    call heard, the committed transcript, and the LLM's last user message."""
    s = await new_session(stt={"engine": "scripted", "piece_s": piece_s}, **settings)
    ScriptedSTT.script(texts)
    for seconds in (1.2, 1.2):
        await feed(s, speech(seconds))
        await feed(s, silence(0.3))  # a pause: past stt.tail_ms, short of silence_duration_ms
        await settle(s)
    await feed(s, speech(0.5))
    await feed(s, silence(0.8))
    await settle(s)
    events = transport_of(s).of(COMPLETED)
    assert len(events) == 1, transport_of(s).types()
    return list(ScriptedSTT.heard), str(events[0]["transcript"]), ScriptedLLM.calls[-1].messages


async def test_a_long_turn_is_transcribed_piece_by_piece_and_joined() -> None:
    heard, transcript, messages = await three_sentences(1.0, ["first part", "second part", "the end"])
    # Three calls, each on its own part: the two pieces closed at the pauses, then the rest.
    assert len(heard) == 3, heard
    assert all(n < 2.0 * STT_RATE for n in heard), heard  # no call heard two parts
    assert transcript == "first part second part the end"
    assert messages[-1] == {"role": "user", "content": "first part second part the end"}
    # The pieces wait behind other sessions' ended turns; the rest is the turn's own transcript.
    assert [o.background for o in ScriptedSTT.options] == [True, True, False]


async def test_without_pieces_the_turn_is_transcribed_whole() -> None:
    heard, transcript, _ = await three_sentences(0.0, ["first part", "two parts", "the whole turn"])
    # A speculation at each pause, each on the whole turn so far; the last one is the transcript.
    assert len(heard) == 3 and heard[-1] > 3.0 * STT_RATE, heard
    assert transcript == "the whole turn"


async def test_a_failed_piece_falls_back_to_the_whole_turn() -> None:
    s = await new_session(stt={"engine": "scripted", "piece_s": 1.0})
    ScriptedSTT.fail_next = True  # the first piece
    await feed(s, speech(1.2))
    await feed(s, silence(0.3))
    await settle(s)
    ScriptedSTT.script(["all of it"])
    await feed(s, speech(0.5))
    await feed(s, silence(0.8))
    await settle(s)
    assert transport_of(s).of(COMPLETED)[0]["transcript"] == "all of it"
    assert ScriptedSTT.heard[-1] > 1.6 * STT_RATE  # the whole turn, not just the rest


async def test_a_cleared_turns_pieces_are_not_reused() -> None:
    s = await new_session(stt={"engine": "scripted", "piece_s": 1.0})
    ScriptedSTT.script(["cleared words"])
    await feed(s, speech(1.2))
    await feed(s, silence(0.3))
    await settle(s)
    assert s.turns.pieces.pieces  # a piece of the turn so far
    await s.handle_event({"type": "input_audio_buffer.clear"})
    assert not s.turns.pieces.pieces
    await feed(s, silence(0.5))
    ScriptedSTT.script(["a new turn"])
    await feed(s, speech(0.6))
    await feed(s, silence(0.8))
    await settle(s)
    assert [e["transcript"] for e in transport_of(s).of(COMPLETED)] == ["a new turn"]


async def test_the_next_turn_starts_without_the_last_ones_pieces() -> None:
    s = await new_session(stt={"engine": "scripted", "piece_s": 1.0})
    ScriptedSTT.script(["one long", "turn", "short turn"])
    await feed(s, speech(1.2))
    await feed(s, silence(0.3))
    await feed(s, speech(0.4))
    await feed(s, silence(0.8))
    await settle(s)
    await feed(s, speech(0.6))
    await feed(s, silence(0.8))
    await settle(s)
    assert [e["transcript"] for e in transport_of(s).of(COMPLETED)] == ["one long turn", "short turn"]


async def test_the_pieces_words_are_prefilled_into_the_llm_as_the_answers_prompt() -> None:
    _, _, messages = await three_sentences(1.0, ["first part", "second part", "the end"])
    # One prefill per piece, each the answer's own prompt up to the words heard so far, so the
    # answer at the end shares its prefix (a prompt cache then evaluates only the rest).
    fills = [r.messages for r in ScriptedLLM.prefills]
    assert [m[-1] for m in fills] == [{"role": "user", "content": "first part"},
                                      {"role": "user", "content": "first part second part"}]
    for m in fills:
        assert m[:-1] == messages[:-1]
        assert str(messages[-1]["content"]).startswith(str(m[-1]["content"]) + " ")
    assert all(r.tools == ScriptedLLM.calls[-1].tools for r in ScriptedLLM.prefills)


async def test_no_prefill_when_turned_off_or_when_the_turn_gets_no_answer() -> None:
    await three_sentences(1.0, ["first part", "second part", "the end"], llm={"engine": "scripted",
                                                                              "prefill_pieces": False})
    assert ScriptedLLM.prefills == []
    s = await new_session(stt={"engine": "scripted", "piece_s": 1.0})
    await s.handle_event({"type": "session.update", "session": {
        "turn_detection": {"type": "server_vad", "create_response": False}}})
    ScriptedSTT.script(["first part", "the end"])
    await feed(s, speech(1.2))
    await feed(s, silence(0.3))
    await settle(s)
    assert s.turns.pieces.pieces and ScriptedLLM.prefills == []
