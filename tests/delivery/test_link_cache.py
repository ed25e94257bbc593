"""Signed image links are remembered per image, base URL and minting key: a rotated key or
another base URL signs afresh, and the memory is bounded."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from backend.config import Settings
from backend.delivery import service, signing
from backend.images.models import ImageStatus

PARTNER_KEY = "p" * 32


def _links(settings: Settings, image_id: uuid.UUID) -> dict[str, str]:
    token = service._current.set(service._signer(settings))
    try:
        links = service.image_links(image_id, ImageStatus.ready, True)
    finally:
        service._current.reset(token)
    assert links is not None
    return links


def test_links_follow_the_key_and_base_url() -> None:
    image_id = uuid.uuid4()
    base = Settings(env="test", secret_key="x" * 40)
    first = _links(base, image_id)
    assert _links(base, image_id) == first
    rotated = base.model_copy(update={"delivery_keys": SecretStr(f"new:{PARTNER_KEY}")})
    moved = base.model_copy(update={"public_base_url": "https://cdn.example.com"})
    for other in (rotated, moved):
        links = _links(other, image_id)
        assert links != first
        for url in links.values():
            signed, _, rest = url.removeprefix(other.public_base_url + "/d/").partition("/")
            signing.verify(signing.keyring(other), signed, rest)  # valid under its own key


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "SIGNED_CACHE_SIZE", 2)
    monkeypatch.setattr(service, "_SIGNED", {})
    settings = Settings(env="test", secret_key="x" * 40)
    for _ in range(4):
        _links(settings, uuid.uuid4())
    assert len(service._SIGNED) == 2
