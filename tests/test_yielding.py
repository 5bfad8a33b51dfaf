"""Yielding: a spoken answer far ahead of its caller's playback stops generating while another
session's answer waits for its first clause, and resumes from its own text (`llm.yield_ahead_s`,
`llm.yield_resume_s`; realtime/first_clause.py, realtime/response.py).

Through the real server on loopback and two WebSocket clients, with the scripted stand-in engines
(ScriptedLLM with `continues`, as llama.cpp does; a slow first token stands for a prefill).
Pacing itself is set far away (60 s), so any resumed stream here is a yield.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from livevox.engines.scripted import ScriptedLLM
from server_harness import ServerThread, scripted_settings
from wsclient import RealtimeClient

pytestmark = pytest.mark.usefixtures("fresh_scripts")

SENTENCE = "This is one more sentence of a long spoken answer."  # 10 words: 600 ms of audio
REPLY = " ".join([SENTENCE] * 20)  # 12 s of audio, 2 s to generate at 10 ms a word


def _server(yield_ahead_s: float) -> ServerThread:
    return ServerThread(scripted_settings(llm={"engine": "scripted", "pace_ahead_s": 60.0,
                                               "yield_ahead_s": yield_ahead_s, "yield_resume_s": 0.5})).start()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = _server(1.0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def no_yield_server() -> Iterator[ServerThread]:
    srv = _server(0.0)
    yield srv
    srv.stop()


async def ask(server: ServerThread, question: str) -> tuple[RealtimeClient, list[dict[str, Any]]]:
    """A text question; the client and its events up to the answer's first audio."""
    c = await RealtimeClient.connect(server.ws)
    await c.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}})
    await c.send({"type": "response.create"})
    return c, await c.until("response.audio.delta", timeout=10)


async def two_callers(server: ServerThread) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Caller A asks; at A's first audio (A's answer still generating), caller B asks."""
    ScriptedLLM.reply = REPLY
    ScriptedLLM.continues = True
    ScriptedLLM.token_delay = 0.01
    ScriptedLLM.first_token_delay = 0.4
    a, a_evs = await ask(server, "Tell me a story.")
    b, b_evs = await ask(server, "Tell me another story.")
    a_evs += await a.until("response.done", timeout=30)
    b_evs += await b.until("response.done", timeout=30)
    await a.close()
    await b.close()
    return a_evs, b_evs


def transcript(evs: list[dict[str, Any]]) -> str:
    return next(e["transcript"] for e in evs if e["type"] == "response.audio_transcript.done")


def asked(call: Any) -> str:
    user = next(m for m in reversed(call.messages) if m["role"] == "user")
    return ScriptedLLM._text(user["content"])


def resumed(call: Any) -> bool:
    return call.messages[-1]["role"] == "assistant"


def yields_total(server: ServerThread) -> float:
    text = httpx.get(server.http + "/metrics").text
    m = re.search(r"^livevox_llm_yields_total (\S+)$", text, re.M)
    assert m, "livevox_llm_yields_total missing from /metrics"
    return float(m.group(1))


async def test_an_answer_far_ahead_yields_to_another_callers_first_clause(server: ServerThread) -> None:
    before = yields_total(server)
    a_evs, b_evs = await two_callers(server)
    for evs in (a_evs, b_evs):
        assert evs[-1]["response"]["status"] == "completed", evs[-1]
        assert transcript(evs) == REPLY  # spoken in full, once: the resumed stream went on
    calls = ScriptedLLM.calls
    b_first = next(i for i, c in enumerate(calls) if asked(c) == "Tell me another story." and not resumed(c))
    a_resumed = [i for i, c in enumerate(calls) if asked(c) == "Tell me a story." and resumed(c)]
    # A stopped while B waited for its first clause and went on from its own text after B's started.
    assert a_resumed and a_resumed[0] > b_first, [(asked(c), resumed(c)) for c in calls]
    last = calls[a_resumed[0]].messages[-1]["content"]
    assert REPLY.startswith(last) and 0 < len(last) < len(REPLY)
    assert yields_total(server) > before


async def test_without_yielding_the_first_answer_runs_through(no_yield_server: ServerThread) -> None:
    a_evs, b_evs = await two_callers(no_yield_server)
    for evs in (a_evs, b_evs):
        assert evs[-1]["response"]["status"] == "completed"
        assert transcript(evs) == REPLY
    assert not any(resumed(c) for c in ScriptedLLM.calls)
