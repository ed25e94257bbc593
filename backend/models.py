"""Every feature's tables, imported once so Alembic and tests see the whole schema."""

from backend.auth import models as auth_models
from backend.core.db import Base

__all__ = ["Base", "auth_models"]
