"""A seeded 20,000-frame slice of benchmarks/fuzz.py against a real server process (scripted
stand-in engines): no session closed by the server, no crash, an error for every invalid frame."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fuzz


def test_fuzz_slice_20000_frames() -> None:
    summary = fuzz.main(["--frames", "20000", "--seed", "7", "--concurrency", "8"])
    assert summary["frames_sent"] == 20000
    assert summary["data_channel_frames"] == 2000
    assert summary["unexpected_closes"] == 0, summary["unexpected_close_examples"]
    assert summary["server_alive"] and summary["server_crashes"] == 0
    assert summary["invalid_frames_without_error"] == 0, summary["missed_examples"]
    assert summary["server_log_tracebacks"] == 0
    # Guarded codes were produced, so the mutations reached the guard.
    for code in ("invalid_json", "invalid_string", "nesting_too_deep", "too_many_keys", "too_many_items"):
        assert summary["error_codes"].get(code, 0) > 0, summary["error_codes"]
