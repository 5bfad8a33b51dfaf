"""WebRTC transport: the Voice Live calls door, the OpenAI calls door and their shared call core."""

from .doors import join_sideband, webrtc_routes
from .registry import CallRegistry, call_registry

__all__ = ["CallRegistry", "call_registry", "join_sideband", "webrtc_routes"]
