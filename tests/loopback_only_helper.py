"""Run inside the loopback-only network namespace of `test_loopback_only.py`; prints one JSON line.

    python tests/loopback_only_helper.py interfaces           # this namespace's addresses
    python tests/loopback_only_helper.py wait-ready URL SECONDS
    python tests/loopback_only_helper.py browser URL OUT_DIR  # the page's WebRTC mode, headless Chromium
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import ifaddr

sys.path.insert(0, str(Path(__file__).resolve().parent))


def interfaces() -> dict[str, Any]:
    return {a.name: [ip.ip if isinstance(ip.ip, str) else ip.ip[0] for ip in a.ips] for a in ifaddr.get_adapters()}


def wait_ready(url: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/readyz", timeout=5)
            if r.status_code == 200:
                return {"ready": True, "readyz": r.json()}
            last = f"HTTP {r.status_code}: {r.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    return {"ready": False, "last": last}


def main(argv: list[str]) -> int:
    if argv[:1] == ["interfaces"]:
        out: dict[str, Any] = interfaces()
    elif argv[:1] == ["wait-ready"] and len(argv) == 3:
        out = wait_ready(argv[1], float(argv[2]))
    elif argv[:1] == ["browser"] and len(argv) == 3:
        from test_browser import drive

        out = drive(argv[1], Path(argv[2]), shot_prefix="loopback_only_browser", modes=("webrtc",))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
