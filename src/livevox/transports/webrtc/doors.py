"""The two WebRTC front doors, over one call core (`RtcCall`):

- Voice Live: WebSocket signalling on `/voice-live/realtime/calls` (same query parameters and
  authentication as `/voice-live/realtime`): `rtc.call.sdp.create` -> `rtc.call.sdp.created` /
  `rtc.call.error`; the socket stays open as the control channel.
- OpenAI: `POST /v1/realtime/calls` (`application/sdp`, or multipart `sdp` + `session`) -> 201 with
  the SDP answer and `Location: /v1/realtime/calls/{call_id}`; `GET /v1/realtime?call_id=` joins a
  side-band WebSocket; `POST /v1/realtime/calls/{call_id}/hangup` ends the call. Also served under
  `/openai/v1/...` (the Azure OpenAI path shape).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from ...realtime import jsonguard
from ...realtime.dialects import OpenAIGADialect
from ...realtime.errors import ProtocolError
from ...realtime.ids import new_id
from ...realtime.metrics import SESSIONS_ACTIVE, SESSIONS_TOTAL
from ...realtime.session import RealtimeSession
from ...realtime.transport import Route as EventRoute
from ...server.auth import chosen_subprotocol, is_authorized
from ..websocket import WebSocketTransport
from .metrics import CALL_ERRORS_TOTAL
from .peer import RtcCall
from .registry import CallRegistry, call_registry
from .sdp import MAX_SDP_BYTES, OfferError, validate_offer
from .transport import WebRTCTransport

if TYPE_CHECKING:
    from ...server.app import LivevoxState

log = logging.getLogger("livevox.webrtc")

#: Largest request body accepted by POST /v1/realtime/calls (an SDP offer plus a session object).
MAX_BODY_BYTES = 1024 * 1024


def _error(status: int, code: str, message: str, type_: str = "invalid_request_error",
           param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "code": code, "message": message, "param": param}},
                        status_code=status)


async def _reject_append(event: dict[str, Any]) -> None:
    raise ProtocolError("unsupported_event", "This is a WebRTC call: the microphone audio is the RTP "
                        "track, so input_audio_buffer.append is not accepted.", param="type")


def _session_param(err: ProtocolError) -> str:
    return f"session.{err.param.removeprefix('session.')}" if err.param else "session"


async def _read_frames(ws: WebSocket, session: RealtimeSession) -> None:
    while True:
        try:
            message = await ws.receive()
        except Exception:
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is not None:
            await session.handle_frame(data)


def _track_session(state: LivevoxState, session: RealtimeSession, call: RtcCall) -> None:
    state.sessions.add(session)
    SESSIONS_TOTAL.labels("webrtc").inc()
    SESSIONS_ACTIVE.labels("webrtc").inc()

    async def release(reason: str) -> None:
        state.sessions.discard(session)
        SESSIONS_ACTIVE.labels("webrtc").dec()
        await session.close()

    call.on_close(release)


# ================================================================ Voice Live door


def _sdp_create_handler(call: RtcCall, session: RealtimeSession) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def handle(event: dict[str, Any]) -> None:
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            if call.state != "new":
                raise OfferError("call_already_negotiated", "This call already has an SDP offer; a call "
                                 "takes exactly one offer. Open a new control WebSocket for a new peer "
                                 "connection.", status=409)
            offer = validate_offer(event.get("sdp_offer"))
            if "session" in event and event["session"] is not None:
                if not isinstance(event["session"], dict):
                    raise OfferError("invalid_type", "'session' must be an object", param="session")
                try:
                    await session.handle_event({"type": "session.update", "session": event["session"]})
                except ProtocolError as err:
                    raise OfferError(err.code, err.message, type_=err.type, param=_session_param(err)) from None
            answer = await call.negotiate(offer)
        except OfferError as err:
            CALL_ERRORS_TOTAL.labels(err.code).inc()
            await session.emit({"type": "rtc.call.error", "operation": "rtc.call.sdp.create",
                                "rtc_call_id": call.id, "error": {**err.to_error(), "event_id": event_id}})
            return
        await session.emit({"type": "rtc.call.sdp.created", "rtc_call_id": call.id, "sdp_answer": answer})

    return handle


async def serve_voicelive_call(ws: WebSocket, state: LivevoxState, registry: CallRegistry) -> None:
    from ...server.app import admit, new_session

    if not await admit(ws, state):
        return
    await ws.accept(subprotocol=chosen_subprotocol(ws.headers))
    call = RtcCall(door="voicelive", settings=state.settings.webrtc, registry=registry,
                   listen_host=state.settings.host)
    control = WebSocketTransport(ws)
    transport = WebRTCTransport(call, control)
    session = new_session(ws, state, transport)
    session.extra_handlers["rtc.call.sdp.create"] = _sdp_create_handler(call, session)
    _install_handlers(call, session)
    call.attach(session)
    registry.add(call)
    _track_session(state, session, call)
    try:
        await session.start()
        await _read_frames(ws, session)
    finally:
        control.closed = True
        await call.close("websocket_closed")


def _install_handlers(call: RtcCall, session: RealtimeSession) -> None:
    """Client events that mean something else when the audio is an RTP track."""
    session.extra_handlers["input_audio_buffer.append"] = _reject_append
    session.extra_handlers["output_audio_buffer.clear"] = _clear_handler(call, session)
    session.extra_handlers["conversation.item.truncate"] = _truncate_handler(call, session)


def _truncate_handler(call: RtcCall, session: RealtimeSession) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """`conversation.item.truncate` on a WebRTC call: the cut is at most what the track really sent
    (the user cannot have heard more), and the item's audio still queued stops playing."""
    default = session._handlers["conversation.item.truncate"]  # the session's own handler, wrapped

    async def handle(event: dict[str, Any]) -> None:
        track, item_id, end_ms = call.track, event.get("item_id"), event.get("audio_end_ms")
        if track is not None and isinstance(item_id, str):
            sent = track.sent_ms(item_id)
            if sent is not None and isinstance(end_ms, int) and not isinstance(end_ms, bool) and end_ms > sent:
                event = {**event, "audio_end_ms": sent}
            if track.playing_item == item_id:
                track.discard()
        await default(event)

    return handle


def _clear_handler(call: RtcCall, session: RealtimeSession) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def handle(event: dict[str, Any]) -> None:
        cut = call.track.discard() if call.track is not None else None  # reports .cleared if it cut audio
        if cut is None:
            rid = session.response.id if session.response is not None else None
            await session.emit({"type": "output_audio_buffer.cleared", "response_id": rid})

    return handle


# ================================================================ OpenAI door


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise OfferError("request_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                         status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OfferError("request_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                             status=413)
    return bytes(body)


async def _offer_from_request(request: Request, bounds: jsonguard.JsonBounds) -> tuple[str, dict[str, Any] | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request)
    if ctype in ("application/sdp", "text/plain", ""):
        if not body.strip():
            raise OfferError("missing_sdp", "SDP offer is required: send it as the request body "
                             "(Content-Type: application/sdp).", param="sdp")
        return _text(body, "sdp"), None
    if ctype == "multipart/form-data":
        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=8)
        except Exception as exc:
            raise OfferError("invalid_multipart", f"The multipart body could not be parsed: {exc}") from None
        sdp_part = form.get("sdp")
        session_part = form.get("session")
        sdp_text = await _part_text(sdp_part, "sdp") if sdp_part is not None else ""
        if not sdp_text.strip():
            raise OfferError("missing_sdp", "SDP offer is required: the multipart body has no 'sdp' part.",
                             param="sdp")
        session: dict[str, Any] | None = None
        if session_part is not None:
            raw = await _part_text(session_part, "session")
            try:
                parsed = jsonguard.loads(raw, bounds, "The 'session' part")
                bad = jsonguard.invalid_string_path(parsed, raw)
                if bad is not None:
                    raise jsonguard.surrogate_error(f"session.{bad}")
            except ProtocolError as err:
                raise OfferError(err.code, err.message, param=err.param or "session") from None
            if not isinstance(parsed, dict):
                raise OfferError("invalid_type", "The 'session' part must be a JSON object.", param="session")
            session = parsed
        return sdp_text, session
    raise OfferError("unsupported_content_type", f"Unsupported Content-Type {ctype!r}: send the SDP offer as "
                     "application/sdp, or multipart/form-data with an 'sdp' part and an optional 'session' "
                     "part.", status=415)


def _text(data: bytes, param: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OfferError("invalid_sdp", f"The '{param}' is not UTF-8 text.", param=param) from None


async def _part_text(part: str | UploadFile, param: str) -> str:
    if isinstance(part, str):
        return part
    data = await part.read(MAX_SDP_BYTES * 16 + 1)
    return _text(data, param)


def _authorized(state: LivevoxState, conn: Request | WebSocket) -> bool:
    return is_authorized(state.settings.api_keys, conn.headers, conn.query_params)


_AUTH_MESSAGE = ("Missing or invalid API key. Send it as 'Authorization: Bearer <key>', the 'api-key' header, "
                 "or the 'api-key' query parameter.")


async def create_openai_call(request: Request, state: LivevoxState, registry: CallRegistry) -> Response:
    if not _authorized(state, request):
        return _error(401, "invalid_api_key", _AUTH_MESSAGE)
    if not state.ready or state.engines is None:
        return _error(503, "engines_loading", "The engines are still loading; see /readyz.", "server_error")
    limit = state.settings.limits.max_sessions
    if len(state.sessions) >= limit:
        return _error(503, "session_limit_reached", f"The server holds its maximum of {limit} sessions "
                      "(limits.max_sessions).", "server_error")
    try:
        sdp_text, session_cfg = await _offer_from_request(request, jsonguard.JsonBounds.of(state.settings.limits))
        offer = validate_offer(sdp_text)
    except OfferError as err:
        CALL_ERRORS_TOTAL.labels(err.code).inc()
        return _error(err.status, err.code, err.message, err.type, err.param)
    call = RtcCall(door="openai", settings=state.settings.webrtc, registry=registry,
                   listen_host=state.settings.host)
    transport = WebRTCTransport(call)
    q = request.query_params
    model = (session_cfg or {}).get("model") or q.get("model") or "gpt-realtime"
    session = RealtimeSession(
        engines=state.engines, settings=state.settings, dialect=OpenAIGADialect(), transport=transport,
        model=model if isinstance(model, str) else None, api_version=q.get("api-version"),
        latency_events=state.settings.latency_events
        or q.get("livevox-latency-events", "").lower() in ("1", "true"),
    )
    _install_handlers(call, session)
    call.attach(session)
    _track_session(state, session, call)
    try:
        await session.start()  # session.created waits for the data channel
        if session_cfg is not None:
            try:
                await session.handle_event({"type": "session.update", "session": session_cfg})
            except ProtocolError as err:
                raise OfferError(err.code, err.message, type_=err.type, param=_session_param(err)) from None
        answer = await call.negotiate(offer)
    except OfferError as err:
        CALL_ERRORS_TOTAL.labels(err.code).inc()
        await call.close("offer_refused")
        return _error(err.status, err.code, err.message, err.type, err.param)
    except BaseException:
        await call.close("server_error")
        raise
    registry.add(call)
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call.id}"})


async def hangup_openai_call(request: Request, state: LivevoxState, registry: CallRegistry) -> Response:
    if not _authorized(state, request):
        return _error(401, "invalid_api_key", _AUTH_MESSAGE)
    call_id = request.path_params["call_id"]
    call = registry.get(call_id)
    if call is None:
        return _error(404, "call_not_found", f"No active call with id '{call_id}'.", param="call_id")
    await call.close("hangup")
    return JSONResponse({}, status_code=200)


async def join_sideband(ws: WebSocket, state: LivevoxState) -> None:
    """`GET /v1/realtime?call_id=...`: a server-side WebSocket on an existing call's session."""
    registry = call_registry(state)
    call_id = ws.query_params.get("call_id", "")
    if not _authorized(state, ws):
        await ws.send_denial_response(_error(401, "invalid_api_key", _AUTH_MESSAGE))
        return
    call = registry.get(call_id)
    session = call.session if call is not None else None
    transport = session.transport if session is not None else None
    if call is None or session is None or not isinstance(transport, WebRTCTransport):
        await ws.send_denial_response(_error(404, "call_not_found", f"No active call with id '{call_id}'.",
                                             param="call_id"))
        return
    await ws.accept(subprotocol=chosen_subprotocol(ws.headers))
    sideband = WebSocketTransport(ws)
    await sideband.send_event(session.dialect.outbound({
        "type": "session.created", "event_id": new_id("event"), "session": session.session_view()}) or {},
        EventRoute.CONTROL)
    transport.add_sideband(sideband)
    try:
        await _read_frames(ws, session)
    finally:
        transport.remove_sideband(sideband)
        await sideband.close()


# ================================================================ routes


def webrtc_routes(state: LivevoxState) -> list[BaseRoute]:
    """The WebRTC routes, bound to the server state (which gets a call registry)."""
    registry = call_registry(state)

    async def voicelive_calls(ws: WebSocket) -> None:
        await serve_voicelive_call(ws, state, registry)

    async def create_call(request: Request) -> Response:
        return await create_openai_call(request, state, registry)

    async def hangup(request: Request) -> Response:
        return await hangup_openai_call(request, state, registry)

    routes: list[BaseRoute] = [WebSocketRoute("/voice-live/realtime/calls", voicelive_calls)]
    for prefix in ("/v1", "/openai/v1"):
        routes.append(Route(f"{prefix}/realtime/calls", create_call, methods=["POST"]))
        routes.append(Route(f"{prefix}/realtime/calls/{{call_id}}/hangup", hangup, methods=["POST"]))
    return routes
