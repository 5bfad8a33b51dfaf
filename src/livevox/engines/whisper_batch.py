"""Several sessions' utterances transcribed in one batch by the faster-whisper model of whisper.py.

Each utterance's features are computed and padded to the engine's encoder window as
`WhisperModel.transcribe` would, the batch goes through ONE `encode`, and the decoder runs one
`generate` per group of utterances with the same prompt (language, initial prompt, hotwords),
with `transcribe`'s own options. A result that `transcribe` would not accept at temperature 0
(its fallback thresholds) is decoded again alone by faster-whisper's own `generate_segments` on
its slice of the encoder output, so every utterance gets the transcript it would get alone (the
batch's encoder output is bit-identical to one utterance's; a fallback samples, so its text is no
more reproducible alone than batched).

Only an utterance that fits in one window (at most 30 s) with a known language is batchable;
anything else goes through the engine's ordinary path.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.audio import Float32Array

WHISPER_FRAMES = 3000  # Whisper's own 30 s window (mel frames)


@dataclass(frozen=True, slots=True)
class Utterance:
    audio: Float32Array
    language: str
    prompt: str | None
    hotwords: str | None
    beam_size: int
    greedy: bool = False  # temperature 0 only (TranscribeOptions.greedy)


def content_frames(model: Any, audio: Float32Array) -> int:
    """Mel frames of `audio` as faster-whisper counts them (its features, less the last frame)."""
    return int(len(audio) // model.feature_extractor.hop_length)


def batch_key(model: Any, audio: Float32Array, window: int) -> Hashable | None:
    """Utterances with the same key share one encoder call (the same model and padded length);
    None: not batchable (more than one window)."""
    frames = content_frames(model, audio)
    if frames > WHISPER_FRAMES:
        return None
    return (id(model), window if frames <= window else WHISPER_FRAMES)


def _options(model: Any, utt: Utterance) -> Any:
    # `transcribe` builds its TranscriptionOptions (and computes nothing else until iterated, the
    # language being given): take them from it rather than repeat its defaults here.
    _segments, info = model.transcribe(
        np.zeros(model.feature_extractor.hop_length * 2, dtype=np.float32),
        language=utt.language, initial_prompt=utt.prompt, hotwords=utt.hotwords,
        beam_size=utt.beam_size, vad_filter=False, without_timestamps=True,
        condition_on_previous_text=False, **({"temperature": 0.0} if utt.greedy else {}))
    return info.transcription_options


def transcribe_batch(model: Any, utts: list[Utterance]) -> list[list[str] | BaseException]:
    """Each utterance's segment texts (faster-whisper's, with their leading space)."""
    import ctranslate2
    import faster_whisper.transcribe as fwt
    from faster_whisper.tokenizer import Tokenizer

    features = [model.feature_extractor(u.audio) for u in utts]
    # `fwt.pad_or_trim` is whisper.py's window-aware one once the engine has loaded.
    padded = np.stack([fwt.pad_or_trim(f[:, : min(WHISPER_FRAMES, f.shape[-1] - 1)]) for f in features])
    encoded = np.asarray(model.encode(padded))

    def slice_of(idx: list[int]) -> Any:
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[idx]))

    groups: dict[tuple[int, ...], list[int]] = {}
    context: list[tuple[Any, Any]] = []
    for i, u in enumerate(utts):
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=u.language)
        options = _options(model, u)
        previous = tokenizer.encode(" " + u.prompt.strip()) if u.prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True, prefix=None,
                                  hotwords=u.hotwords)
        context.append((tokenizer, options))
        groups.setdefault((u.beam_size, u.greedy, *prompt), []).append(i)

    out: list[list[str] | BaseException] = [[] for _ in utts]
    for (_beam, _greedy, *prompt), idx in groups.items():
        tokenizer, options = context[idx[0]]
        try:
            results = model.model.generate(
                slice_of(idx), [prompt] * len(idx),
                length_penalty=options.length_penalty,
                repetition_penalty=options.repetition_penalty,
                no_repeat_ngram_size=options.no_repeat_ngram_size,
                max_length=(len(prompt) + options.max_new_tokens if options.max_new_tokens
                            else model.max_length),
                return_scores=True, return_no_speech_prob=True,
                suppress_blank=options.suppress_blank, suppress_tokens=options.suppress_tokens,
                max_initial_timestamp_index=round(options.max_initial_timestamp / model.time_precision),
                beam_size=options.beam_size, patience=options.patience)
        except Exception as exc:
            for i in idx:
                out[i] = exc
            continue
        for i, result in zip(idx, results, strict=True):
            tok, opts = context[i]
            try:
                text = _accepted(result, tok, opts)
                if text is None:  # transcribe would fall back to higher temperatures: do exactly that
                    segments = model.generate_segments(features[i], tok, opts, False, slice_of([i]))
                    out[i] = [s.text for s in segments if s.text]
                else:
                    out[i] = [text] if text else []
            except Exception as exc:
                out[i] = exc
    return out


def _accepted(result: Any, tokenizer: Any, options: Any) -> str | None:
    """The text of a temperature-0 result as `generate_segments` yields it for a one-window
    utterance ("" for none), or None if `generate_with_fallback` would try again hotter."""
    import faster_whisper.transcribe as fwt

    tokens = result.sequences_ids[0]
    avg_logprob = result.scores[0] * (len(tokens) ** options.length_penalty) / (len(tokens) + 1)
    text = tokenizer.decode(tokens)
    silence = (options.no_speech_threshold is not None and result.no_speech_prob > options.no_speech_threshold)
    low = options.log_prob_threshold is not None and avg_logprob < options.log_prob_threshold
    repetitive = (options.compression_ratio_threshold is not None
                  and fwt.get_compression_ratio(text.strip()) > options.compression_ratio_threshold)
    if (repetitive or low) and not (silence and low):
        return None
    if silence and not (options.log_prob_threshold is not None and avg_logprob > options.log_prob_threshold):
        return ""  # generate_segments skips a window with no speech
    return text if text.strip() else ""
