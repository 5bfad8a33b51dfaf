"""Voice Live conversation features through the WebSocket, with real audio and real models
(Silero, Smart Turn, Whisper tiny.en, Piper). The LLM is the scripted stand-in so the answers,
and therefore the agent's audio, are the same every run. Each feature is checked on and off."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from livevox.engines.scripted import ScriptedLLM
from server_harness import ServerThread, embedded_settings
from support_audio import espeak, fixture
from wsclient import RealtimeClient, silence, types

RATE = 24000
INTERRUPT_AT = 4.0  # seconds into echo_call's microphone where the interruption starts


def speak(text: str, voice: str = "en-us", wpm: int = 140) -> np.ndarray:
    """espeak-ng speech at 24 kHz, by default 140 wpm (the fixtures' pace)."""
    return espeak(text, voice, wpm=wpm, rate=RATE)


async def stream_realtime(c: RealtimeClient, pcm: np.ndarray, chunk_ms: int = 40) -> None:
    """Append at real-time pace against a monotonic clock, as a microphone would."""
    step = RATE * chunk_ms // 1000
    t0 = time.monotonic()
    for i, at in enumerate(range(0, len(pcm), step)):
        await c.send({"type": "input_audio_buffer.append",
                      "audio": base64.b64encode(pcm[at:at + step].tobytes()).decode()})
        await asyncio.sleep(max(0.0, t0 + (i + 1) * chunk_ms / 1000 - time.monotonic()))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(llm={"engine": "scripted"})).start(timeout=300)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def reset_llm() -> Iterator[None]:
    ScriptedLLM.reset()
    yield
    ScriptedLLM.reset()


# ------------------------------------------------------------------ semantic end of turn


@pytest.mark.parametrize("mode", ["server_vad", "azure_semantic_vad"])
async def test_paused_sentence_cut_off_only_without_semantic_vad(server: ServerThread, mode: str) -> None:
    audio = np.concatenate([silence(0.3), speak("Please send the report to my"), silence(1.0),
                            speak("manager before noon"), silence(2.2)])
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": {"type": mode, "create_response": False},
                    "input_audio_transcription": {"model": "whisper-1"}})
    await stream_realtime(c, audio)
    await c.quiet(1.5)  # the last turn's transcript comes after the audio
    commits = [e for e in c.events if e["type"] == "input_audio_buffer.committed"]
    done = [e for e in c.events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    texts = [e["transcript"] for e in done]
    # each committed turn was transcribed, so the texts below are the turns' own
    assert sorted(e["item_id"] for e in done) == sorted(e["item_id"] for e in commits), texts
    if mode == "server_vad":
        assert len(commits) == 2, texts  # cut off in the pause
    else:
        assert len(commits) == 1, texts  # waited through the pause
        assert "report" in texts[0].lower() and "noon" in texts[0].lower()
    await c.close()


# ------------------------------------------------------------------ filler words


async def said_over_an_answer(server: ServerThread, td: dict[str, Any], audio: np.ndarray,
                              interrupts: bool) -> None:
    """The agent answers at length; `audio` is said over it. It either interrupts the answer and
    becomes the user's turn, or the answer completes and no turn is committed."""
    ScriptedLLM.reply = "Here is a long answer that keeps going for a while, " * 6
    ScriptedLLM.token_delay = 0.08
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": td})
    await c.send({"type": "response.create"})
    await c.until("response.audio.delta", timeout=20)
    await stream_realtime(c, np.concatenate([audio, silence(1.5)]))
    evs = await c.until("response.done", timeout=30)
    seq = types(c.events)
    assert "input_audio_buffer.speech_started" in seq
    if interrupts:
        assert evs[-1]["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        await c.until("input_audio_buffer.committed", timeout=10)  # the interruption is the user's turn
    else:
        assert evs[-1]["response"]["status"] == "completed"
        assert "input_audio_buffer.committed" not in seq  # neither a barge-in nor a turn
    await c.close()


@pytest.mark.parametrize("remove", [True, False])
async def test_backchannel_during_answer(server: ServerThread, remove: bool) -> None:
    await said_over_an_answer(server, {"type": "azure_semantic_vad", "remove_filler_words": remove},
                              fixture("backchannel_yeah.wav", RATE), interrupts=not remove)


@pytest.mark.parametrize(("said", "voice", "interrupts"), [
    ("Okay.", "en-gb", False),  # an acknowledgement alone (turn.backchannels)
    ("Hmm.", "en-us+f2", False),  # tiny.en heard "Emm..." without the over-answer prompt
    ("I see.", "en-us+m3", False),
    ("Oh, okay.", "en-gb+f1", False),  # about 1 s: once barged in for its length alone
    ("Stop.", "en-us", True),
    ("No, the other one.", "en-gb", True),
    ("Okay, book it.", "en-us", True),  # more than an acknowledgement: a turn
])
async def test_over_the_answer_backchannels_and_interruptions(server: ServerThread, said: str, voice: str,
                                                             interrupts: bool) -> None:
    await said_over_an_answer(server, {"type": "server_vad", "remove_filler_words": True},
                              np.concatenate([silence(0.3), speak(said, voice)]), interrupts)


# ------------------------------------------------------------------ echo cancellation


async def echo_call(server: ServerThread, aec: bool, interrupt: np.ndarray | None) -> list[dict[str, Any]]:
    """The agent's own answer comes back into the microphone (120 ms later, -10 dB), as from
    a loudspeaker; optionally a real interruption is mixed over it from INTERRUPT_AT on.
    Returns every event of the call, session.created and session.updated first."""
    ScriptedLLM.reply = ("Sure. Let me tell you about the weather in Paris this week, it will be sunny "
                         "on Monday and Tuesday, with some rain on Wednesday and a cool breeze on Thursday, "
                         "and then the weekend looks warm and bright for a walk along the river.")
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": {"type": "server_vad", "create_response": False},
                    "input_audio_echo_cancellation": {"type": "server_echo_cancellation"} if aec else None})
    await c.send({"type": "response.create"})
    # The client's loudspeaker, as a real client plays: each delta starts when it arrives or
    # when what is queued before it ends, whichever is later (a fixed timeline from t0 would
    # make the echo lead the server's reference whenever the first audio comes late).
    speaker = np.zeros(10 * 60 * RATE, np.float64)
    play_end = 0
    delay, gain, step = int(0.12 * RATE), 0.32, RATE // 50
    t0 = time.monotonic()
    n_frames = 9 * 50
    mic_pos = 0
    for i in range(n_frames):
        try:
            while True:
                ev = await c.recv(0.001)
                if ev["type"] == "response.audio.delta":
                    pcm = np.frombuffer(base64.b64decode(ev["delta"]), "<i2")
                    at = max(play_end, mic_pos)
                    n = max(0, min(pcm.size, speaker.size - at))
                    speaker[at:at + n] = pcm[:n]
                    play_end = at + pcm.size
        except TimeoutError:
            pass
        lo = mic_pos - delay
        frame = speaker[lo:lo + step] * gain if lo >= 0 else np.zeros(step, np.float64)
        frame = frame.copy()
        if interrupt is not None:
            start = int(INTERRUPT_AT * RATE)
            seg = interrupt[max(0, mic_pos - start): max(0, mic_pos + step - start)]
            if mic_pos + step > start and seg.size:
                frame[-seg.size:] += seg if mic_pos >= start else 0
        mic_pos += step
        await c.send({"type": "input_audio_buffer.append",
                      "audio": base64.b64encode(np.clip(frame, -32768, 32767).astype("<i2").tobytes()).decode()})
        await asyncio.sleep(max(0.0, t0 + (i + 1) / 50 - time.monotonic()))
    await c.quiet(0.5)
    await c.close()
    return c.events


@pytest.mark.parametrize("aec", [True, False])
async def test_agent_echo_does_not_barge_in_with_aec(server: ServerThread, aec: bool) -> None:
    events = types(await echo_call(server, aec, None))
    assert "response.audio.delta" in events
    started = "input_audio_buffer.speech_started" in events
    assert started is (not aec), events.count("input_audio_buffer.speech_started")


async def test_real_interruption_over_echo_still_barges_in(server: ServerThread) -> None:
    interrupt = speak("Stop, stop, I have a different question", "en-gb")
    events = await echo_call(server, True, interrupt)
    td = next(e for e in events if e["type"] == "session.updated")["session"]["turn_detection"]
    # audio_start_ms is where the speech began less the prefix padding: add it back
    heard_ms = [e["audio_start_ms"] + td["prefix_padding_ms"] for e in events
                if e["type"] == "input_audio_buffer.speech_started"]
    assert heard_ms, types(events)
    start_ms = INTERRUPT_AT * 1000
    end_ms = start_ms + interrupt.size * 1000 / RATE
    # The first speech the server heard is the interruption, not leaked echo before it (to within
    # one 32 ms VAD frame: a frame that starts just before the interruption holds its first sound).
    assert start_ms - 32 <= heard_ms[0] < end_ms, (heard_ms, start_ms, end_ms)


# ------------------------------------------------------------------ noise suppression


@pytest.mark.parametrize("ns", [True, False])
async def test_noise_suppression_cleans_what_the_server_hears(server: ServerThread, ns: bool) -> None:
    rng = np.random.default_rng(7)
    speech = fixture("question_capital.wav", RATE)
    clean = np.concatenate([silence(1.0), speech, silence(1.2)]).astype(np.float64)
    noise = rng.normal(0, 900, clean.size)  # steady hiss, ~ -31 dBFS
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None,
                    "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"} if ns else None})
    await c.append(np.clip(clean + noise, -32768, 32767).astype(np.int16))
    await c.send({"type": "input_audio_buffer.commit"})
    item_id = (await c.until("input_audio_buffer.committed"))[-1]["item_id"]
    await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await c.until("conversation.item.retrieved"))[-1]["item"]
    heard = np.frombuffer(base64.b64decode(item["content"][0]["audio"]), "<i2").astype(np.float64)
    pause = heard[int(0.3 * RATE):int(0.9 * RATE)]  # noise only
    floor_db = 20 * np.log10(np.sqrt(np.mean(pause ** 2)) + 1e-9)
    raw_db = 20 * np.log10(900)
    if ns:
        assert floor_db < raw_db - 10, (floor_db, raw_db)
    else:
        # unchanged but for the band limit of the 16 kHz path (white noise loses ~1.8 dB)
        assert abs(floor_db - raw_db) < 3, (floor_db, raw_db)
    await c.close()


# ------------------------------------------------------------------ word timestamps and visemes


@pytest.mark.parametrize("on", [True, False])
async def test_word_timestamps_and_visemes(server: ServerThread, on: bool) -> None:
    ScriptedLLM.reply = "The capital of France is Paris. It is lovely in spring."
    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None, **({"output_audio_timestamp_types": ["word"],
                                                 "animation": {"outputs": ["viseme_id"]}} if on else {})})
    await c.send({"type": "response.create"})
    evs = await c.until("response.done", timeout=30)
    words = [e for e in evs if e["type"] == "response.audio_timestamp.delta"]
    vis = [e for e in evs if e["type"] == "response.animation_viseme.delta"]
    if not on:
        assert not words and not vis
        await c.close()
        return
    audio_ms = sum(len(base64.b64decode(e["delta"])) for e in evs if e["type"] == "response.audio.delta") / 48
    assert [w["text"].strip(".,").lower() for w in words] == [
        "the", "capital", "of", "france", "is", "paris", "it", "is", "lovely", "in", "spring"]
    offsets = [w["audio_offset_ms"] for w in words]
    assert offsets == sorted(offsets) and offsets[-1] < audio_ms
    assert all(w["timestamp_type"] == "word" and w["audio_duration_ms"] > 0 for w in words)
    assert vis and all(0 <= v["viseme_id"] <= 21 for v in vis)
    assert max(v["audio_offset_ms"] for v in vis) <= audio_ms
    seq = types(evs)
    assert seq.index("response.audio_timestamp.done") > seq.index("response.audio_transcript.done")
    assert "response.animation_viseme.done" in seq
    # each word's event follows the audio it describes
    first_word = seq.index("response.audio_timestamp.delta")
    assert seq.index("response.audio.delta") < first_word
    await c.close()


# ------------------------------------------------------------------ voices


async def test_voice_rate_changes_piper_speed(server: ServerThread) -> None:
    ScriptedLLM.reply = "The capital of France is Paris. It is lovely in spring."

    async def answer_ms(c: RealtimeClient) -> float:
        await c.send({"type": "response.create"})
        evs = await c.until("response.done", timeout=30)
        return sum(len(base64.b64decode(e["delta"])) for e in evs if e["type"] == "response.audio.delta") / 48

    c = await RealtimeClient.connect(server.ws)
    await c.update({"turn_detection": None, "voice": {"type": "azure-standard", "name": "en-US-AvaNeural"}})
    normal = await answer_ms(c)
    await c.update({"voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "rate": "1.5"}})
    fast = await answer_ms(c)
    await c.update({"voice": {"type": "azure-standard", "name": "en-US-AvaNeural", "rate": "0.5"}})
    slow = await answer_ms(c)
    # Piper's length scale stretches the phonemes; pauses between sentences do not scale exactly
    assert 0.55 < fast / normal < 0.8, (normal, fast)
    assert 1.6 < slow / normal < 2.3, (normal, slow)
    await c.close()
