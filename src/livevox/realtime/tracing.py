"""OpenTelemetry traces: one span tree per turn, made from the turn's marks and model jobs once
the response is done (so tracing adds nothing to the turn's own path).

    turn                                  end of speech -> response done
    ├── end_of_turn                       end of speech -> end-of-turn decision
    ├── stt                               each STT job: queued -> finished (queue wait attribute)
    ├── llm                               response start -> LLM done; `first_token` event
    ├── tts                               each clause's TTS job: queued -> finished (queue wait)
    └── first_audio                       response start -> first audio sent

Spans carry the session id and the response id; the user's and the agent's words only when the
operator opts in (`tracing.include_text`). Off by default; OTLP/HTTP when an endpoint is set.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

if TYPE_CHECKING:
    from ..settings import TracingSettings
    from .metrics import TurnTimings

class TurnTracer:
    """A server's tracing: its provider (exporters attach to it), and the turns it records."""

    def __init__(self, settings: TracingSettings) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        self.include_text = settings.include_text
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> TurnTracer | None:
        """None when tracing is off (the default)."""
        return cls(settings) if settings.enabled else None

    def shutdown(self) -> None:
        self.provider.shutdown()

    def record_turn(self, session_id: str, response_id: str, status: str, timings: TurnTimings,
                    user_text: str | None = None, agent_text: str | None = None) -> None:
        record_turn(self.provider.get_tracer("livevox.turn"), self.include_text, session_id, response_id,
                    status, timings, user_text, agent_text)


def record_turn(tracer: trace.Tracer, include_text: bool, session_id: str, response_id: str, status: str,
                timings: TurnTimings, user_text: str | None = None, agent_text: str | None = None) -> None:
    """The turn's span tree, from what its timings recorded."""
    marks = timings.marks
    start = marks.get("speech_end", timings.response_start)
    if start is None:
        return
    now = time.monotonic()
    offset = time.time_ns() - time.monotonic_ns()

    def ns(t: float) -> int:
        return int(t * 1e9) + offset

    ids: dict[str, Any] = {"livevox.session_id": session_id, "livevox.response_id": response_id}
    root_attrs: dict[str, Any] = {**ids, "livevox.response_status": status}
    if include_text:
        if user_text:
            root_attrs["livevox.user_text"] = user_text
        if agent_text:
            root_attrs["livevox.agent_text"] = agent_text
    root = tracer.start_span("turn", start_time=ns(start), attributes=root_attrs)
    ctx = trace.set_span_in_context(root)

    def child(name: str, begin: float, end: float, **attrs: Any) -> Any:
        span = tracer.start_span(name, context=ctx, start_time=ns(begin), attributes={**ids, **attrs})
        span.end(end_time=ns(max(begin, end)))
        return span

    if "speech_end" in marks and "eot_decision" in marks:
        child("end_of_turn", marks["speech_end"], marks["eot_decision"])
    jobs = list(timings.jobs)
    waits = {j.stage: round((j.started - j.queued) * 1e3, 1) for j in reversed(jobs)}  # each stage's first
    for job in jobs:  # the STT and each clause's TTS, as the stage executors ran them
        if job.stage in ("stt", "tts"):
            child(job.stage, job.queued, job.finished,
                  **{"livevox.queue_wait_ms": round((job.started - job.queued) * 1e3, 1)})
    response_start = timings.response_start or marks.get("eot_decision", start)
    if "stt" not in waits and "transcript_final" in marks and "eot_decision" in marks:
        child("stt", marks["eot_decision"], marks["transcript_final"])  # an engine with no local queue
    llm_end = marks.get("llm_done")
    if llm_end is not None:
        attrs = {**ids, **({"livevox.queue_wait_ms": waits["llm"]} if "llm" in waits else {})}
        llm = tracer.start_span("llm", context=ctx, start_time=ns(response_start), attributes=attrs)
        if "llm_first_token" in marks:
            llm.add_event("first_token", timestamp=ns(marks["llm_first_token"]))
        llm.end(end_time=ns(max(response_start, llm_end)))
    if "first_audio_sent" in marks:
        child("first_audio", response_start, marks["first_audio_sent"])
    root.end(end_time=ns(now))
