"""The token counter of a GGUF model, built from the vocabulary and merges in the file itself.

xllamacpp's in-process server offers no tokenize call, but a GGUF file carries its tokenizer:
`tokenizer.ggml.model = "gpt2"` files (SmolLM2, Qwen, Llama 3) hold a byte-level BPE vocabulary
and merge list that the `tokenizers` library rebuilds exactly, up to the pre-tokenizer's split
rules. Other tokenizer kinds (SentencePiece "llama") get None: the caller estimates instead.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _value(f: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return f.read(_read(f, "<Q")).decode("utf-8", "replace")
    if kind == _ARRAY:
        inner, n = _read(f, "<I"), _read(f, "<Q")
        return [_value(f, inner) for _ in range(n)]
    return _read(f, _SCALARS[kind])


def tokenizer_metadata(path: Path) -> dict[str, Any]:
    """The `tokenizer.*` key/values of a GGUF (v2/v3) file's header."""
    out: dict[str, Any] = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        _read(f, "<Q")  # tensor count
        for _ in range(_read(f, "<Q")):
            key = f.read(_read(f, "<Q")).decode("utf-8", "replace")
            value = _value(f, _read(f, "<I"))
            if key.startswith("tokenizer.") and key != "tokenizer.chat_template":
                out[key] = value
    return out


def bpe_counter(meta: dict[str, Any], name: str) -> Callable[[str], int] | None:
    """A function giving the number of tokens of a text, from a GGUF's `tokenizer_metadata`
    (`name`: the file's, for the log), or None for tokenizers it cannot rebuild."""
    try:
        if meta.get("tokenizer.ggml.model") != "gpt2":
            return None
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))  # type: ignore[arg-type]
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
        tok.decoder = decoders.ByteLevel()
        # Special tokens (`<|im_start|>`) are whole tokens, as llama.cpp parses them.
        specials = [t for t, kind in zip(tokens, meta.get("tokenizer.ggml.token_type", []), strict=False)
                    if kind in (3, 4)]
        tok.add_special_tokens(specials)
    except (ValueError, KeyError, ImportError) as exc:
        log.warning("llm: no tokenizer from %s (%s); token counts are estimated", name, exc)
        return None

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count
