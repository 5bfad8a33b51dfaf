"""The WebSocket realtime endpoints (`/voice-live/realtime`, `/v1/realtime`, ...): one session per socket."""

from __future__ import annotations

from starlette.websockets import WebSocket

from ..transports.websocket import WebSocketTransport, read_frames
from .auth import chosen_subprotocol
from .state import LivevoxState, SessionRequest

REALTIME_PATHS = (
    "/voice-live/realtime",
    "/v1/realtime",
    "/openai/v1/realtime",
    "/openai/realtime",
)


def session_request(ws: WebSocket) -> SessionRequest:
    return SessionRequest(path=ws.url.path, headers=ws.headers, query=ws.query_params)


async def admit(ws: WebSocket, state: LivevoxState) -> bool:
    """Authenticate and check capacity before the upgrade; refuse with a JSON HTTP error. Admitted,
    the door counts its session (`state.track`) before it next awaits."""
    refusal = state.refusal(ws.headers, ws.query_params)
    if refusal is not None:
        await ws.send_denial_response(refusal)
        return False
    return True


async def serve_realtime(ws: WebSocket, state: LivevoxState) -> None:
    if not await admit(ws, state):
        return
    # Counted before the first await: concurrent handshakes cannot all pass the same free place.
    transport = WebSocketTransport(ws)
    session = state.new_session(session_request(ws), transport)
    release = state.track(session, "websocket")
    try:
        await ws.accept(subprotocol=chosen_subprotocol(ws.headers))
        await session.start()
        await read_frames(ws, session.handle_frame, transport)
    finally:
        await release()
        await transport.close()
