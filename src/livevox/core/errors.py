"""Protocol errors: each becomes one `error` event and leaves the session usable."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type

    def to_error(self, event_id: str | None) -> dict[str, Any]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": event_id,
        }


def unsupported(feature: str, param: str | None = None) -> ProtocolError:
    return ProtocolError(
        "unsupported_feature",
        f"{feature} is not supported by this livevox server.",
        param=param,
    )
