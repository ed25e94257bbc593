"""One typed Settings object for the whole service.

Every value comes from the environment (prefix ``ATELIER_``); the handful of names that hosting
platforms and tooling set without a prefix (``DATABASE_URL``, ``REDIS_URL``, ``STORAGE_URL``,
``GEMINI_API_KEY``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``PORT``) are accepted as they
are. Defaults are the embedded ones used by ``make run``: SQLite, an in-process Redis, a
local storage folder.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A recognisable placeholder: it is what dev mode runs with, and what production refuses.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
MIN_SECRET_KEY_LENGTH = 32
# Values copied from documentation without being filled in: `<password>`, `CHANGE_ME`, ….
_PLACEHOLDER = re.compile(r"[<>{}]|change[-_]?me|placeholder|your[-_]|\.invalid\b|\bx{3,}\b", re.I)


class ConfigError(Exception):
    """Settings the process must not start with; the message is one line meant for operators."""


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

    # Origins allowed by CORS and the /ws Origin check, besides PUBLIC_BASE_URL's own. Unset
    # outside prod: the loopback origins of the port actually served.
    allowed_origins: Annotated[list[str], NoDecode] = []

    access_token_ttl_seconds: int = Field(default=900, ge=30)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # How long an instance may answer a cookie's session from memory (backend/auth/sessions.py);
    # revocations reach every instance over Redis at once, this bounds one that was missed. 0: off.
    session_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    login_max_failures_per_email: int = Field(default=5, ge=1)
    login_max_failures_per_ip: int = Field(default=30, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Proxies in front of the app that append to X-Forwarded-For (Cloud Run: 1). The client is
    # that many entries from the right; 0 ignores the header and uses the connection's peer.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)

    # Uploads. MAX_IMAGE_PIXELS is imgproxy's default: 50 MP.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    upload_url_ttl_seconds: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    download_url_ttl_seconds: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    # Uploads (presigned and direct) one user may start per minute, across all instances.
    upload_rate_per_minute: int = Field(default=60, ge=1)
    # The window that rate counts over; shorter ones make browser tests of the retry quick.
    upload_rate_window_seconds: int = Field(default=60, ge=1, le=3600)
    # Where the app is reached from browsers; the local storage backend signs URLs under it.
    # Unset outside prod: http://HOST:PORT of the address actually served. Required in prod.
    public_base_url: str = ""

    # Delivery (signed transformation URLs). Keys are "kid:secret,kid2:secret2", the first mints;
    # unset, one key ("k0") is derived from SECRET_KEY.
    delivery_keys: SecretStr | None = None
    delivery_max_side: int = Field(default=4096, ge=16, le=16384)
    delivery_max_pixels: int = Field(default=16_000_000, ge=256)
    delivery_default_quality: int = Field(default=80, ge=1, le=100)
    delivery_max_expires_in: int = Field(default=365 * 24 * 3600, ge=60)
    # How long a request waits for another instance rendering the same variant.
    delivery_render_wait_seconds: float = Field(default=30.0, gt=0)

    # AI. Gemini is used when GEMINI_API_KEY is set; the local provider is always there.
    gemini_base_url: str | None = Field(
        default=None, validation_alias=_env("GOOGLE_GEMINI_BASE_URL")
    )
    gemini_caption_model: str = "gemini-2.5-flash"
    gemini_edit_model: str = "gemini-2.5-flash-image"
    gemini_timeout_seconds: float = Field(default=60.0, gt=0)
    gemini_max_retries: int = Field(default=2, ge=0, le=10)
    # OpenAI is used when OPENAI_API_KEY is set: captions by a vision model, edits by gpt-image-1.
    openai_api_key: SecretStr | None = Field(default=None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=_env("OPENAI_BASE_URL"))
    openai_caption_model: str = "gpt-4o-mini"
    openai_edit_model: str = "gpt-image-1"
    # Image edits take tens of seconds; the SDK's own default would be ten minutes.
    openai_timeout_seconds: float = Field(default=120.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
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
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
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
    def _derive_local_addresses(self) -> Settings:
        """`ATELIER_PORT=8011 make run` signs its forms for :8011 and accepts its own pages'
        WebSocket; prod derives nothing (it listens on 0.0.0.0 behind a front end)."""
        if self.env == "prod":
            return self
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if not self.public_base_url:
            self.public_base_url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        if "allowed_origins" not in self.model_fields_set:
            self.allowed_origins = [
                f"http://127.0.0.1:{self.port}",
                f"http://localhost:{self.port}",
            ]
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_config(self) -> Settings:
        """Outside dev: a real secret. In prod, also the real services: without them each
        instance would quietly get its own SQLite file (unwritable in the image), fakeredis
        queue, rate limits and worker. Every problem is reported at once, on one line."""
        if self.env == "dev":
            if self.secret_key is None:
                self.secret_key = SecretStr(DEV_SECRET_KEY)
            return self
        problems = []
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key or key == DEV_SECRET_KEY or len(key) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"ATELIER_SECRET_KEY must be set to a random value of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters outside ATELIER_ENV=dev "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if self.env == "prod":
            problems.extend(self._prod_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _prod_problems(self) -> list[str]:
        problems = []
        if _scheme(self.database_url) != "postgresql+asyncpg":
            problems.append(
                "ATELIER_DATABASE_URL (or DATABASE_URL) must be a Postgres URL for asyncpg in "
                "prod (postgresql+asyncpg://USER:PASSWORD@HOST/DB)"
            )
        elif not _usable(self.database_url):
            problems.append("ATELIER_DATABASE_URL is a placeholder, not a Postgres URL")
        if self.redis_url is None:
            problems.append(
                "ATELIER_REDIS_URL (or REDIS_URL) is required in prod (redis://HOST:6379/0), "
                "or each instance gets its own in-process queue and rate limits"
            )
        elif _scheme(self.redis_url) not in ("redis", "rediss", "unix") or not _usable(
            self.redis_url
        ):
            problems.append("ATELIER_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        if _scheme(self.storage_url) != "s3" or not _usable(self.storage_url):
            problems.append(
                "ATELIER_STORAGE_URL (or STORAGE_URL) must be s3://BUCKET?… in prod "
                "(a local folder is neither shared nor writable in the image)"
            )
        if self.embedded_worker:
            problems.append("ATELIER_EMBEDDED_WORKER is refused in prod: run `atelier worker`")
        if not _usable(self.public_base_url) or _scheme(self.public_base_url) not in (
            "http",
            "https",
        ):
            problems.append(
                "ATELIER_PUBLIC_BASE_URL is required in prod: the https:// address browsers use "
                "(signed links and the WebSocket's allowed origin come from it)"
            )
        if self.fetch_allow_loopback_hosts:
            problems.append(
                "ATELIER_FETCH_ALLOW_LOOPBACK_HOSTS is a test setting; it is refused in prod"
            )
        return problems

    @property
    def public_origin(self) -> str:
        """PUBLIC_BASE_URL as a browser writes it in ``Origin``: no path, no default port."""
        parts = urlsplit(self.public_base_url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        default = {"http": 80, "https": 443}.get(scheme)
        port = f":{parts.port}" if parts.port and parts.port != default else ""
        return f"{scheme}://{host}{port}"

    @property
    def browser_origins(self) -> list[str]:
        """Origins allowed by CORS and /ws: the app's own (always) and ALLOWED_ORIGINS."""
        origins = [self.public_origin] if self.public_base_url else []
        return origins + [o for o in self.allowed_origins if o not in origins]

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


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _usable(url: str) -> bool:
    """A URL with a host (or a bucket, or a socket path) that is not a documentation stand-in."""
    parts = urlsplit(url)
    return bool(parts.netloc or parts.path.strip("/")) and not _PLACEHOLDER.search(url)


def load_settings() -> Settings:
    """Settings from the environment, or a ConfigError whose message fits on one line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    messages = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
            name = field if field.isupper() else f"ATELIER_{field.upper()}"
            message = f"{name}: {message}"
        messages.append(message)
    return "; ".join(messages).replace("\n", " ")


@lru_cache
def get_settings() -> Settings:
    return load_settings()
