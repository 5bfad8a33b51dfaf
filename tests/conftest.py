import sys
from pathlib import Path

# Test helpers (server_harness, wsclient) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from engine_standin import EngineStandIn
from livevox.engines.scripted import reset_scripted
from server_harness import ServerThread, embedded_settings, scripted_settings
from session_harness import close_open_sessions


@pytest.fixture(scope="module")
def piper_server() -> Iterator[ServerThread]:
    """Scripted stand-ins for every stage but TTS, which is the real Piper voice (word marks)."""
    srv = ServerThread(scripted_settings(tts={"engine": "piper"})).start(timeout=300)
    yield srv
    srv.stop()


@pytest_asyncio.fixture(autouse=True)
async def _close_harness_sessions() -> AsyncIterator[None]:
    """In-process sessions (tests/session_harness.py) end with their test, like a real client's."""
    yield
    await close_open_sessions()


@pytest.fixture
def fresh_scripts() -> Iterator[None]:
    """The scripted stand-in engines at their defaults before and after the test."""
    reset_scripted()
    yield
    reset_scripted()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def standin() -> AsyncIterator[EngineStandIn]:
    """The stand-in OpenAI-compatible engine server (tests/engine_standin.py), one per module."""
    s = await EngineStandIn().start()
    yield s
    await s.stop()


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerThread]:
    """A server on the embedded offline pipeline with nothing but its defaults, one per module.
    A module that configures its server otherwise defines its own `embedded` or `server`."""
    srv = ServerThread(embedded_settings()).start(timeout=300)
    yield srv
    srv.stop()
