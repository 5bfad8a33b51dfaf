"""The process-wide registry of WebRTC calls, by call id (hangup and side-band joins look calls up)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .call import RtcCall


class CallRegistry:
    def __init__(self) -> None:
        self._calls: dict[str, RtcCall] = {}

    def add(self, call: RtcCall) -> None:
        self._calls[call.id] = call

    def get(self, call_id: str) -> RtcCall | None:
        call = self._calls.get(call_id)
        return call if call is not None and call.state != "closed" else None

    def remove(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def calls(self) -> list[RtcCall]:
        """The calls not yet ended (a call is dropped from here as its teardown begins, and
        removed once it has finished)."""
        return [c for c in self._calls.values() if c.state != "closed"]

    def __len__(self) -> int:
        return len(self.calls())
