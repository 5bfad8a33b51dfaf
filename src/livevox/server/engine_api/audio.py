"""`POST /v1/audio/transcriptions` (multipart WAV -> text) and `POST /v1/audio/speech` (text -> PCM16 or WAV)."""

from __future__ import annotations

import io
import logging
import wave
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ...core import audio as audio_codec
from ...core.audio import ITEM_RATE, SESSION_RATE
from ...core.errors import ProtocolError
from ...core.ids import new_id
from ...engines.base import (
    EngineError,
    SynthesisOptions,
    TranscribeOptions,
)

if TYPE_CHECKING:
    from ..state import LivevoxState

from .common import (
    MAX_SPEECH_CHARS,
    MAX_UPLOAD_BYTES,
    SPEECH_FORMATS,
    ApiError,
    _aclose,
    _first,
    _float,
    _guard,
    _json_body,
    engine_failure,
)

log = logging.getLogger("livevox.engine_api")

# ---------------------------------------------------------------- transcriptions


def decode_wav(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A WAV upload (8/16/24/32-bit PCM, any rate, any channels) as 16 kHz mono float32."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ApiError(400, "Unsupported audio format: upload a WAV file (PCM).", code="invalid_value",
                       param="file")
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ApiError(400, f"The WAV file cannot be read: {exc}", code="invalid_value", param="file") from None
    if width == 1:
        pcm = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        pcm = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16))
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        pcm = ints.astype(np.float32) / float(1 << 23)
    else:
        pcm = np.frombuffer(frames, "<i4").astype(np.float32) / float(1 << 31)
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
    if rate != SESSION_RATE:
        import soxr

        pcm = soxr.resample(pcm, rate, SESSION_RATE).astype(np.float32)
    return np.ascontiguousarray(pcm, dtype=np.float32)


async def transcriptions(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 65536:
        raise ApiError(413, f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.",
                       code="file_too_large", param="file")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, "Send the audio as multipart/form-data with a 'file' part.",
                       code="unsupported_content_type")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except (MultiPartException, HTTPException) as exc:
        detail = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise ApiError(400, f"Bad multipart body: {detail}", code="invalid_multipart") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "Missing required parameter: 'file'.", code="missing_required_parameter",
                           param="file")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.",
                           code="file_too_large", param="file")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    finally:
        await form.close()
    fmt = fields.get("response_format", "json")
    if fmt not in ("json", "text", "verbose_json"):
        raise ApiError(400, f"Unsupported response_format {fmt!r}: use json, text or verbose_json.",
                       code="invalid_value", param="response_format")
    if fields.get("stream", "false").lower() == "true":
        raise ApiError(400, "Streaming transcription is not supported.", code="invalid_value", param="stream")
    audio = decode_wav(data)
    opts = TranscribeOptions(language=fields.get("language") or None, prompt=fields.get("prompt") or None,
                             model=fields.get("model") or None)
    gen = engines.stt.transcribe(audio, opts, new_id("api"))
    try:
        text = "".join([piece async for piece in gen]).strip()
    except EngineError as exc:
        raise engine_failure(exc) from None
    finally:
        await _aclose(gen)
    if fmt == "text":
        return Response(text + "\n", media_type="text/plain; charset=utf-8")
    if fmt == "verbose_json":
        return JSONResponse({"task": "transcribe", "language": opts.language or "", "duration":
                             round(len(audio) / SESSION_RATE, 3), "text": text, "segments": []})
    return JSONResponse({"text": text})


# ---------------------------------------------------------------- speech


def _wav_header(rate: int, nbytes: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.setnframes(nbytes // 2)
        w.writeframes(b"")
    header = bytearray(buf.getvalue())
    header[4:8] = (36 + nbytes).to_bytes(4, "little")
    header[40:44] = nbytes.to_bytes(4, "little")
    return bytes(header)


async def speech(request: Request, state: LivevoxState) -> Response:
    engines = _guard(request, state)
    body = await _json_body(request, state)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "'input' must be a non-empty string.", code="invalid_value", param="input")
    if len(text) > MAX_SPEECH_CHARS:
        raise ApiError(400, f"'input' is longer than {MAX_SPEECH_CHARS} characters.", code="invalid_value",
                       param="input")
    fmt = body.get("response_format", "mp3")
    if fmt not in SPEECH_FORMATS:
        raise ApiError(400, f"Unsupported response_format {fmt!r}: this server speaks "
                       f"{' and '.join(SPEECH_FORMATS)} (24 kHz, 16-bit mono).", code="invalid_value",
                       param="response_format")
    if body.get("stream_format", "audio") != "audio":
        raise ApiError(400, "Only stream_format 'audio' is supported.", code="invalid_value", param="stream_format")
    voice = body.get("voice")
    if isinstance(voice, dict) and "id" in voice and "name" not in voice:
        voice = {**voice, "name": voice["id"]}
    if voice is None:
        raise ApiError(400, "Missing required parameter: 'voice'.", code="missing_required_parameter", param="voice")
    try:
        engine_voice = engines.voices.resolve(voice, param="voice")
    except ProtocolError as err:
        raise ApiError(400, err.message, code=err.code, param=err.param) from None
    speed = _float(body, "speed", 0.25, 4.0) or 1.0
    tts = engines.tts
    gen = tts.synthesize(text, SynthesisOptions(voice=engine_voice, speed=speed), new_id("api"))
    resampler = audio_codec.StreamResampler(tts.sample_rate, ITEM_RATE) if tts.sample_rate != ITEM_RATE else None

    def pcm_bytes(chunk: Any, last: bool = False) -> bytes:
        if resampler is not None:
            chunk = resampler.process(chunk, last=last)
        return bytes(np.asarray(chunk, dtype="<i2").tobytes())

    if fmt == "wav":  # the whole file, so that its header states the true length
        try:
            pcm = b"".join([pcm_bytes(c) async for c in gen])
        except EngineError as exc:
            raise engine_failure(exc) from None
        finally:
            await _aclose(gen)
        if resampler is not None:
            pcm += pcm_bytes(np.zeros(0, np.int16), last=True)
        return Response(_wav_header(ITEM_RATE, len(pcm)) + pcm, media_type="audio/wav")
    first = await _first(gen)

    async def audio() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield pcm_bytes(first)
                async for chunk in gen:
                    data = pcm_bytes(chunk)
                    if data:
                        yield data
            if resampler is not None:
                tail = pcm_bytes(np.zeros(0, np.int16), last=True)
                if tail:
                    yield tail
        except EngineError as exc:
            # The status line is gone: end the body early; the client sees a short stream.
            log.warning("speech stream failed after it began: %s", exc)
        finally:
            await _aclose(gen)

    return StreamingResponse(audio(), media_type="audio/pcm",
                             headers={"X-Sample-Rate": str(ITEM_RATE), "X-Accel-Buffering": "no"})
