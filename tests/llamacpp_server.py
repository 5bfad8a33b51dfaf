"""llama.cpp's own HTTP server (llama-server's code, run through xllamacpp) on loopback, serving
the embedded SmolLM2 GGUF. Run as a script: prints `ready <url>` and serves until killed."""

from __future__ import annotations

import sys
import time

import xllamacpp as xlc

from livevox.engines.model_files import smollm2_gguf


def main() -> None:
    port = int(sys.argv[1])
    p = xlc.CommonParams()
    p.model.path = str(smollm2_gguf(None))
    p.model_alias = {"smollm2"}
    p.n_ctx = 4096
    p.verbosity = -1
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.endpoint_slots = True  # GET /slots: lets the test see whether generation stopped
    p.hostnames = ["127.0.0.1"]
    p.port = port
    server = xlc.Server(p)
    print("ready", server.listening_address, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
