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
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from ..core.errors import ProtocolError
from ..realtime import jsonguard
from ..realtime.dialects import OpenAIGADialect
from ..realtime.ports import Channel
from ..realtime.session import RealtimeSession
from ..transports.webrtc.call import Door, RtcCall
from ..transports.webrtc.metrics import CALL_ERRORS_TOTAL
from ..transports.webrtc.sdp import MAX_SDP_BYTES, CallSetupError, validate_offer
from ..transports.webrtc.transport import WebRTCTransport
from ..transports.websocket import WebSocketTransport, read_frames
from .auth import chosen_subprotocol
from .realtime_ws import admit, session_request
from .state import LivevoxState, SessionRequest, error_body

log = logging.getLogger("livevox.webrtc")

#: Largest request body accepted by POST /v1/realtime/calls (an SDP offer plus a session object).
MAX_BODY_BYTES = 1024 * 1024


def _session_param(err: ProtocolError) -> str:
    return f"session.{err.param.removeprefix('session.')}" if err.param else "session"


def _new_call(state: LivevoxState, door: Door, transport_of: Callable[[RtcCall], WebRTCTransport],
              request: SessionRequest) -> tuple[RtcCall, RealtimeSession]:
    """A call, its transport and its session, counted and registered until the call ends."""
    call = RtcCall(door=door, settings=state.settings.webrtc,
                   listen_host=state.settings.host)
    session = state.new_session(request, transport_of(call))
    call.attach(session)
    release = state.track(session, "webrtc")
    registry = state.calls
    registry.add(call)

    async def ended(reason: str) -> None:
        registry.remove(call.id)
        await release()

    call.on_close(ended)
    return call, session


# ================================================================ Voice Live door


def _sdp_create_handler(call: RtcCall, session: RealtimeSession) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def handle(event: dict[str, Any]) -> None:
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            if call.state != "new":
                raise CallSetupError("call_already_negotiated", "This call already has an SDP offer; a call "
                                 "takes exactly one offer. Open a new control WebSocket for a new peer "
                                 "connection.", status=409)
            offer = validate_offer(event.get("sdp_offer"))
            if "session" in event and event["session"] is not None:
                if not isinstance(event["session"], dict):
                    raise CallSetupError("invalid_type", "'session' must be an object", param="session")
                try:
                    await session.handle_event({"type": "session.update", "session": event["session"]})
                except ProtocolError as err:
                    raise CallSetupError(err.code, err.message, type_=err.type, param=_session_param(err)) from None
            answer = await call.negotiate(offer)
        except CallSetupError as err:
            CALL_ERRORS_TOTAL.labels(err.code).inc()
            await session.emit({"type": "rtc.call.error", "operation": "rtc.call.sdp.create",
                                "rtc_call_id": call.id, "error": {**err.to_error(), "event_id": event_id}})
            return
        await session.emit({"type": "rtc.call.sdp.created", "rtc_call_id": call.id, "sdp_answer": answer})

    return handle


async def serve_voicelive_call(ws: WebSocket, state: LivevoxState) -> None:
    if not await admit(ws, state):
        return
    control = WebSocketTransport(ws)  # counted (in _new_call) before the first await, as realtime_ws
    call, session = _new_call(state, "voicelive", lambda c: WebRTCTransport(c, control), session_request(ws))
    session.extra_handlers["rtc.call.sdp.create"] = _sdp_create_handler(call, session)
    try:
        await ws.accept(subprotocol=chosen_subprotocol(ws.headers))
        await session.start()
        await read_frames(ws, session.handle_frame, control)
    finally:
        control.closed = True
        await call.close("websocket_closed")


# ================================================================ OpenAI door


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise CallSetupError("request_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                         status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise CallSetupError("request_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                             status=413)
    return bytes(body)


async def _offer_from_request(request: Request, bounds: jsonguard.JsonBounds) -> tuple[str, dict[str, Any] | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request)
    if ctype in ("application/sdp", "text/plain", ""):
        if not body.strip():
            raise CallSetupError("missing_sdp", "SDP offer is required: send it as the request body "
                             "(Content-Type: application/sdp).", param="sdp")
        return _text(body, "sdp"), None
    if ctype == "multipart/form-data":
        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=8)
        except Exception as exc:
            raise CallSetupError("invalid_multipart", f"The multipart body could not be parsed: {exc}") from None
        sdp_part = form.get("sdp")
        session_part = form.get("session")
        sdp_text = await _part_text(sdp_part, "sdp") if sdp_part is not None else ""
        if not sdp_text.strip():
            raise CallSetupError("missing_sdp", "SDP offer is required: the multipart body has no 'sdp' part.",
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
                raise CallSetupError(err.code, err.message, param=err.param or "session") from None
            if not isinstance(parsed, dict):
                raise CallSetupError("invalid_type", "The 'session' part must be a JSON object.", param="session")
            session = parsed
        return sdp_text, session
    raise CallSetupError("unsupported_content_type", f"Unsupported Content-Type {ctype!r}: send the SDP offer as "
                     "application/sdp, or multipart/form-data with an 'sdp' part and an optional 'session' "
                     "part.", status=415)


def _text(data: bytes, param: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CallSetupError("invalid_sdp", f"The '{param}' is not UTF-8 text.", param=param) from None


async def _part_text(part: str | UploadFile, param: str) -> str:
    if isinstance(part, str):
        return part
    data = await part.read(MAX_SDP_BYTES * 16 + 1)
    return _text(data, param)


async def create_openai_call(request: Request, state: LivevoxState) -> Response:
    refusal = state.refusal(request.headers, request.query_params)
    if refusal is not None:
        return refusal
    try:
        sdp_text, session_cfg = await _offer_from_request(request, jsonguard.JsonBounds.of(state.settings.limits))
        offer = validate_offer(sdp_text)
    except CallSetupError as err:
        CALL_ERRORS_TOTAL.labels(err.code).inc()
        return error_body(err.status, err.code, err.message, err.type, err.param)
    # Again after reading the body: other calls may have taken the free places meanwhile, and
    # from here to _new_call nothing awaits.
    refusal = state.refusal(request.headers, request.query_params)
    if refusal is not None:
        return refusal
    model = (session_cfg or {}).get("model") or request.query_params.get("model") or "gpt-realtime"
    call, session = _new_call(state, "openai", WebRTCTransport, SessionRequest(
        path=request.url.path, headers=request.headers, query=request.query_params,
        dialect=OpenAIGADialect(), model=model if isinstance(model, str) else None))
    try:
        await session.start()  # session.created waits for the data channel
        if session_cfg is not None:
            try:
                await session.handle_event({"type": "session.update", "session": session_cfg})
            except ProtocolError as err:
                raise CallSetupError(err.code, err.message, type_=err.type, param=_session_param(err)) from None
        answer = await call.negotiate(offer)
    except CallSetupError as err:
        CALL_ERRORS_TOTAL.labels(err.code).inc()
        await call.close("offer_refused")
        return error_body(err.status, err.code, err.message, err.type, err.param)
    except BaseException:
        await call.close("server_error")
        raise
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call.id}"})


async def hangup_openai_call(request: Request, state: LivevoxState) -> Response:
    refusal = state.refusal(request.headers, request.query_params, needs="key")
    if refusal is not None:
        return refusal
    call_id = request.path_params["call_id"]
    call = state.calls.get(call_id)
    if call is None:
        return error_body(404, "call_not_found", f"No active call with id '{call_id}'.", param="call_id")
    await call.close("hangup")
    return JSONResponse({}, status_code=200)


async def join_sideband(ws: WebSocket, state: LivevoxState) -> None:
    """`GET /v1/realtime?call_id=...`: a server-side WebSocket on an existing call's session."""
    call_id = ws.query_params.get("call_id", "")
    refusal = state.refusal(ws.headers, ws.query_params, needs="key")
    if refusal is not None:
        await ws.send_denial_response(refusal)
        return
    call = state.calls.get(call_id)
    session = call.session if call is not None else None
    transport = session.transport if session is not None else None
    if call is None or session is None or not isinstance(transport, WebRTCTransport):
        await ws.send_denial_response(error_body(404, "call_not_found", f"No active call with id '{call_id}'.",
                                                 param="call_id"))
        return
    await ws.accept(subprotocol=chosen_subprotocol(ws.headers))
    sideband = WebSocketTransport(ws)
    await sideband.send_event(session.greeting(), Channel.CONTROL)
    transport.add_sideband(sideband)
    try:
        await read_frames(ws, session.handle_frame, sideband)
    finally:
        transport.remove_sideband(sideband)
        await sideband.close()


# ================================================================ routes


def webrtc_routes(state: LivevoxState) -> list[BaseRoute]:
    """The WebRTC doors' routes, bound to the server state."""

    async def voicelive_calls(ws: WebSocket) -> None:
        await serve_voicelive_call(ws, state)

    async def create_call(request: Request) -> Response:
        return await create_openai_call(request, state)

    async def hangup(request: Request) -> Response:
        return await hangup_openai_call(request, state)

    routes: list[BaseRoute] = [WebSocketRoute("/voice-live/realtime/calls", voicelive_calls)]
    for prefix in ("/v1", "/openai/v1"):
        routes.append(Route(f"{prefix}/realtime/calls", create_call, methods=["POST"]))
        routes.append(Route(f"{prefix}/realtime/calls/{{call_id}}/hangup", hangup, methods=["POST"]))
    return routes
