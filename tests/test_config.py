"""Settings: embedded defaults, plain platform names, and no default secrets outside dev."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.config import DEV_SECRET_KEY, ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "GEMINI_API_KEY", "PORT"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"ATELIER_{name}", raising=False)
    for name in (
        "ATELIER_ENV",
        "ATELIER_SECRET_KEY",
        "ATELIER_ALLOWED_ORIGINS",
        "ATELIER_PUBLIC_BASE_URL",
        "ATELIER_HOST",
    ):
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
    monkeypatch.setenv("ATELIER_PUBLIC_BASE_URL", "https://atelier.example")
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
    monkeypatch.setenv("ATELIER_DATABASE_URL", "postgresql+asyncpg://u@other/db")
    assert Settings().database_url == "postgresql+asyncpg://u@other/db"
    # The secret never shows in a repr.
    assert "s" * 48 not in repr(Settings())


PROD = {
    "ATELIER_ENV": "prod",
    "ATELIER_SECRET_KEY": "p" * 48,
    "DATABASE_URL": "postgresql+asyncpg://atelier:pw@10.0.0.3/atelier",
    "REDIS_URL": "redis://10.0.0.4:6379/0",
    "STORAGE_URL": "s3://atelier-images?endpoint_url=https://storage.googleapis.com",
    "ATELIER_PUBLIC_BASE_URL": "https://atelier-api-xyz-ew.a.run.app",
}


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_prod_accepts_the_real_services(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, PROD)
    settings = load_settings()
    assert settings.env == "prod"
    assert settings.run_embedded_worker is False


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("DATABASE_URL", None, "ATELIER_DATABASE_URL"),
        ("DATABASE_URL", "sqlite+aiosqlite:///./var/atelier.db", "ATELIER_DATABASE_URL"),
        ("DATABASE_URL", "postgresql://atelier:pw@10.0.0.3/atelier", "ATELIER_DATABASE_URL"),
        ("DATABASE_URL", "postgresql+asyncpg://USER:<password>@HOST/DB", "ATELIER_DATABASE_URL"),
        ("REDIS_URL", None, "ATELIER_REDIS_URL"),
        ("REDIS_URL", "", "ATELIER_REDIS_URL"),
        ("REDIS_URL", "http://10.0.0.4", "ATELIER_REDIS_URL"),
        ("STORAGE_URL", None, "ATELIER_STORAGE_URL"),
        ("STORAGE_URL", "file:///tmp/x", "ATELIER_STORAGE_URL"),
        ("STORAGE_URL", "s3://CHANGE_ME", "ATELIER_STORAGE_URL"),
        ("ATELIER_SECRET_KEY", None, "ATELIER_SECRET_KEY"),
        ("ATELIER_EMBEDDED_WORKER", "true", "ATELIER_EMBEDDED_WORKER"),
        ("ATELIER_PUBLIC_BASE_URL", None, "ATELIER_PUBLIC_BASE_URL"),
        ("ATELIER_PUBLIC_BASE_URL", "https://<service-url>", "ATELIER_PUBLIC_BASE_URL"),
    ],
)
def test_prod_refuses_each_missing_or_embedded_piece(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str | None, named: str
) -> None:
    _set(monkeypatch, {k: v for k, v in PROD.items() if k != name})
    if value is not None:
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert named in message
    assert "\n" not in message
    # Only what is wrong is named.
    others = {"ATELIER_DATABASE_URL", "ATELIER_REDIS_URL", "ATELIER_STORAGE_URL"} - {named}
    assert not any(other in message for other in others), message


def test_test_env_needs_a_secret_but_may_run_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run both shapes: the embedded one (SQLite, fakeredis, a folder) and the stack."""
    monkeypatch.setenv("ATELIER_ENV", "test")
    with pytest.raises(ConfigError, match="ATELIER_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("ATELIER_SECRET_KEY", "t" * 40)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite")
    assert settings.run_embedded_worker is True


def test_a_malformed_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set(monkeypatch, PROD)
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.setenv("ATELIER_LOGIN_MAX_FAILURES_PER_IP", "0")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "PORT:" in message
    assert "ATELIER_LOGIN_MAX_FAILURES_PER_IP:" in message
    assert "\n" not in message


def test_unset_addresses_follow_the_port_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ENV", "dev")
    monkeypatch.setenv("ATELIER_PORT", "8011")
    settings = load_settings()
    assert settings.public_base_url == "http://127.0.0.1:8011"
    assert settings.browser_origins == ["http://127.0.0.1:8011", "http://localhost:8011"]
    monkeypatch.setenv("ATELIER_HOST", "0.0.0.0")
    assert load_settings().public_base_url == "http://127.0.0.1:8011"
    monkeypatch.setenv("ATELIER_HOST", "::1")
    assert load_settings().public_base_url == "http://[::1]:8011"
    # Set explicitly, nothing is derived.
    monkeypatch.setenv("ATELIER_PUBLIC_BASE_URL", "http://photos.test:9000/")
    monkeypatch.setenv("ATELIER_ALLOWED_ORIGINS", "")
    settings = load_settings()
    assert settings.public_base_url == "http://photos.test:9000"
    assert settings.browser_origins == ["http://photos.test:9000"]


@pytest.mark.parametrize(
    ("base", "origin"),
    [
        ("https://Atelier-API.a.run.app/", "https://atelier-api.a.run.app"),
        ("https://atelier.example:443/app", "https://atelier.example"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://127.0.0.1:8011", "http://127.0.0.1:8011"),
        ("http://[::1]:8011", "http://[::1]:8011"),
    ],
)
def test_public_origin_is_what_a_browser_sends(
    monkeypatch: pytest.MonkeyPatch, base: str, origin: str
) -> None:
    _set(monkeypatch, PROD | {"ATELIER_PUBLIC_BASE_URL": base})
    monkeypatch.setenv("ATELIER_ALLOWED_ORIGINS", "https://app.example, " + origin)
    settings = load_settings()
    assert settings.public_origin == origin
    assert settings.browser_origins == [origin, "https://app.example"]


def test_prod_derives_no_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, PROD)
    assert load_settings().browser_origins == ["https://atelier-api-xyz-ew.a.run.app"]
