"""OpenTelemetry traces of turns, through the real server on loopback: off by default; when on,
one span tree per turn (end of turn, STT, LLM with its first token, each clause's TTS with its
queue wait, first audio), carrying the session and response ids and never the words unless the
operator opts in; exported over OTLP/HTTP to a loopback collector stand-in when configured.

Stand-in engines for VAD, STT and LLM; the real Piper voice for TTS, so that TTS runs as queued jobs.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from livevox.engines.scripted import ScriptedLLM, ScriptedSTT
from server_harness import ServerThread, free_port, scripted_settings
from wsclient import RealtimeClient, silence, tone

pytestmark = pytest.mark.usefixtures("fresh_scripts")


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[ServerThread, InMemorySpanExporter]]:
    srv = ServerThread(scripted_settings(tts={"engine": "piper"}, tracing={"enabled": True})).start(timeout=300)
    exporter = InMemorySpanExporter()
    tracer = srv.app.state.livevox.turn_tracer
    assert tracer is not None
    tracer.provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield srv, exporter
    srv.stop()


async def turn_span(exporter: InMemorySpanExporter) -> Any:
    """The turn's root span. It is made once the response is done, just after response.done is
    sent, so it may not exist yet when the client reads that event."""
    for _ in range(200):
        roots = [s for s in exporter.get_finished_spans() if s.name == "turn"]
        if roots:
            assert len(roots) == 1, roots
            return roots[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no turn span within 10 s of response.done")


async def spoken_turn(srv: ServerThread) -> dict[str, Any]:
    c = await RealtimeClient.connect(srv.ws)
    try:
        view = await c.update({"input_audio_transcription": {"model": "whisper-1"}})
        await c.append(np.concatenate([tone(0.8), silence(0.8)]))
        evs = await c.until("response.done", timeout=30)
        return {"session": view["id"], "response": evs[-1]["response"]["id"]}
    finally:
        await c.close()


def test_tracing_is_off_by_default() -> None:
    srv = ServerThread(scripted_settings()).start()
    try:
        assert srv.app.state.livevox.turn_tracer is None
    finally:
        srv.stop()


async def test_one_span_tree_per_turn(traced: tuple[ServerThread, InMemorySpanExporter]) -> None:
    srv, exporter = traced
    exporter.clear()
    ScriptedLLM.reply = "Paris is the capital of France. It lies on the Seine."
    ScriptedSTT.script(["what is the capital of france"])
    ids = await spoken_turn(srv)
    root = await turn_span(exporter)
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == root.context.trace_id]
    children = [s for s in spans if s is not root]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children)
    names = [s.name for s in children]
    for name in ("end_of_turn", "stt", "llm", "tts", "first_audio"):
        assert name in names, names
    for s in spans:  # ids on every span, and no words
        assert s.attributes["livevox.session_id"] == ids["session"]
        assert s.attributes["livevox.response_id"] == ids["response"]
        assert not any("text" in k for k in s.attributes), s.attributes
    for s in children:  # inside the turn, in time
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time, s.name
    tts = [s for s in children if s.name == "tts"]
    assert all(s.attributes["livevox.queue_wait_ms"] >= 0 for s in tts)
    llm = next(s for s in children if s.name == "llm")
    assert [e.name for e in llm.events] == ["first_token"]
    first_audio = next(s for s in children if s.name == "first_audio")
    assert first_audio.end_time >= min(s.start_time for s in tts)  # the audio came from a clause's TTS


async def test_words_only_when_the_operator_opts_in(traced: tuple[ServerThread, InMemorySpanExporter]) -> None:
    srv, exporter = traced
    tracer = srv.app.state.livevox.turn_tracer
    exporter.clear()
    ScriptedLLM.reply = "It is sunny."
    ScriptedSTT.script(["how is the weather"])
    tracer.include_text = True
    try:
        await spoken_turn(srv)
    finally:
        tracer.include_text = False
    root = await turn_span(exporter)
    assert root.attributes["livevox.user_text"] == "how is the weather"
    assert root.attributes["livevox.agent_text"] == "It is sunny."


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint() -> None:
    port = free_port()
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    _Collector.received = []
    srv = ServerThread(scripted_settings(tts={"engine": "piper"}, tracing={
        "enabled": True, "otlp_endpoint": f"http://127.0.0.1:{port}/v1/traces"})).start(timeout=300)
    try:
        await spoken_turn(srv)
    finally:
        srv.stop()  # the exporter's batch is flushed at shutdown
        collector.shutdown()
    assert _Collector.received, "no OTLP request reached the collector"
    path, ctype, body = _Collector.received[0]
    assert path == "/v1/traces" and ctype == "application/x-protobuf"
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(body)
    names = {s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert {"turn", "tts", "first_audio"} <= names, names
