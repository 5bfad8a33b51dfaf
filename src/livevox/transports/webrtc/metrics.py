"""Prometheus metrics of the WebRTC doors: calls, negotiation errors and outbound media pacing."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS_ACTIVE = Gauge("livevox_webrtc_calls_active", "Open WebRTC calls.", ["door"])
CALLS_TOTAL = Counter("livevox_webrtc_calls_total", "WebRTC calls negotiated.", ["door"])
CALL_ERRORS_TOTAL = Counter("livevox_webrtc_call_errors_total", "Refused SDP offers and failed calls.",
                            ["code"])
CALLS_ENDED_TOTAL = Counter("livevox_webrtc_calls_ended_total", "WebRTC calls ended, by reason.", ["reason"])

#: |interval between two outbound frames - 20 ms|. p99 under 10 ms is the pacing target.
FRAME_JITTER_SECONDS = Histogram(
    "livevox_webrtc_frame_jitter_seconds",
    "Outbound audio frame-interval jitter: |interval - 20 ms|.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.5),
)
FRAMES_SENT = Counter("livevox_webrtc_frames_sent_total", "Outbound 20 ms audio frames sent.")
UNDERRUN_FRAMES = Counter("livevox_webrtc_underrun_frames_total",
                          "Outbound frames padded with silence while a response's audio was late.")
MEDIA_CLOCK_RESETS = Counter("livevox_webrtc_media_clock_resets_total",
                             "Times the outbound media clock fell more than 100 ms behind and was re-anchored.")
