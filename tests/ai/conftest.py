"""The fake Gemini server: one per test session, emptied before and after every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ai.fake_gemini import FakeGemini


@pytest.fixture(scope="session")
def fake_gemini_server() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_gemini(fake_gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    """The fake with no recorded requests and no scripted answers; ``.base_url`` to aim at."""
    fake_gemini_server.reset()
    yield fake_gemini_server
    # Also ends any stall a failed test left behind, so no handler thread lingers.
    fake_gemini_server.reset()
