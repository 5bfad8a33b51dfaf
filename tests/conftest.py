import sys
from pathlib import Path

# Test helpers (server_harness, wsclient) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import Iterator

import pytest

from livevox.engines.scripted import reset_scripted


@pytest.fixture
def fresh_scripts() -> Iterator[None]:
    """The scripted stand-in engines at their defaults before and after the test."""
    reset_scripted()
    yield
    reset_scripted()
