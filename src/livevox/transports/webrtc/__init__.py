"""WebRTC transport: the call core (`RtcCall`), its tracks, SDP and ICE policy, and the session transport
over a call. The HTTP and WebSocket doors that create calls live in `livevox.server.webrtc_doors`."""
