"""Settings a session may ask for that its engines cannot deliver.

`session.update` accepts word timestamps and visemes whatever the TTS engine; without this the
features would just never arrive. `capability_warnings` says so once, in the update that asks:
the session sends each message as a `warning` event (code `unsupported_setting`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engines.base import AlignedTTS, Engine


def wants_word_timestamps(config: dict[str, Any]) -> bool:
    """`output_audio_timestamp_types` lists "word"."""
    types = config.get("output_audio_timestamp_types")
    return isinstance(types, list) and "word" in types


def wants_visemes(config: dict[str, Any]) -> bool:
    """`animation.outputs` lists "viseme_id"."""
    anim = config.get("animation")
    outputs = anim.get("outputs") if isinstance(anim, dict) else None
    return isinstance(outputs, list) and "viseme_id" in outputs


# (asks for it, what the message calls it, the setting, the events that will not come)
_FEATURES: tuple[tuple[Callable[[dict[str, Any]], bool], str, str, str], ...] = (
    (wants_word_timestamps, "Word timestamps", 'output_audio_timestamp_types: ["word"]',
     "response.audio_timestamp.delta"),
    (wants_visemes, "Visemes", 'animation.outputs: ["viseme_id"]', "response.animation_viseme.delta"),
)


def capability_warnings(new_config: dict[str, Any], old_config: dict[str, Any], tts: object,
                        prefix: str = "session") -> list[str]:
    """A message for each feature `new_config` asks for that `tts` cannot deliver, when
    `old_config` did not ask for it already (a session is told once, not on every update)."""
    if isinstance(tts, AlignedTTS):
        return []
    name = tts.name if isinstance(tts, Engine) else type(tts).__name__
    return [
        f"{what} ({prefix}.{setting}) are not produced: the TTS engine '{name}' gives no word or "
        f"phoneme timings, so no {events} events will be sent."
        for wants, what, setting, events in _FEATURES
        if wants(new_config) and not wants(old_config)
    ]
