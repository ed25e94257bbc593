"""The fake Gemini and OpenAI servers: one each per test session, emptied around every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ai.fake_gemini import FakeGemini
from tests.ai.fake_openai import FakeOpenAI


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


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The OpenAI fake, emptied; ``.base_url`` is what OPENAI_BASE_URL is set to."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()
