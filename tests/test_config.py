"""Settings: embedded defaults, plain platform names, and no default secrets outside dev."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.config import DEV_SECRET_KEY, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "GEMINI_API_KEY", "PORT"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"ATELIER_{name}", raising=False)
    for name in ("ATELIER_ENV", "ATELIER_SECRET_KEY", "ATELIER_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no stray .env file


def test_dev_runs_on_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ENV", "dev")
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./var/atelier.db"
    assert settings.redis_url is None
    assert settings.storage_url == "file://./var/storage"
    assert settings.secret == DEV_SECRET_KEY
    assert settings.cookie_secure is False
    assert settings.port == 8000


@pytest.mark.parametrize("secret", [None, "", DEV_SECRET_KEY, "too-short"])
def test_production_refuses_missing_or_default_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    if secret is not None:
        monkeypatch.setenv("ATELIER_SECRET_KEY", secret)
    for env in ("prod", "test", None):
        if env:
            monkeypatch.setenv("ATELIER_ENV", env)
        else:
            monkeypatch.delenv("ATELIER_ENV", raising=False)
        with pytest.raises(ValidationError, match="ATELIER_SECRET_KEY"):
            Settings()


def test_plain_platform_names_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_SECRET_KEY", "s" * 48)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://h:6379/0")
    monkeypatch.setenv("STORAGE_URL", "s3://bucket?region=eu-west-1")
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("ATELIER_ALLOWED_ORIGINS", "https://a.example, https://b.example/")
    settings = Settings()
    assert settings.env == "prod"
    assert settings.cookie_secure is True
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.redis_url == "redis://h:6379/0"
    assert settings.storage_url.startswith("s3://bucket")
    assert settings.gemini_api_key is not None
    assert settings.gemini_api_key.get_secret_value() == "g-key"
    assert settings.port == 8080
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    # The prefixed name wins over the plain one.
    monkeypatch.setenv("ATELIER_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    assert Settings().database_url == "sqlite+aiosqlite:///x.db"
    # The secret never shows in a repr.
    assert "s" * 48 not in repr(Settings())
