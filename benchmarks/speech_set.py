"""Speech the tests never heard: voice-agent prompts in many voices, plus real human speech.

    python benchmarks/speech_set.py [--out DIR] [--voice NAME ...] [--prompt ID ...] [--list]

Renders, deterministically, every prompt below in every synthetic voice (espeak-ng variants of
`en-us` and `en-gb`, male and female, 120-190 wpm, and Piper's embedded `joe` voice) and adds the
human recordings of Debian's `pocketsphinx-testdata` (`make apt-test` installs it), whose
transcripts are committed in tests/fixtures/human/ and whose audio is checked against the
committed sha256 before use (the audio itself is not committed). Output: 24 kHz mono PCM16 WAVs
with 300 ms of silence before the speech, and `manifest.json` (voice, prompt, text, path) in the
output directory (default artifacts/speech_set). A WAV already rendered for the same voice and
text is reused.

The prompts are not the tests' fixtures: they are voice-agent questions and requests of 6-18
words, many ending in a word whose end is quiet (a fricative, a plosive, a fading vowel).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth
from livevox.client.call import load_wav, write_wav

ROOT = Path(__file__).resolve().parent.parent
RATE = 24000
LEAD_S = 0.3
HUMAN_TSV = ROOT / "tests" / "fixtures" / "human" / "pocketsphinx-testdata.tsv"
HUMAN_DIR = Path("/usr/share/pocketsphinx/test/data")
HUMAN_PACKAGE = "pocketsphinx-testdata"

#: id -> text. "capital" is the issue's own question (espeak en-us 150 wpm heard "...and friends?").
PROMPTS: dict[str, str] = {
    "capital": "What is the capital of France?",
    "table": "Could you book a table for six tomorrow night, please?",
    "dentist": "Please move my dentist appointment to Thursday afternoon.",
    "drive": "How long does it take to drive from Boston to New York?",
    "sister": "Remind me to call my sister at six.",
    "lights": "Turn off the lights in the kitchen, please.",
    "weather": "What will the weather be like in Madrid tomorrow?",
    "late": "Send a text to Mike saying I will be late.",
    "list": "Add eggs, milk and a loaf of bread to my shopping list.",
    "refund": "I would like to ask for a refund on my last order, it arrived broken.",
    "timer": "Set a timer for twelve minutes.",
    "bank": "Which documents do I need to open a new bank account?",
}


@dataclass(frozen=True)
class Voice:
    name: str
    kind: str  # "espeak", "piper" or "human"
    espeak: str = ""
    wpm: int = 0


VOICES: tuple[Voice, ...] = (
    Voice("espeak-en-us-150", "espeak", "en-us", 150),
    Voice("espeak-en-us-120", "espeak", "en-us", 120),
    Voice("espeak-en-us+f3-170", "espeak", "en-us+f3", 170),
    Voice("espeak-en-us+m3-190", "espeak", "en-us+m3", 190),
    Voice("espeak-en-gb-150", "espeak", "en-gb", 150),
    Voice("espeak-en-gb+f2-130", "espeak", "en-gb+f2", 130),
    Voice("espeak-en-gb+m3-180", "espeak", "en-gb+m3", 180),
    Voice("espeak-en-us+f2-160", "espeak", "en-us+f2", 160),
    Voice("piper-joe", "piper"),
)
HUMAN_VOICES: tuple[Voice, ...] = (Voice("human-librivox", "human"), Voice("human-cards", "human"))


@dataclass(frozen=True)
class Utterance:
    voice: str
    prompt: str
    text: str
    path: str


@dataclass(frozen=True)
class HumanClip:
    set: str
    path: str
    sha256: str
    text: str


def human_clips() -> list[HumanClip]:
    clips = []
    for line in HUMAN_TSV.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            set_, path, sha, text = line.split("\t")
            clips.append(HumanClip(set_, path, sha, text))
    return clips


def human_audio(clip: HumanClip) -> npt.NDArray[np.int16]:
    """A package recording at 24 kHz, after checking it is the file the transcript belongs to."""
    src = HUMAN_DIR / clip.path
    if not src.is_file():
        raise FileNotFoundError(f"{src} is missing: install the Debian package {HUMAN_PACKAGE} "
                                "(make apt-test)")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if digest != clip.sha256:
        raise ValueError(f"{src}: sha256 {digest} is not the committed {clip.sha256}")
    return load_wav(src)


def _pcm(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    out: npt.NDArray[np.int16] = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    return out


def render(voice: Voice, text: str) -> npt.NDArray[np.int16]:
    """`text` in a synthetic voice: 24 kHz PCM16, 300 ms of silence first, the voice's own end."""
    if voice.kind == "espeak":
        audio = synth.espeak_say(text, voice.espeak, voice.wpm, rate=RATE)
    elif voice.kind == "piper":
        audio = synth.piper_say(text, rate=RATE)
    else:
        raise ValueError(f"{voice.name} is not a synthetic voice")
    return np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), _pcm(audio)])


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s)


def build(out: Path, voices: list[str] | None = None, prompts: list[str] | None = None) -> list[Utterance]:
    """Render (or reuse) the set into `out`; write and return its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = [v for v in (*VOICES, *HUMAN_VOICES) if voices is None or v.name in voices]
    if voices is not None and len(wanted) != len(set(voices)):
        raise ValueError(f"unknown voice in {voices}")
    if prompts is not None and set(prompts) - set(PROMPTS):
        raise ValueError(f"unknown prompt in {prompts}")
    items: list[Utterance] = []
    for voice in wanted:
        if voice.kind == "human":
            set_ = voice.name.removeprefix("human-")
            for clip in human_clips():
                if clip.set == set_:
                    path = out / voice.name / (_slug(Path(clip.path).stem) + ".wav")
                    path.parent.mkdir(exist_ok=True)
                    pcm = human_audio(clip)
                    write_wav(path, np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), pcm]))
                    items.append(Utterance(voice.name, Path(clip.path).stem, clip.text, str(path)))
            continue
        for pid, text in PROMPTS.items():
            if prompts is not None and pid not in prompts:
                continue
            key = hashlib.sha256(f"{voice}|{text}".encode()).hexdigest()[:10]
            path = out / voice.name / f"{pid}-{key}.wav"
            if not path.is_file():
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_suffix(".tmp")
                write_wav(tmp, render(voice, text))
                tmp.replace(path)
            items.append(Utterance(voice.name, pid, text, str(path)))
    (out / "manifest.json").write_text(json.dumps([asdict(u) for u in items], indent=1))
    return items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "artifacts" / "speech_set")
    p.add_argument("--voice", action="append", default=None, help="voice name (repeatable; default all)")
    p.add_argument("--prompt", action="append", default=None, help="prompt id (repeatable; default all)")
    p.add_argument("--list", action="store_true", help="list the voices and prompts and exit")
    args = p.parse_args(argv)
    if args.list:
        for v in (*VOICES, *HUMAN_VOICES):
            print(f"voice  {v.name}")
        for pid, text in PROMPTS.items():
            print(f"prompt {pid:<8} {text}")
        return 0
    items = build(args.out, args.voice, args.prompt)
    print(f"{len(items)} utterances, manifest {args.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
