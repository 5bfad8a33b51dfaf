"""What the OpenAI-compatible engine clients share: URLs and headers (OpenAI and Azure forms),
retries before anything was received, the three deadlines, and the mapping of every HTTP or
network failure to an `EngineError` whose code names the stage and the cause.

Codes (`<stage>` is `llm`, `stt` or `tts`):

| code | cause |
|---|---|
| `<stage>_unavailable` | connection refused or reset, connection lost mid-stream, HTTP 429 or 5xx (after retries) |
| `<stage>_timeout` | connect, first-result, idle or total deadline passed |
| `<stage>_auth_failed` | HTTP 401 / 403 |
| `<stage>_bad_request` | any other HTTP 4xx (the engine refused the request) |
| `<stage>_bad_response` | the answer is not what the protocol says (bad JSON, bad SSE, wrong content) |
| `<stage>_error` | the engine reported an error inside a stream |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from ..engine_settings import OpenAIEndpointSettings
from .base import EngineError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class EndpointHealth:
    """Runtime record of one endpoint, shown in `/readyz`."""

    ok: int = 0
    failed: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None

    def success(self) -> None:
        self.ok += 1
        self.last_ok_at = time.time()

    def failure(self, err: EngineError) -> None:
        self.failed += 1
        self.last_error = f"{err.code}: {err.message}"
        self.last_error_at = time.time()

    @property
    def state(self) -> str:
        """"ok" unless the latest request failed ("failing")."""
        if self.last_error_at is not None and (self.last_ok_at is None or self.last_error_at > self.last_ok_at):
            return "failing"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"state": self.state, "ok": self.ok, "failed": self.failed}
        if self.last_error is not None:
            d["last_error"] = self.last_error
        return d


def error_message(response: httpx.Response, body: bytes) -> str:
    """The message of an OpenAI-shaped error body, else the start of the body."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    text = body.decode("utf-8", "replace").strip()
    return text[:300] or response.reason_phrase


class Deadlines:
    """First-result, idle and total deadlines of one request (monotonic clock)."""

    def __init__(self, stage: str, settings: OpenAIEndpointSettings) -> None:
        self.stage = stage
        self.settings = settings
        self.start = time.monotonic()
        self.first = self.start + settings.first_token_timeout
        self.total = self.start + settings.total_timeout
        self.got_first = False

    def remaining(self) -> tuple[float, str]:
        """Seconds left for the next read, and what passing it means."""
        now = time.monotonic()
        s = self.settings
        if not self.got_first:
            if self.first <= self.total:
                return self.first - now, f"no first result within first_token_timeout={s.first_token_timeout:g}s"
            return self.total - now, f"no answer within total_timeout={s.total_timeout:g}s"
        idle = now + s.idle_timeout
        if idle <= self.total:
            return s.idle_timeout, f"stream stalled for idle_timeout={s.idle_timeout:g}s"
        return self.total - now, f"answer not finished within total_timeout={s.total_timeout:g}s"

    def timeout_error(self, reason: str) -> EngineError:
        return EngineError(self.stage, f"{self.stage}_timeout", reason)

    async def wait(self, awaitable: Any) -> Any:
        """Await one read within the current deadline; passing it raises `<stage>_timeout`."""
        left, reason = self.remaining()
        if left <= 0:
            raise self.timeout_error(reason)
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the read's result and drops
        # a cancel that arrives as the read completes, so a response.cancel during a fast stream was
        # lost and the engine went on generating (seen in test_llamacpp_server under load).
        try:
            async with asyncio.timeout(left):
                return await awaitable
        except TimeoutError:
            raise self.timeout_error(reason) from None


class OpenAIEndpoint:
    """One configured endpoint and its HTTP client, for one stage and one API path."""

    def __init__(self, stage: str, settings: OpenAIEndpointSettings, path: str) -> None:
        self.stage = stage
        self.settings = settings
        self.path = path  # "chat/completions", "audio/transcriptions", "audio/speech"
        self.health = EndpointHealth()
        self._client: httpx.AsyncClient | None = None
        self._headers: dict[str, str] = {}

    @property
    def url(self) -> str:
        s = self.settings
        if s.azure:
            return f"{s.base_url}/openai/deployments/{s.deployment}/{self.path}"
        return f"{s.base_url}/{self.path}"

    @property
    def where(self) -> str:
        """host:port and path, for messages (never the key)."""
        parts = urlsplit(self.url)
        return f"{parts.netloc}{parts.path}"

    @property
    def params(self) -> dict[str, str]:
        return {"api-version": self.settings.api_version} if self.settings.api_version else {}

    def open(self) -> None:
        """Resolve the secrets and create the HTTP client (raises `SecretMissing`)."""
        s = self.settings
        key = s.resolve_api_key()
        headers = s.resolve_headers()
        if key:
            if s.azure:
                headers.setdefault("api-key", key)
            else:
                headers.setdefault("Authorization", f"Bearer {key}")
        self._headers = headers
        # Reads are bounded by `Deadlines` (first result / idle / total), not by httpx.
        timeout = httpx.Timeout(connect=s.connect_timeout, read=None, write=s.idle_timeout,
                                pool=s.connect_timeout)
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers,
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _error(self, code: str, message: str) -> EngineError:
        return EngineError(self.stage, f"{self.stage}_{code}", message)

    async def _status_error(self, response: httpx.Response, deadlines: Deadlines) -> EngineError:
        try:
            body = await deadlines.wait(response.aread())
        except (httpx.HTTPError, EngineError):
            body = b""
        msg = f"HTTP {response.status_code} from {self.where}: {error_message(response, body)}"
        if response.status_code in (401, 403):
            return self._error("auth_failed", msg)
        if response.status_code in RETRY_STATUS:
            return self._error("unavailable", msg)
        return self._error("bad_request", msg)

    @contextlib.asynccontextmanager
    async def request(self, deadlines: Deadlines, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """POST with retries; yield the open (streaming) response once its status is 2xx.

        Retries connection failures, 429 and 5xx while nothing has been received and the first
        deadline allows. Leaving the block closes the response at once (a cancelled stream closes
        its connection, so the engine sees the client go away)."""
        if self._client is None:
            raise self._error("unavailable", f"the {self.stage} client for {self.where} is not open")
        attempt = 0
        while True:
            req = self._client.build_request("POST", self.url, params=self.params, **kwargs)
            retry: EngineError | None = None
            response: httpx.Response | None = None
            try:
                response = await deadlines.wait(self._client.send(req, stream=True))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                kind = "timed out" if isinstance(exc, httpx.ConnectTimeout) else "failed"
                retry = self._error("unavailable", f"connecting to {self.where} {kind}: {exc or type(exc).__name__}")
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                retry = self._error("unavailable", f"{self.where} dropped the connection: {exc or type(exc).__name__}")
            except httpx.HTTPError as exc:
                raise self._error("unavailable", f"{self.where}: {type(exc).__name__}: {exc}") from None
            if response is not None and response.status_code >= 400:
                err = await self._status_error(response, deadlines)
                await response.aclose()
                if response.status_code not in RETRY_STATUS:
                    raise err
                retry, response = err, None
            if response is None:
                assert retry is not None
                left, _ = deadlines.remaining()
                backoff = 0.2 * 2**attempt
                if attempt >= self.settings.max_retries or left <= backoff:
                    raise retry
                attempt += 1
                log.info("%s: %s; retry %d of %d", self.stage, retry.message, attempt, self.settings.max_retries)
                await asyncio.sleep(backoff)
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return

    async def read(self, deadlines: Deadlines, it: AsyncIterator[T]) -> T:
        """The next item of a response body iterator, within the deadlines. StopAsyncIteration at
        the end; a lost connection is `<stage>_unavailable`."""
        try:
            item: T = await deadlines.wait(anext(it))
            return item
        except StopAsyncIteration:
            raise
        except EngineError:
            raise
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise self._error("unavailable", f"connection to {self.where} lost mid-stream: "
                                             f"{exc or type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise self._error("unavailable", f"{self.where}: {type(exc).__name__}: {exc}") from None


class OpenAIEngine:
    """What the OpenAI-compatible stage engines share: the endpoint's life cycle and health."""

    endpoint: OpenAIEndpoint
    #: A server elsewhere: at start the registry waits for it rather than exit (`[startup]`).
    remote = True

    def health(self) -> dict[str, Any]:
        return self.endpoint.health.as_dict()

    async def load(self) -> None:
        self.endpoint.open()

    async def close(self) -> None:
        await self.endpoint.close()
