"""The embedded llama.cpp under the conditions of a busy voice server: what `llm.threads`,
`llm.parallel` and `llm.n_batch` do.

    python benchmarks/llm_slots.py                     # all three parts, about 3 minutes on 2 cores
    python benchmarks/llm_slots.py --part threads --json artifacts/llm_slots.json

- `threads`: decode speed of one answer alone, and with one CPU-bound thread beside it in the
  process (what Whisper or Piper are during a turn: the first clause is synthesized while the
  rest of the answer is generated), for 1 and 2 llama.cpp threads.
- `parallel`: four answers started together with 1 and 4 slots: each one's first token and
  tokens per second.
- `prefill`: one session answering while another sends a ~1600-token prompt: how long the
  answering session waits between tokens during that prefill, per `n_batch`.

Each configuration loads its own llama.cpp (greedy decoding, SmolLM2-135M from the pinned wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import machine, write_report
from livevox.engines.base import ChatRequest, TextDelta
from livevox.engines.llamacpp import LlamaCppLLM


def _request(text: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0.0)


async def _stream(llm: LlamaCppLLM, req: ChatRequest, sid: str, stamps: list[float]) -> None:
    async for ev in llm.stream(req, sid):
        if isinstance(ev, TextDelta):
            stamps.append(time.monotonic())


async def _loaded(**kw: Any) -> LlamaCppLLM:
    llm = LlamaCppLLM(**kw)
    await llm.load()
    await llm.warmup()
    return llm


class Hog:
    """One CPU-bound thread (matrix products, which release the GIL like ONNX and CTranslate2 do)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        a = np.random.default_rng(0).random((200, 200))
        while not self._stop.is_set():
            a = a @ a
            a /= np.abs(a).max()

    def __enter__(self) -> Hog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def part_threads(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for threads in (2, 1):
        llm = await _loaded(threads=threads, parallel=1)
        try:
            for hog in (False, True):
                rates = []
                for _ in range(rounds):
                    stamps: list[float] = []
                    t0 = time.monotonic()
                    job = _stream(llm, _request("Tell me a story about a robot.", 40), "t", stamps)
                    with Hog() if hog else contextlib.nullcontext():
                        try:
                            await asyncio.wait_for(job, 60)  # 2 threads beside a busy one can crawl
                        except TimeoutError:
                            pass
                    rates.append(len(stamps) / (time.monotonic() - t0))
                rows.append({"threads": threads, "competing_thread": hog, "tokens_per_s": [round(r, 1) for r in rates],
                             "median": round(statistics.median(rates), 1)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            await llm.close()
    return rows


async def part_parallel(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for parallel in (1, 4):
        llm = await _loaded(threads=None, parallel=parallel)
        try:
            for _ in range(rounds):
                stamps: list[list[float]] = [[] for _ in range(4)]
                t0 = time.monotonic()
                await asyncio.gather(*(_stream(llm, _request(f"Tell me a story about robot number {i}.", 80),
                                               f"s{i}", stamps[i]) for i in range(4)))
                first = [round((s[0] - t0) * 1000) for s in stamps if s]
                tenth = [round((s[9] - t0) * 1000) for s in stamps if len(s) > 9]
                rows.append({"parallel": parallel, "threads": llm.threads, "first_token_ms": sorted(first),
                             "tenth_token_ms": sorted(tenth),
                             "tokens_per_s_each": [round(len(s) / (s[-1] - t0), 1) for s in stamps if s]})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            await llm.close()
    return rows


async def part_prefill(rounds: int) -> list[dict[str, Any]]:
    words = "the of and a to in is you that it he was for on are as with his they at be this have".split()
    rows = []
    for n_batch in (2048, 256, 128):
        llm = await _loaded(threads=None, parallel=2, n_batch=n_batch)
        try:
            for r in range(rounds):
                # A prompt the slot has not cached: a different text each round.
                long_prompt = " ".join(words[(i * 7 + r) % len(words)] for i in range(1500)) + "\nOne word?"
                a: list[float] = []
                b: list[float] = []
                answering = asyncio.ensure_future(_stream(llm, _request("Count from 1 to 300, with commas.", 400),
                                                          "answering", a))
                while len(a) < 10:  # noqa: ASYNC110 - a benchmark's simple poll
                    await asyncio.sleep(0.005)
                t0 = time.monotonic()
                await _stream(llm, _request(long_prompt, 2), "prefill", b)
                gaps = [y - x for x, y in itertools.pairwise(a) if x >= t0 - 0.2 and y <= b[0] + 0.2]
                base = [y - x for x, y in itertools.pairwise(a[1:10])]
                answering.cancel()
                await asyncio.gather(answering, return_exceptions=True)
                rows.append({"n_batch": n_batch, "prefill_to_first_token_ms": round((b[0] - t0) * 1000),
                             "answer_tokens_during_prefill": sum(1 for t in a if t0 < t < b[0]),
                             "answer_max_gap_ms": round(max(gaps, default=0.0) * 1000),
                             "answer_gap_alone_ms": round(statistics.median(base) * 1000)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            await llm.close()
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    out: dict[str, Any] = {"machine": info}
    parts = {"threads": part_threads, "parallel": part_parallel, "prefill": part_prefill}
    for name in args.part or list(parts):
        out[name] = await parts[name](args.rounds)
    info["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", action="append", choices=["threads", "parallel", "prefill"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rep = asyncio.run(run(args))
    m = rep["machine"]
    print(f"machine: {m['nproc']} x {m['cpu']}, load {m['loadavg_1m_at_start']} -> {m['loadavg_1m_at_end']}")
    write_report(args.json, rep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
