"""Protocol names the server's dialects and the client (`livevox call`) share."""

from __future__ import annotations

#: Server events the OpenAI GA dialect names differently: canonical (Voice Live, OpenAI beta) -> GA.
GA_EVENT_NAMES = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "conversation.item.created": "conversation.item.added",
}
#: The same, GA -> canonical.
CANONICAL_EVENT_NAMES = {ga: canonical for canonical, ga in GA_EVENT_NAMES.items()}


def is_voice_live_path(path: str) -> bool:
    """Voice Live's endpoints (`/voice-live/realtime`, `/voice-live/realtime/calls`); the rest speak OpenAI."""
    return "voice-live" in path
