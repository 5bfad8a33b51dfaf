"""`livevox config check FILE`: every documented example is valid, and each mistake is reported
at its exact key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livevox.cli import main
from livevox.config_check import problems
from livevox.settings import load_settings

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"
EXAMPLES = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    f = tmp_path / "cfg.toml"
    f.write_text(text)
    code = main(["config", "check", str(f)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_documented_examples_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(EXAMPLES) >= 6
    for name in ("VLLM_API_KEY", "OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.setenv(name, "x")
    for i, text in enumerate(EXAMPLES):
        f = tmp_path / f"example{i}.toml"
        f.write_text(text)
        settings = load_settings(f)  # raises on any invalid key or value
        # The examples' model paths are placeholders; nothing else may be wrong.
        left = [p for p in problems(settings) if "not found" not in p.message]
        assert not left, (i, left, text)


@pytest.mark.parametrize(("text", "key"), [
    ('[llm]\nengine = "openai"\n', "llm.openai: "),
    ('[llm]\nengine = "openai"\n[llm.openai]\nbase_url = "gpu-box:8000"\n', "llm.openai.base_url: "),
    ('[llm]\ngguf_pth = "/x.gguf"\n', "llm.gguf_pth: Extra inputs"),
    ('[[stt.fallback]]\nengine = "faster-whisper"\nmodel_dri = "/m"\n', "stt.fallback.0.model_dri: "),
    ('[tts.openai]\nbase_url = "http://h/v1"\nvoice = "x"\nvoices = ["a"]\n[tts]\nengine = "openai"\n', "tts.openai: "),
    ('[llm.openai]\nbase_url = "http://h/v1"\napi_version = "2024-10-21"\n[llm]\nengine = "openai"\n',
     "llm.openai: "),
    ('[llm]\ngguf_path = "/nonexistent/model.gguf"\n', "llm.gguf_path: file not found"),
    ('[[llm.fallback]]\nengine = "llamacpp"\ngguf_path = "/nonexistent/q.gguf"\n',
     "llm.fallback.0.gguf_path: file not found"),
    ('[tts.voice_map]\nmap = { alloy = "en_US-amy-medium" }\n', "tts.voice_map.map.alloy: the TTS engine has no voice"),
    ('role = "edge"\n', "role: "),
    ('[llm\nengine = "x"\n', "line 1"),
])
def test_the_key_at_fault_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str) -> None:
    code, out, err = check(tmp_path, text, capsys)
    assert code == 1 and key in err, err
    assert not out


def test_unset_secret_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEVOX_TEST_UNSET_KEY", raising=False)
    text = '[llm]\nengine = "openai"\n[llm.openai]\nbase_url = "http://h/v1"\napi_key_env = "LIVEVOX_TEST_UNSET_KEY"\n'
    code, out, err = check(tmp_path, text, capsys)
    assert code == 0 and "warning: llm.openai.api_key_env: environment variable LIVEVOX_TEST_UNSET_KEY" in err
    assert "ok (role=all" in out and "llm=openai" in out


def test_chain_is_described(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ('role = "gateway"\n[llm]\nengine = "openai"\n[llm.openai]\nbase_url = "http://h/v1"\n'
            '[[llm.fallback]]\nengine = "scripted"\n')
    code, out, _ = check(tmp_path, text, capsys)
    assert code == 0 and "role=gateway" in out and "llm=openai -> scripted" in out
