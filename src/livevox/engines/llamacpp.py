"""LLM on llama.cpp through xllamacpp's in-process server (no HTTP), by default SmolLM2-135M.

`Server.handle_chat_completions(request, callback)` blocks while it generates and calls
`callback(chunk)` with OpenAI-style `chat.completion.chunk` dicts; a callback returning True stops
generation. Errors arrive as a `{"error": {...}}` chunk or as a raised ValueError.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import struct
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..core.executor import BACKGROUND, stage_executor, stream_job
from .base import (
    MESSAGE_OVERHEAD_TOKENS,
    ChatRequest,
    EngineError,
    Finish,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    cached_prompt_tokens,
    estimate_message_tokens,
    overflow_from,
    warmup_request,
)
from .gguf_vocab import bpe_counter, tokenizer_metadata
from .llama_slots import SlotAffinity
from .model_files import smollm2_gguf

log = logging.getLogger(__name__)

_FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}

#: End-of-turn text signal (`end_of_turn_probability`): the user's words so far, in the ChatML
#: template SmolLM2 (and Qwen) use, left open where the template would close the user's message.
EOT_SYSTEM = "You are a helpful voice assistant."
EOT_PROMPT = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}"
#: The next tokens that finish the user's message: the template's end token, and the
#: punctuation that ends a sentence (asked after the words with their final punctuation removed,
#: so the model, not Whisper, says whether they are finished; see `eot_job`).
EOT_TOKENS = ("<|im_end|>",)
EOT_PUNCTUATION = frozenset({".", "?", "!", "?!", "!?", "??", "!!", ".\"", "?\""})
EOT_TOP_N = 20  # llama.cpp returns this many next-token candidates; absent ones count as 0
#: Ahead of the stage's other jobs (NORMAL = 1): it is one short prefill, a speculative answer
#: queued at the same moment waits for it by a few tens of ms.
EOT_PRIORITY = 0


class _LlamaError(Exception):
    """An error chunk from llama.cpp (kept apart so the tools retry can recognise it)."""


def _estimate_tokens(text: str) -> int:
    # ~4 characters per token for English BPE vocabularies; only used when llama.cpp gives no usage.
    return max(1, len(text) // 4) if text else 0


#: A GGUF larger than this is a big model for a CPU: fewer slots (each decoding slot slows the rest).
BIG_MODEL_BYTES = 4 << 30
#: `llm.max_temperature` for the embedded SmolLM2-135M: higher, it strays into other languages
#: and repeats itself (docs/configuration.md).
EMBEDDED_MAX_TEMPERATURE = 0.3


def auto_parallel(cores: int, model_bytes: int) -> int:
    """Slots when `llm.parallel` is not set: 2 per core (2-8), at most 4 for a model over 4 GiB.

    Measured on 2 cores with SmolLM2-135M (docs/benchmarks.md, "Threads, slots and workers"): four streams at once
    ran at ~43 tokens/s each against ~155 alone, so batching adds little throughput on a model this
    small, but every stream has its first token within ~50 ms instead of queueing behind whole
    answers, and 43 tokens/s is still ~10x faster than speech. Larger models are memory-bound on a
    CPU, where a batched step costs little more than a single one.
    """
    slots = min(8, max(2, 2 * cores))
    return min(slots, 4) if model_bytes > BIG_MODEL_BYTES else slots


def auto_threads(cores: int) -> int:
    """llama.cpp threads when `llm.threads` is not set: half the cores, at least one.

    Its threads synchronise at every layer, so one of them preempted by another stage's thread
    (Whisper, Piper, which run beside it in every turn: the first clause is synthesized while the
    rest of the answer is generated) stalls the whole step. Measured on 2 cores with SmolLM2-135M
    and one competing CPU-bound thread in the process: 2 threads fell from ~137 to 2-22 tokens/s
    (a 60-token answer took over a minute in a WebSocket turn), 1 thread went from ~78 alone to
    ~19-78 with it. CTranslate2 (Whisper) does not collapse this way.
    """
    return max(1, cores // 2)


class LlamaCppLLM:
    """llama.cpp via xllamacpp. `parallel` > 1 gives that many slots that generate concurrently
    (continuous batching), each with `n_ctx` tokens of context; `n_batch` bounds the prompt tokens
    evaluated per step, so a long prefill is chunked between the other slots' decoding steps."""

    name = "llamacpp"
    #: llama.cpp renders a final assistant message as the start of the answer and goes on from it.
    continues_assistant = True

    def __init__(
        self,
        gguf_path: str | None = None,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        max_tokens: int = 256,
        default_instructions: str = "",
        parallel: int | None = 1,
        n_batch: int = 128,
        max_temperature: float | None = None,
        cache_reuse: int = 64,
    ) -> None:
        self._gguf_path = gguf_path
        self.n_ctx = n_ctx
        self.threads = threads or auto_threads(os.cpu_count() or 1)
        self.max_tokens = max_tokens
        self.default_instructions = default_instructions
        if parallel is None:
            size = Path(gguf_path).stat().st_size if gguf_path and Path(gguf_path).is_file() else 0
            parallel = auto_parallel(os.cpu_count() or 1, size)
        self.parallel = max(1, parallel)
        self.n_batch = n_batch
        self.cache_reuse = cache_reuse
        self._slots = SlotAffinity(self.parallel)
        self.path: Path | None = None
        self.embedded = gguf_path is None
        #: Unset: the embedded model's cap, no cap for a GGUF of your own.
        self.max_temperature = EMBEDDED_MAX_TEMPERATURE if max_temperature is None and self.embedded \
            else max_temperature
        self._server: Any = None
        self._count: Callable[[str], int] | None = None
        self._eot_ids: frozenset[int] = frozenset()

    @property
    def model_file(self) -> str:
        return self.path.name if self.path else "model.gguf"

    def _executor_threads(self) -> int:
        # One worker per llama.cpp slot, so `parallel` requests can actually run at once.
        return self.parallel

    def _load(self) -> None:
        import xllamacpp as xlc

        self.path = smollm2_gguf(self._gguf_path)
        p = xlc.CommonParams()
        p.model.path = str(self.path)
        p.n_ctx = self.n_ctx * self.parallel  # llama.cpp splits it evenly between the slots
        p.n_parallel = self.parallel
        p.n_batch = p.n_ubatch = self.n_batch
        p.verbosity = -1  # otherwise llama.cpp floods stderr
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        p.cache_prompt = True  # keeps the system prompt's KV between turns: TTFT ~60 ms
        # A prompt cut or changed early reuses the cached chunks after the change by shifting
        # them, in the session's own slot (llama_slots.py).
        p.n_cache_reuse = self.cache_reuse
        self._server = xlc.Server(p)
        try:  # one read of the GGUF's vocabulary, for token counts and the end-of-turn token
            meta = tokenizer_metadata(self.path)
        except (OSError, ValueError, struct.error) as exc:
            log.warning("llm: no vocabulary from %s (%s); token counts are estimated, and there is "
                        "no end-of-turn text signal", self.path.name, exc)
            meta = {}
        self._count = bpe_counter(meta, self.path.name)
        self._eot_ids = _end_token_ids(meta)

    async def load(self) -> None:
        await stage_executor("llm", self._executor_threads()).run("_load", self._load)

    async def warmup(self) -> None:
        # Prime the prompt cache with the default instructions, so the first real turn only
        # prefills the user's words (its first request reuses them: llama.cpp reports cache_n),
        # and run a few decode steps, whose first run is slower than the prefill's.
        async for _ in self.stream(warmup_request(self.default_instructions, max_tokens=4), "_warmup"):
            pass

    async def close(self) -> None:
        self._server = None

    def context_tokens(self) -> int:
        return self.n_ctx

    def count_tokens(self, message: dict[str, Any]) -> int:
        if self._count is None:
            return estimate_message_tokens(message)
        text = str(message.get("content") or "")
        if message.get("tool_calls"):
            text += json.dumps(message["tool_calls"], ensure_ascii=False)
        return self._count(text) + MESSAGE_OVERHEAD_TOKENS

    # ------------------------------------------------------------ end-of-turn text signal

    @property
    def free_roles(self) -> bool:
        """A ChatML template (the end-of-message and start tokens are in the vocabulary): it
        renders any sequence of roles, a system message anywhere included."""
        return bool(self._eot_ids)

    @property
    def end_of_turn_text(self) -> bool:
        """The model has the ChatML end-of-message token, so `end_of_turn_probability` works."""
        return bool(self._eot_ids)

    def _next_tokens(self, prompt: str) -> list[dict[str, Any]] | None:
        """llama.cpp's top next-token candidates after `prompt` (None: an error)."""
        server = self._server
        if server is None:
            return None
        out: list[Any] = []

        def keep(chunk: Any) -> bool:
            out.append(chunk)
            return False

        body = {"prompt": prompt, "n_predict": 1, "n_probs": EOT_TOP_N, "temperature": 0, "stream": False,
                "cache_prompt": True}
        slot = self._slots.acquire(None, owns=False)  # a probe never takes a conversation's slot
        try:
            result = server.handle_completions(_pinned(body, slot), keep)
        finally:
            self._slots.release(slot)
        chunks = result if result is not None else out
        if isinstance(chunks, dict):
            chunks = [chunks]
        for chunk in chunks or ():
            if not isinstance(chunk, dict) or "error" in chunk:
                return None
            for choice in chunk.get("choices") or ():
                content = (choice.get("logprobs") or {}).get("content") or ()
                if content:
                    return list(content[0].get("top_logprobs") or ())
        return None

    def eot_job(self, transcript: str) -> float | None:
        """The blocking probe (on the LLM executor): the larger of P(end token or sentence end)
        after the words without their final punctuation, and P(end token) after the transcript
        as Whisper punctuated it ("How far away is the moon?"). The second prompt shares the
        first's prefix in llama.cpp's cache, so it costs a token or two more."""
        bare = eot_text(transcript)
        if not bare:
            return None
        top = self._next_tokens(EOT_PROMPT.format(system=EOT_SYSTEM, text=bare))
        if top is None:
            return None
        p = end_probability(top, self._eot_ids)
        said = transcript.replace("<|", "").replace("|>", "").strip()
        if said != bare:
            top2 = self._next_tokens(EOT_PROMPT.format(system=EOT_SYSTEM, text=said))
            if top2 is not None:
                p = max(p, end_probability(top2, self._eot_ids, punctuation=False))
        return p

    async def end_of_turn_probability(self, transcript: str, session_id: str) -> float | None:
        """P(the user's message ends here) from the model's next-token distribution after
        `transcript` (`eot_job`), or None if it cannot tell."""
        if not self._eot_ids or not eot_text(transcript):
            return None
        try:
            return await stage_executor("llm", self._executor_threads()).run(
                session_id, self.eot_job, transcript, priority=EOT_PRIORITY)
        except (ValueError, RuntimeError) as exc:
            log.debug("llm: end-of-turn probe failed: %s", exc)
            return None

    # ------------------------------------------------------------ request mapping

    def _body(self, request: ChatRequest, with_tools: bool) -> dict[str, Any]:
        # The settings cap applies only when the request sets none ("inf"); llama.cpp itself stops
        # at the end of the context.
        max_tokens = request.max_tokens if request.max_tokens is not None else self.max_tokens
        body: dict[str, Any] = {
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max(1, max_tokens),
        }
        temperature, cap = request.temperature, self.max_temperature
        if cap is not None:
            temperature = cap if temperature is None else min(temperature, cap)
        if temperature is not None:
            body["temperature"] = temperature
        if with_tools and request.tools:
            body["tools"] = request.tools
            body["tool_choice"] = request.tool_choice
            body["parallel_tool_calls"] = request.parallel_tool_calls
        return body

    def _produce(
        self, request: ChatRequest, session_id: str
    ) -> Callable[[Callable[[dict[str, Any]], None], threading.Event], None]:
        server = self._server
        if server is None:
            raise EngineError("llm", "llm_unavailable", "llama.cpp is not loaded")

        def produce(emit: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
            with_tools = bool(request.tools)
            emitted = False
            errors: list[str] = []
            slot = -1

            def callback(chunk: dict[str, Any]) -> bool:
                # Never raise here: xllamacpp swallows callback exceptions (it just stops).
                nonlocal emitted
                if "error" in chunk:
                    err = chunk["error"]
                    errors.append(str(err.get("message", err)) if isinstance(err, dict) else str(err))
                    return True
                emitted = True
                timings = chunk.get("timings")
                if timings:
                    log.debug("llm: session %s slot %s: %s prompt tokens evaluated, %s from the cache",
                              session_id, slot, timings.get("prompt_n"), timings.get("cache_n"))
                emit(chunk)
                return stop.is_set()  # True stops generation at the next token

            def run(body: dict[str, Any]) -> None:
                nonlocal slot
                slot = self._slots.acquire(session_id, stop, owns=request.conversation)
                try:
                    server.handle_chat_completions(_pinned(body, slot), callback)
                finally:
                    self._slots.release(slot)
                if errors:
                    raise _LlamaError(errors[-1])

            try:
                try:
                    run(self._body(request, with_tools))
                except (_LlamaError, ValueError, RuntimeError) as exc:
                    if not (with_tools and not emitted) or stop.is_set():
                        raise
                    # llama.cpp refuses tools it cannot render for this model's template ("Failed to
                    # parse tools", "tools param requires --jinja"): answer without them rather than
                    # fail. Decided per request, so one client's bad tools don't disable others'.
                    log.warning(
                        "llm: llama.cpp rejected tools for %s (%s); retrying without tools",
                        self.model_file,
                        exc,
                    )
                    errors.clear()
                    run(self._body(request, False))
            except (_LlamaError, ValueError, RuntimeError) as exc:
                overflow = None if emitted else overflow_from("llm", f"llama.cpp: {exc}")
                if overflow is not None:
                    raise overflow from None
                raise EngineError("llm", "llm_error", f"llama.cpp: {exc}") from None

        return produce

    async def prefill(self, request: ChatRequest, session_id: str) -> None:
        """Evaluate `request`'s prompt into the session's slot (one token generated and dropped),
        at background priority: the request that extends it later goes to the same slot
        (llama_slots.py) and evaluates only what was added."""
        try:
            produce = self._produce(dataclasses.replace(request, max_tokens=1), session_id)
            await stage_executor("llm", self._executor_threads()).run(
                session_id, produce, lambda chunk: None, threading.Event(), priority=BACKGROUND)
        except EngineError as exc:
            log.debug("llm: prefill failed: %s", exc)

    async def stream(self, request: ChatRequest, session_id: str) -> AsyncIterator[LLMEvent]:
        produce = self._produce(request, session_id)
        finish_reason = "stop"
        usage: dict[str, Any] | None = None
        out_text: list[str] = []
        saw_tool_call = False
        try:
            async for chunk in stream_job("llm", session_id, produce):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        out_text.append(content)
                        yield TextDelta(content)
                    for tc in delta.get("tool_calls") or ():
                        saw_tool_call = True
                        fn = tc.get("function") or {}
                        yield ToolCallDelta(
                            index=int(tc.get("index", 0)),
                            call_id=tc.get("id") or None,
                            name=fn.get("name") or None,
                            arguments=fn.get("arguments") or "",
                        )
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("llm", "llm_error", f"llama.cpp failed: {exc}") from exc
        reason = _FINISH_REASONS.get(finish_reason, "stop")
        if saw_tool_call and reason == "stop":
            reason = "tool_calls"
        if usage:
            yield Finish(
                reason,  # type: ignore[arg-type]
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                cached_tokens=cached_prompt_tokens(usage),
            )
        else:
            prompt = "".join(str(m.get("content") or "") for m in request.messages)
            yield Finish(
                reason,  # type: ignore[arg-type]
                input_tokens=_estimate_tokens(prompt),
                output_tokens=_estimate_tokens("".join(out_text)),
            )


def _pinned(body: dict[str, Any], slot: int) -> dict[str, Any]:
    return {**body, "id_slot": slot} if slot >= 0 else body


def eot_text(transcript: str) -> str:
    """The transcript as the end-of-turn probe reads it: no final punctuation, no ChatML markup."""
    text = transcript.replace("<|", "").replace("|>", "").strip()
    return text.rstrip(" .,;:!?\u2026\"'").strip()


def end_probability(top: Any, end_ids: frozenset[int], punctuation: bool = True) -> float:
    """The probability mass of the end tokens (and, with `punctuation`, of the sentence-ending
    punctuation) among llama.cpp's `top_logprobs` candidates."""
    total = 0.0
    for cand in top:
        tok_id = cand.get("id")
        if tok_id in end_ids or (punctuation and cand.get("token") in EOT_PUNCTUATION):
            total += math.exp(float(cand.get("logprob", -math.inf)))
    return min(1.0, total)


def _end_token_ids(meta: dict[str, Any]) -> frozenset[int]:
    """Ids of the ChatML end-of-message token in a GGUF's vocabulary (empty: not ChatML)."""
    tokens = meta.get("tokenizer.ggml.tokens") or []
    ids = frozenset(i for i, t in enumerate(tokens) if t in EOT_TOKENS)
    if ids and "<|im_start|>" in tokens:
        return ids
    return frozenset()
