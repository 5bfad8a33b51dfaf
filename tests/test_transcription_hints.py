"""`input_audio_transcription` options: model names, language lists, `prompt` and Voice Live
`phrase_list` (OpenAI GA `keywords`), and what reaches each STT engine.

- validation and model names through the real server on the scripted stand-in engines;
- the options the session derives (`transcribe_options`), and how the faster-whisper engine
  uses them, with a stand-in in place of the CTranslate2 model (named as such below);
- the remote engine's `prompt`/`language` form fields, at the loopback stand-in HTTP engine;
- the real Whisper tiny.en on espeak-ng speech: the phrase list (and the prompt) make it hear
  a rare place name it gets wrong without.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from engine_standin import EngineStandIn
from livevox.engines.base import TranscribeOptions
from livevox.engines.scripted import ScriptedSTT
from livevox.engines.whisper import FasterWhisperSTT
from livevox.realtime.transcription_options import TRANSCRIPTION_MODELS, transcribe_options
from server_harness import ServerThread, embedded_settings, scripted_settings
from support_audio import espeak
from wsclient import RealtimeClient, silence, tone

GA_PATH = "/v1/realtime?model=gpt-realtime"
P = "session.input_audio_transcription"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(scripted_settings()).start()
    yield srv
    srv.stop()


async def committed_transcript(c: RealtimeClient, pcm: np.ndarray) -> str:
    await c.append(pcm)
    await c.send({"type": "input_audio_buffer.commit"})
    evs = await c.until("conversation.item.input_audio_transcription.completed", timeout=60)
    return str(evs[-1]["transcript"])


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(("tr", "code", "param"), [
    ({"model": "whisper-2"}, "invalid_value", f"{P}.model"),
    ({"model": 5}, "invalid_type", f"{P}.model"),
    ({"model": "azure-speech", "custom_speech": {"en-US": "my-model-id"}}, "unsupported_feature",
     f"{P}.custom_speech"),
    ({"phrase_list": "Contoso"}, "invalid_type", f"{P}.phrase_list"),
    ({"phrase_list": ["Contoso", 7]}, "invalid_type", f"{P}.phrase_list[1]"),
    ({"phrase_list": ["x"] * 501}, "invalid_value", f"{P}.phrase_list"),
    ({"phrase_list": ["a" * 201]}, "invalid_value", f"{P}.phrase_list[0]"),
    ({"keywords": [None]}, "invalid_type", f"{P}.keywords[0]"),
    ({"language": "english!"}, "invalid_value", f"{P}.language"),
    ({"language": ",".join(["en"] * 11)}, "invalid_value", f"{P}.language"),
    ({"language": ["en"]}, "invalid_type", f"{P}.language"),
    ({"languages": ["en", "x!"]}, "invalid_value", f"{P}.languages"),
    ({"prompt": 5}, "invalid_type", f"{P}.prompt"),
    ("whisper-1", "invalid_type", P),
])
async def test_bad_transcription_settings_are_errors_and_the_session_goes_on(
        server: ServerThread, tr: Any, code: str, param: str) -> None:
    c = await RealtimeClient.connect(server.ws)
    await c.send({"type": "session.update", "event_id": "evt_tr", "session": {"input_audio_transcription": tr}})
    err = await c.error()
    assert (err["code"], err["param"], err["event_id"]) == (code, param, "evt_tr"), err
    assert err["type"] == "invalid_request_error" and err["message"]
    s = await c.update({"input_audio_transcription": {"model": "azure-speech", "phrase_list": ["Contoso"]}})
    assert s["input_audio_transcription"] == {"model": "azure-speech", "phrase_list": ["Contoso"]}
    await c.close()


async def test_ga_transcription_error_names_the_param(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws, GA_PATH)
    await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "transcription": {"model": "whisper-9"}}}}})
    err = await c.error()
    assert err["param"] == f"{P}.model" and "whisper-9" in err["message"], err
    await c.close()


async def test_phrase_list_characters_outside_azures_set_are_removed(server: ServerThread) -> None:
    c = await RealtimeClient.connect(server.ws)
    s = await c.update({"input_audio_transcription": {
        "model": "azure-speech", "phrase_list": ["Contoso™ Ltd", "  C++ & C#  ", "!!!", "Zoë's café", "a@b.com"]}})
    # "!" is not in Azure's allowed set; letters of any locale are
    assert s["input_audio_transcription"]["phrase_list"] == ["Contoso Ltd", "C++ & C#", "Zoë s café", "a@b.com"]
    await c.close()


async def test_voicelive_sdk_sends_phrase_list_and_custom_speech(server: ServerThread) -> None:
    from azure.ai.voicelive.aio import connect
    from azure.ai.voicelive.models import AudioInputTranscriptionOptions, RequestSession
    from azure.core.credentials import AzureKeyCredential

    async with connect(endpoint=server.http, credential=AzureKeyCredential("k"), model="gpt-realtime") as conn:
        await conn.session.update(session=RequestSession(input_audio_transcription=AudioInputTranscriptionOptions(
            model="azure-speech", language="en-US,fr-FR", phrase_list=["Contoso", "Ouagadougou"])))
        await conn.session.update(session=RequestSession(input_audio_transcription=AudioInputTranscriptionOptions(
            model="azure-speech", custom_speech={"en-US": "my-model-id"})))
        got: dict[str, Any] = {}
        async for ev in conn:
            if ev.type == "session.updated":
                got["updated"] = ev.session.input_audio_transcription
            elif ev.type == "error":
                got["error"] = ev.error
                break
    tr = got["updated"]
    assert (tr.model, tr.language, tr.phrase_list) == ("azure-speech", "en-US,fr-FR", ["Contoso", "Ouagadougou"])
    assert (got["error"].code, got["error"].param) == ("unsupported_feature", f"{P}.custom_speech")


# ------------------------------------------------------------------ model names


@pytest.mark.parametrize("model", [*sorted(TRANSCRIPTION_MODELS), "gpt-4o-mini-transcribe-2025-12-15"])
@pytest.mark.usefixtures("fresh_scripts")
async def test_every_model_name_runs_the_configured_engine_and_is_echoed(server: ServerThread, model: str) -> None:
    c = await RealtimeClient.connect(server.ws, GA_PATH)
    s = await c.update({"type": "realtime", "audio": {"input": {
        "transcription": {"model": model, "language": "en-US"}, "turn_detection": None}}})
    assert s["audio"]["input"]["transcription"] == {"model": model, "language": "en-US"}
    ScriptedSTT.script([f"heard by {model}"])
    assert await committed_transcript(c, tone(0.3)) == f"heard by {model}"
    await c.close()


# ------------------------------------------------------------------ options for the engine


def test_language_lists_and_hints_become_engine_options() -> None:
    one = transcribe_options({"language": "en-GB", "prompt": "Names: Ouagadougou."}, "de")
    assert (one.language, one.languages, one.prompt) == ("en", (), "Names: Ouagadougou.")
    many = transcribe_options({"language": "en-US, de-DE,fr", "phrase_list": ["Contoso"],
                               "keywords": ["Fabrikam"]}, "en")
    assert (many.language, many.languages, many.phrases) == (None, ("en", "de", "fr"), ("Contoso", "Fabrikam"))
    assert many.hint_text() == "Contoso, Fabrikam"
    ga = transcribe_options({"languages": ["pt-BR", "es"]}, "en")
    assert (ga.language, ga.languages) == (None, ("pt", "es"))
    default = transcribe_options(None, "en-US")
    assert (default.language, default.languages, default.prompt, default.phrases) == ("en", (), None, ())
    assert TranscribeOptions(prompt="Spell: ", phrases=("A", "B")).hint_text() == "Spell:  A, B"


class StandInWhisperModel:
    """A STAND-IN for faster_whisper.WhisperModel (not a model): records the engine's calls and
    reports fixed language probabilities."""

    def __init__(self, multilingual: bool) -> None:
        self.model = type("CT2", (), {"is_multilingual": multilingual})()
        self.transcribe_calls: list[dict[str, Any]] = []
        self.detected = 0

    def detect_language(self, audio: Any) -> tuple[str, float, list[tuple[str, float]]]:
        self.detected += 1
        return "en", 0.6, [("en", 0.6), ("fr", 0.25), ("de", 0.1), ("es", 0.05)]

    def transcribe(self, audio: Any, **kw: Any) -> tuple[list[Any], None]:
        self.transcribe_calls.append(kw)
        return [type("Seg", (), {"text": " words"})()], None


async def _run(stt: FasterWhisperSTT, options: TranscribeOptions) -> dict[str, Any]:
    audio = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    assert "".join([p async for p in stt.transcribe(audio, options, "t")]) == "words"
    model: StandInWhisperModel = stt._model
    return model.transcribe_calls[-1]


async def test_whisper_restricts_detection_to_the_list_and_passes_the_hints() -> None:
    stt = FasterWhisperSTT(language="en")
    stt._model = StandInWhisperModel(multilingual=True)
    kw = await _run(stt, TranscribeOptions(languages=("de", "fr"), prompt="A trip.", phrases=("Ouagadougou", "Aoife")))
    assert kw["language"] == "fr"  # English is likelier, but not on the list
    assert kw["initial_prompt"] == "A trip." and kw["hotwords"] == "Ouagadougou, Aoife"
    kw = await _run(stt, TranscribeOptions(languages=("xx", "de")))
    assert kw["language"] == "de" and kw["hotwords"] is None and kw["initial_prompt"] is None
    kw = await _run(stt, TranscribeOptions(language="es"))
    assert kw["language"] == "es" and stt._model.detected == 2  # one code: no detection
    kw = await _run(stt, TranscribeOptions())
    assert kw["language"] == "en"  # the engine's configured language


async def test_english_only_whisper_ignores_the_list() -> None:
    stt = FasterWhisperSTT(language="en")
    stt._model = StandInWhisperModel(multilingual=False)
    kw = await _run(stt, TranscribeOptions(languages=("de", "fr")))
    assert kw["language"] == "en" and stt._model.detected == 0


# ------------------------------------------------------------------ remote engine: the form fields


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def remote_stt(standin: EngineStandIn) -> AsyncIterator[ServerThread]:
    stt = {"engine": "openai", "openai": {"base_url": standin.base_url, "model": "whisper-1", "warmup": False,
                                          "max_retries": 1}}
    srv = await asyncio.to_thread(ServerThread(scripted_settings(stt=stt)).start)
    yield srv
    await asyncio.to_thread(srv.stop)


async def test_remote_stt_gets_prompt_phrases_and_language(remote_stt: ServerThread, standin: EngineStandIn) -> None:
    standin.reset()
    c = await RealtimeClient.connect(remote_stt.ws)
    await c.update({"turn_detection": None, "input_audio_transcription": {
        "model": "gpt-4o-transcribe", "language": "en-US", "prompt": "A travel booking.",
        "phrase_list": ["Ouagadougou", "Aoife"]}})
    assert await committed_transcript(c, tone(0.5)) == "stand-in transcript"
    form = [r for r in standin.requests if r.path.endswith("/audio/transcriptions")][-1].body
    assert form["prompt"] == "A travel booking. Ouagadougou, Aoife"
    assert form["language"] == "en" and form["model"] == "whisper-1"  # the configured remote model
    # a list: the endpoint takes one code, so it is left to detect
    await c.update({"input_audio_transcription": {"model": "whisper-1", "language": "en,fr"}})
    await committed_transcript(c, tone(0.5))
    form = [r for r in standin.requests if r.path.endswith("/audio/transcriptions")][-1].body
    assert "language" not in form and "prompt" not in form
    await c.close()


# ------------------------------------------------------------------ the real Whisper tiny.en


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerThread]:
    srv = ServerThread(embedded_settings(llm={"engine": "scripted"}, tts={"engine": "scripted"})).start(timeout=300)
    yield srv
    srv.stop()


SENTENCE = "I want to fly to Ouagadougou next week."


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    return np.concatenate([silence(0.3), espeak(SENTENCE, "en-us", wpm=150, rate=24000), silence(0.5)])


@pytest.mark.parametrize(("path", "tr", "hears"), [
    (None, {"model": "azure-speech"}, False),
    (None, {"model": "azure-speech", "phrase_list": ["Ouagadougou"]}, True),
    (GA_PATH, {"model": "whisper-1", "prompt": "Ouagadougou"}, True),
], ids=["no-hint", "phrase_list", "ga-prompt"])
async def test_the_hint_makes_whisper_hear_the_place_name(
        embedded: ServerThread, utterance: np.ndarray, path: str | None, tr: dict[str, Any], hears: bool) -> None:
    c = await RealtimeClient.connect(embedded.ws, path) if path else await RealtimeClient.connect(embedded.ws)
    if path:
        await c.update({"type": "realtime", "audio": {"input": {"transcription": tr, "turn_detection": None}}})
    else:
        await c.update({"turn_detection": None, "input_audio_transcription": tr})
    text = await committed_transcript(c, utterance)
    print(f"{tr} -> {text!r}")
    assert "fly" in text.lower() and "week" in text.lower(), text  # the rest is heard either way
    assert ("ouagadougou" in text.lower()) is hears, text
    await c.close()
