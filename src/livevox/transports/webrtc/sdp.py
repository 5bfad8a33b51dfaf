"""SDP offer validation and codec choice, with an error a client developer can act on.

aiortc's own parser accepts almost any text; an offer is checked here first, so that a bad one
gets a specific code (`missing_sdp`, `invalid_sdp`, `no_audio_section`, `no_common_codec`,
`unsupported_media`) instead of a failed handshake later.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from ...realtime.jsonguard import invalid_string_path

#: Offers larger than this are refused (a browser offer is 2-6 kB).
MAX_SDP_BYTES = 64 * 1024


class CallSetupError(Exception):
    """An offer the server cannot answer. `status` is the HTTP status for the OpenAI door."""

    def __init__(self, code: str, message: str, status: int = 400, type_: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.type = type_
        self.param = param

    def to_error(self) -> dict[str, str | None]:
        return {"type": self.type, "code": self.code, "message": self.message, "param": self.param}


@dataclass(frozen=True, slots=True)
class AudioCodec:
    """The codec the agent sends with: Opus 48 kHz (mono or stereo), or G.711 at 8 kHz."""

    name: str  # "opus", "PCMU", "PCMA"
    clock_rate: int
    channels: int  # channels actually encoded (Opus: 2 only if the offer asked for stereo)

    @property
    def frame_samples(self) -> int:
        return self.clock_rate // 50  # 20 ms

    def capability(self) -> RTCRtpCodecCapability:
        if self.name == "opus":
            return RTCRtpCodecCapability(mimeType="audio/opus", clockRate=48000, channels=2)
        return RTCRtpCodecCapability(mimeType=f"audio/{self.name}", clockRate=8000, channels=1)


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    codec: AudioCodec
    has_data_channel: bool


def _codec_names(media: aiortc_sdp.MediaDescription) -> list[str]:
    return [f"{c.mimeType.split('/')[-1]}/{c.clockRate}" for c in media.rtp.codecs]


def choose_codec(media: aiortc_sdp.MediaDescription) -> AudioCodec:
    """Opus if offered (stereo when the offer's fmtp says `stereo=1`), else PCMU or PCMA."""
    for c in media.rtp.codecs:
        if c.mimeType.lower() == "audio/opus" and c.clockRate == 48000:
            stereo = str(c.parameters.get("stereo", "0")) == "1"
            return AudioCodec("opus", 48000, 2 if stereo else 1)
    for c in media.rtp.codecs:
        name = c.mimeType.split("/")[-1].upper()
        if name in ("PCMU", "PCMA") and c.clockRate == 8000:
            return AudioCodec(name, 8000, 1)
    offered = ", ".join(_codec_names(media)) or "none"
    raise CallSetupError("no_common_codec", f"The offer's audio section has no codec in common with the server "
                     f"(offered: {offered}). Offer Opus 48 kHz, or PCMU/PCMA at 8 kHz.")


def validate_offer(text: object) -> Offer:
    """Parse and check a raw SDP offer (non-trickle). Raises `CallSetupError`."""
    if text is None or (isinstance(text, str) and not text.strip()):
        raise CallSetupError("missing_sdp", "SDP offer is required", param="sdp_offer")
    if not isinstance(text, str):
        raise CallSetupError("invalid_sdp", "The SDP offer must be a string of raw SDP text (not base64, not an "
                         "object).", param="sdp_offer")
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise CallSetupError("invalid_sdp", f"The SDP offer is larger than {MAX_SDP_BYTES} bytes.",
                         status=413, param="sdp_offer")
    if "\x00" in text or invalid_string_path(text) is not None:
        raise CallSetupError("invalid_sdp", "The SDP offer holds a NUL character or an unpaired UTF-16 surrogate; "
                         "SDP is UTF-8 text.", param="sdp_offer")
    body = text.lstrip("\ufeff").lstrip()
    if not body.startswith("v=0"):
        raise CallSetupError("invalid_sdp", "The SDP offer could not be parsed: it must be raw SDP text starting "
                         "with 'v=0' (send the offer's .sdp string, not base64 or JSON).", param="sdp_offer")
    if "\n" not in body:
        raise CallSetupError("invalid_sdp", "The SDP offer could not be parsed: it has a single line.",
                         param="sdp_offer")
    # aiortc's parser expects CRLF line ends; accept LF-only text from hand-written clients.
    body = "\r\n".join(line.rstrip("\r") for line in body.splitlines()) + "\r\n"
    try:
        desc = aiortc_sdp.SessionDescription.parse(body)
    except Exception as exc:  # the parser asserts and raises ValueError/KeyError on malformed lines
        detail = str(exc) or type(exc).__name__
        raise CallSetupError("invalid_sdp", f"The SDP offer could not be parsed: {detail}",
                         param="sdp_offer") from None
    if not desc.media:
        raise CallSetupError("no_audio_section", "The SDP offer has no media section; add an audio transceiver "
                         "(m=audio) before creating the offer.", param="sdp_offer")
    audio = [m for m in desc.media if m.kind == "audio"]
    others = [m.kind for m in desc.media if m.kind not in ("audio", "application")]
    if not audio:
        raise CallSetupError("no_audio_section", "The SDP offer has no audio section (m=audio); add a microphone "
                         "track or an audio transceiver before creating the offer.", param="sdp_offer")
    if others or len(audio) > 1:
        kinds = ", ".join(f"m={k}" for k in others) or f"{len(audio)} audio sections"
        raise CallSetupError("unsupported_media", f"The SDP offer has {kinds}; livevox takes exactly one audio "
                         "section and an optional data channel.", param="sdp_offer")
    for m in desc.media:
        if m.port == 0:
            continue
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise CallSetupError("invalid_sdp", f"The SDP offer's m={m.kind} section has no ICE credentials "
                             "(a=ice-ufrag / a=ice-pwd).", param="sdp_offer")
        if m.dtls is None or not m.dtls.fingerprints:
            raise CallSetupError("invalid_sdp", f"The SDP offer's m={m.kind} section has no DTLS fingerprint "
                             "(a=fingerprint); WebRTC media must be DTLS-SRTP.", param="sdp_offer")
        if m.kind == "audio" and "RTP" not in m.profile:
            raise CallSetupError("invalid_sdp", f"The audio section's profile {m.profile!r} is not RTP.",
                             param="sdp_offer")
        if m.kind == "audio" and not m.rtcp_mux:
            raise CallSetupError("invalid_sdp", "The SDP offer's audio section lacks a=rtcp-mux; WebRTC requires "
                             "RTP and RTCP on one port.", param="sdp_offer")
    if not any(m.ice_candidates for m in desc.media):
        raise CallSetupError("invalid_sdp", "The SDP offer has no ICE candidates. Signalling is not trickle: wait "
                         "until ICE gathering completes (iceGatheringState 'complete') and send "
                         "pc.localDescription.sdp.", param="sdp_offer")
    codec = choose_codec(audio[0])
    has_dc = any(m.kind == "application" for m in desc.media)
    return Offer(sdp=body, codec=codec, has_data_channel=has_dc)
