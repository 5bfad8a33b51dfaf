"""`llm.max_temperature`: the embedded SmolLM2-135M is never sampled hotter than 0.3.

At OpenAI's default temperature (0.8) the demo model answered "What is the capital of France?" in
French or nonsense in 4 of 6 samples, and one OpenAI-SDK conversation of 24 spoken turns fell into
30 s answers of "monsieur, monsieur, ..." from its second turn (19 of 24 cut at max tokens). Capped,
the same conversation had 24 complete English answers (docs/configuration.md). These tests check
the request the engine builds and the default the settings choose; no model is loaded.
"""

from __future__ import annotations

from typing import Any

from livevox.engines.base import ChatRequest
from livevox.engines.llamacpp import EMBEDDED_MAX_TEMPERATURE, LlamaCppLLM
from livevox.engines.registry import _one_llm
from livevox.settings import LLMSettings

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "What is the capital of France?"}]


def body(llm: LlamaCppLLM, temperature: float | None) -> dict[str, Any]:
    return llm._body(ChatRequest(messages=MESSAGES, temperature=temperature), with_tools=False)


def test_a_hotter_request_is_lowered_to_the_cap_and_a_cooler_one_kept() -> None:
    llm = LlamaCppLLM(parallel=1, max_temperature=0.3)
    assert body(llm, 0.8)["temperature"] == 0.3
    assert body(llm, 0.1)["temperature"] == 0.1
    assert body(llm, None)["temperature"] == 0.3
    uncapped = LlamaCppLLM("own.gguf", parallel=1)  # a GGUF of your own: no cap unless set
    assert body(uncapped, 0.8)["temperature"] == 0.8
    assert "temperature" not in body(uncapped, None)


def test_the_cap_defaults_to_the_embedded_models_and_not_to_a_gguf_of_your_own(tmp_path: Any) -> None:
    embedded = _one_llm(LLMSettings(parallel=1))
    assert isinstance(embedded, LlamaCppLLM) and embedded.max_temperature == EMBEDDED_MAX_TEMPERATURE == 0.3
    gguf = tmp_path / "own.gguf"
    gguf.write_bytes(b"GGUF")
    own = _one_llm(LLMSettings(gguf_path=str(gguf), parallel=1))
    assert isinstance(own, LlamaCppLLM) and own.max_temperature is None
    chosen = _one_llm(LLMSettings(gguf_path=str(gguf), parallel=1, max_temperature=0.7))
    assert isinstance(chosen, LlamaCppLLM) and chosen.max_temperature == 0.7
