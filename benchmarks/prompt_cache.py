"""Prompt cache: what a turn costs when the conversation's prompt changes early, with llama.cpp's
cache reuse in the session's own slot (`llm.cache_reuse`, engines/llama_slots.py) and without it.

    python benchmarks/prompt_cache.py                       # both modes, embedded default engines
    python benchmarks/prompt_cache.py --turns 30 --json artifacts/prompt_cache.json

One Voice Live WebSocket session per mode on a real server (`llm.n_ctx` 1024 so the conversation
overflows and is cut within the run; text turns, `max_response_output_tokens` 60). Each turn is a
user message and `response.create`; half-way the client deletes the exchange of three turns
before (its user message and its answer); two turns later it asks one out-of-band response
(`conversation: "none"`, other instructions); two turns later one turn has Voice Live's
`additional_instructions`; two turns later the client deletes the answer of three turns before
(a lone assistant message, so two user messages meet).
Per kind of turn (a turn that grew the prompt, the first after a truncation cut, after the
delete, the out-of-band one, ...): request -> first text delta (ms), and the prompt tokens that
response.done's usage reports, with how many llama.cpp took from its cache.

Modes: `reuse` (the defaults), `no-reuse` (`llm.cache_reuse = 0`), `strict` (`llm.chat_roles =
"strict"`: a response's own instructions replace the session's at the start, consecutive user
messages are joined, as for templates that want alternation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import ServerProcess, machine, percentiles, write_report

PATH = "/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
MODES = {"reuse": {}, "no-reuse": {"LIVEVOX_LLM__CACHE_REUSE": "0"}, "strict": {"LIVEVOX_LLM__CHAT_ROLES": "strict"}}
KINDS = ("turn", "after a cut", "after delete", "out of band", "additional instructions", "after answer deleted")


async def turn(ws: Any, item: dict[str, Any] | None, response: dict[str, Any] | None,
               created: list[str], **event: Any) -> dict[str, Any]:
    if item is not None:
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    t0 = time.monotonic()
    await ws.send(json.dumps({"type": "response.create", **({"response": response} if response else {}), **event}))
    first = None
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if ev["type"] == "conversation.item.created":
            created.append(ev["item"]["id"])
        elif ev["type"] == "response.text.delta" and first is None:
            first = (time.monotonic() - t0) * 1000
        elif ev["type"] == "error":
            raise RuntimeError(ev["error"])
        elif ev["type"] == "response.done":
            usage = ev["response"].get("usage") or {}
            return {"first_ms": None if first is None else round(first, 1), "status": ev["response"]["status"],
                    "prompt": usage.get("input_tokens"),
                    "cached": (usage.get("input_token_details") or {}).get("cached_tokens")}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def session(base: str, turns: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    created: list[str] = []
    half = turns // 2
    async with websockets.connect(base + PATH, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {
            "modalities": ["text"], "turn_detection": None, "max_response_output_tokens": 60}}))
        for i in range(turns):
            kind, extra = "turn", {}
            if i == half:  # forget the exchange of three turns ago: its question and its answer
                for item_id in created[-6:-4]:
                    await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": item_id}))
                kind = "after delete"
            elif i == half + 4:
                kind, extra = "additional instructions", {"additional_instructions": "Start with 'Well'."}
            elif i == half + 6:  # forget the answer of three turns ago, alone
                await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": created[-5]}))
                kind = "after answer deleted"
            row = await turn(ws, user(f"Tell me a fact about the number {i}."), None, created, **extra)
            if rows and row["prompt"] is not None and rows[-1]["prompt"] is not None and kind == "turn" \
                    and row["prompt"] < rows[-1]["prompt"]:
                kind = "after a cut"
            rows.append({"turn": i, "kind": kind, **row})
            if i == half + 2:
                oob = await turn(ws, None, {"conversation": "none", "instructions": "Answer in French.",
                                            "modalities": ["text"]}, created)
                rows.append({"turn": i, "kind": "out of band", **oob})
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "turns": args.turns, "modes": {}}
    for mode, env in MODES.items():
        srv = ServerProcess("embedded", {"LIVEVOX_LLM__N_CTX": str(args.n_ctx), **env}).start()
        try:
            rows = await session(srv.ws, args.turns)
        finally:
            srv.stop()
        kinds: dict[str, Any] = {}
        for kind in KINDS:
            sel = [r for r in rows if r["kind"] == kind]
            firsts = [r["first_ms"] for r in sel if r["first_ms"] is not None]
            evaluated = [r["prompt"] - r["cached"] for r in sel if r["prompt"] is not None and r["cached"] is not None]
            kinds[kind] = {"n": len(sel), "first_ms": percentiles(firsts, (50, 90)) if firsts else None,
                           "evaluated_tokens": percentiles(evaluated, (50, 90)) if evaluated else None}
        report["modes"][mode] = {"kinds": kinds, "rows": rows}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--n-ctx", type=int, default=1024, help="llm.n_ctx of the server (small: cuts come sooner)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    write_report(args.json, report)
    print(f"{'mode':9s} {'kind':23s} {'n':>3s} {'first ms p50/p90':>18s} {'evaluated tokens p50/p90':>26s}")
    for mode, m in report["modes"].items():
        for kind, k in m["kinds"].items():
            f = k["first_ms"] or {}
            e = k["evaluated_tokens"] or {}
            print(f"{mode:9s} {kind:23s} {k['n']:3d} {f.get('p50')!s:>8s} / {f.get('p90')!s:<8s}"
                  f" {e.get('p50')!s:>12s} / {e.get('p90')!s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
