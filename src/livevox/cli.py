"""Command line: `livevox serve`, `livevox call`, `livevox config check`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from typing import Any

from pydantic import ValidationError

from .netaddr import is_loopback_host
from .settings import Settings, load_settings

log = logging.getLogger("livevox")


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "api_keys": args.api_key or None,
        "allow_unauthenticated": True if args.allow_unauthenticated else None,
        "log_level": args.log_level,
        "role": getattr(args, "role", None),
    }
    return load_settings(args.config, **overrides)


async def _serve(settings: Settings) -> int:
    import uvicorn

    from .server.app import create_app
    from .server.state import load_engines

    try:
        engines = await load_engines(settings)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    app = create_app(settings, engines)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # scans, which otherwise cost tens of ms in a full collection under load.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Frames up to twice the session's own limit still reach it and get an error event;
        # only beyond that does the WebSocket layer close the connection (1009).
        ws_max_size=settings.limits.max_frame_bytes * 2,
        ws_per_message_deflate=False,
        lifespan="on",
    )
    logging.getLogger("uvicorn.error").addFilter(_drop_denial_handshake_error)
    server = uvicorn.Server(config)
    await server.serve()
    return 0


def _drop_denial_handshake_error(record: logging.LogRecord) -> bool:
    # uvicorn's websockets-sansio protocol logs this ERROR after a completed denial response
    # (HTTP 401/503 sent with `websocket.http.response`), because it only counts an accept as a
    # completed handshake. livevox always accepts or denies, so the line is noise for operators.
    return record.getMessage() != "ASGI callable returned without completing handshake."


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = _settings_from(args)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.api_keys and not is_loopback_host(settings.host) and not settings.allow_unauthenticated:
        log.error("refusing to listen on %s without API keys: configure --api-key (or LIVEVOX_API_KEYS), "
                  "or pass --allow-unauthenticated", settings.host)
        return 2
    return asyncio.run(_serve(settings))


def cmd_call(args: argparse.Namespace) -> int:
    from .client.command import run_call

    code: int = asyncio.run(run_call(args))
    return code


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            print(f"{args.file}: {key}: {err['msg']}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    from .config_check import describe, problems

    found = problems(settings)
    for p in found:
        print(f"{args.file}: {p.key}: {p.message}" if p.severity == "error"
              else f"{args.file}: warning: {p.key}: {p.message}", file=sys.stderr)
    if any(p.severity == "error" for p in found):
        return 1
    print(f"{args.file}: ok (role={settings.role}, vad={settings.vad.engine}, stt={describe(settings.stt)}, "
          f"llm={describe(settings.llm)}, tts={describe(settings.tts)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livevox", description="A Voice Live compatible voice agent server.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the realtime endpoints")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8000)")
    s.add_argument("--config", default=None, help="TOML config file")
    s.add_argument("--api-key", action="append", default=None, help="accepted API key (repeatable)")
    s.add_argument("--allow-unauthenticated", action="store_true",
                   help="allow a non-loopback --host with no API keys")
    s.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    s.add_argument("--role", default=None, choices=["all", "gateway", "engine"],
                   help="all (default): everything; gateway: only the realtime endpoints; engine: only the "
                        "OpenAI-compatible model endpoints (/v1/models, /v1/chat/completions, /v1/audio/*)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("call", help="talk to a livevox (or Voice Live) server with a WAV file")
    c.add_argument("--wav", required=True, help="the question, a WAV file")
    c.add_argument("--url", default="ws://127.0.0.1:8000",
                   help="a realtime endpoint, or a bare server address for its Voice Live endpoint")
    c.add_argument("--out", default=None, help="save the spoken answer here (WAV, 24 kHz)")
    c.add_argument("--api-key", default=None)
    c.add_argument("--timeout", type=float, default=60.0,
                   help="seconds for the turn; once the answer has begun, counted from its latest event")
    c.add_argument("--webrtc", action="store_true",
                   help="hold the turn over WebRTC (aiortc): microphone and answer as Opus RTP, events on the "
                        "data channel")
    c.add_argument("--door", default=None, choices=["voicelive", "openai"],
                   help="with --webrtc: the Voice Live door (WS /voice-live/realtime/calls) or the OpenAI door "
                        "(POST /v1/realtime/calls); default: the one --url's path names (Voice Live for a bare "
                        "address)")
    c.add_argument("--ice-server", action="append", default=None, metavar="URL",
                   help="with --webrtc: a STUN or TURN server (stun:host:port, turn:host:port?transport=udp); "
                        "repeatable. Default: none, host candidates only")
    c.add_argument("--ice-username", default=None, help="the TURN servers' username")
    c.add_argument("--ice-credential", default=None, help="the TURN servers' credential")
    c.add_argument("--ice-relay", action="store_true",
                   help="with --webrtc: relayed (TURN) candidates only, to check the TURN path")
    c.add_argument("--host-address", action="append", default=None,
                   help="with --webrtc: allow-list for this client's host candidates (interface, address or "
                        "network; repeatable), as webrtc.host_addresses")
    c.set_defaults(func=cmd_call)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    chk = cfg_sub.add_parser("check", help="validate a config file")
    chk.add_argument("file")
    chk.set_defaults(func=cmd_config_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
