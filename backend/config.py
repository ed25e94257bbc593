"""One typed Settings object for the whole service.

Every value comes from the environment (prefix ``ATELIER_``); the handful of names that hosting
platforms and tooling set without a prefix (``DATABASE_URL``, ``REDIS_URL``, ``STORAGE_URL``,
``GEMINI_API_KEY``, ``PORT``) are accepted as they are. Defaults are the embedded ones used by
``make run``: SQLite, an in-process Redis, a local storage folder.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A recognisable placeholder: it is what dev mode runs with, and what production refuses.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
MIN_SECRET_KEY_LENGTH = 32


def _env(name: str) -> AliasChoices:
    """Accept ``ATELIER_NAME`` first, then the plain platform name."""
    return AliasChoices(f"ATELIER_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ATELIER_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    env: Literal["dev", "test", "prod"] = "prod"
    secret_key: SecretStr | None = None
    version: str = "0.1.0"

    host: str = "127.0.0.1"
    port: int = Field(default=8000, validation_alias=_env("PORT"))
    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/atelier.db", validation_alias=_env("DATABASE_URL")
    )
    database_pool_size: int = Field(default=5, ge=1)
    # Extra connections a process may open beyond the pool under bursts; see infra/README.md
    # for the budget: instances × (pool + overflow) must stay under the database's limit.
    database_max_overflow: int = Field(default=2, ge=0)
    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    storage_url: str = Field(default="file://./var/storage", validation_alias=_env("STORAGE_URL"))
    gemini_api_key: SecretStr | None = Field(default=None, validation_alias=_env("GEMINI_API_KEY"))

    allowed_origins: Annotated[list[str], NoDecode] = [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
    ]

    access_token_ttl_seconds: int = Field(default=900, ge=30)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    login_max_failures_per_email: int = Field(default=5, ge=1)
    login_max_failures_per_ip: int = Field(default=30, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)

    # Uploads. MAX_IMAGE_PIXELS is imgproxy's default: 50 MP.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    upload_url_ttl_seconds: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    download_url_ttl_seconds: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    # Uploads (presigned and direct) one user may start per minute, across all instances.
    upload_rate_per_minute: int = Field(default=60, ge=1)
    # Where the app is reached from browsers; the local storage backend signs URLs under it.
    public_base_url: str = "http://127.0.0.1:8000"

    # AI. Gemini is used when GEMINI_API_KEY is set; the local provider is always there.
    gemini_base_url: str | None = Field(
        default=None, validation_alias=_env("GOOGLE_GEMINI_BASE_URL")
    )
    gemini_caption_model: str = "gemini-2.5-flash"
    gemini_edit_model: str = "gemini-2.5-flash-image"
    gemini_timeout_seconds: float = Field(default=60.0, gt=0)
    gemini_max_retries: int = Field(default=2, ge=0, le=10)
    # Images are downscaled to this long side before they are sent to a provider.
    ai_image_max_side: int = Field(default=1536, ge=256, le=8192)
    ai_cache_ttl_seconds: int = Field(default=3600, ge=1)
    ai_cache_max_entries: int = Field(default=10_000, ge=1)
    ai_daily_quota: int = Field(default=200, ge=0)
    ai_prompt_max_chars: int = Field(default=2000, ge=1, le=100_000)
    auto_caption: bool = False

    # Product CSV batches and the remote fetches they make.
    batch_max_csv_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    batch_max_rows: int = Field(default=1000, ge=1)
    batch_max_urls_per_row: int = Field(default=20, ge=1)
    batch_max_urls_total: int = Field(default=5000, ge=1)
    batch_concurrency: int = Field(default=4, ge=1, le=64)
    fetch_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    fetch_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    fetch_total_timeout_seconds: float = Field(default=30.0, gt=0)
    # Test-only: loopback hosts remote fetches may reach. Refused outside dev/test.
    fetch_allow_loopback_hosts: Annotated[list[str], NoDecode] = []
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_base_delay_seconds: float = Field(default=1.0, ge=0)

    # Task engine. Workers import these modules to learn the task kinds; tests add their own.
    task_modules: Annotated[list[str], NoDecode] = []
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # How often the sweeper looks for lost or stuck tasks (also saq's own sweep interval).
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # A queued task not started within this long is re-checked (and re-enqueued) by the sweeper.
    task_queue_grace_seconds: float = Field(default=30.0, gt=0)
    # Run the worker inside the API process; the default when there is no REDIS_URL.
    embedded_worker: bool | None = None
    ws_ping_seconds: float = Field(default=25.0, gt=0)

    # /metrics answers only with `Authorization: Bearer <token>`; unset, it is not served (404).
    metrics_token: SecretStr | None = None

    log_level: str = "INFO"
    log_json: bool = True
    # Cloud Run puts the trace id in X-Cloud-Trace-Context; Cloud Logging wants it qualified.
    google_cloud_project: str | None = Field(
        default=None, validation_alias=_env("GOOGLE_CLOUD_PROJECT")
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("fetch_allow_loopback_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("redis_url", "metrics_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # An empty metrics token must mean "metrics off", never "any empty bearer passes".
        return None if value == "" else value

    @model_validator(mode="after")
    def _loopback_fetches_only_in_tests(self) -> Settings:
        if self.fetch_allow_loopback_hosts and self.env == "prod":
            raise ValueError(
                "ATELIER_FETCH_ALLOW_LOOPBACK_HOSTS is a test setting; it is refused in prod"
            )
        return self

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.env == "dev":
            if self.secret_key is None:
                self.secret_key = SecretStr(DEV_SECRET_KEY)
            return self
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key or key == DEV_SECRET_KEY or len(key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"ATELIER_SECRET_KEY must be set to a random value of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters outside ATELIER_ENV=dev "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return self

    @property
    def dev(self) -> bool:
        return self.env == "dev"

    @property
    def cookie_secure(self) -> bool:
        return not self.dev

    @property
    def secret(self) -> str:
        assert self.secret_key is not None  # guaranteed by the validator
        return self.secret_key.get_secret_value()

    @property
    def run_embedded_worker(self) -> bool:
        return self.redis_url is None if self.embedded_worker is None else self.embedded_worker


@lru_cache
def get_settings() -> Settings:
    return Settings()
