"""Every feature's tables, imported once so Alembic and tests see the whole schema."""

from backend.auth import models as auth_models
from backend.batches import models as batch_models
from backend.core.db import Base
from backend.delivery import models as delivery_models
from backend.images import models as image_models
from backend.sketches import models as sketch_models
from backend.tasks import models as task_models

__all__ = [
    "Base",
    "auth_models",
    "batch_models",
    "delivery_models",
    "image_models",
    "sketch_models",
    "task_models",
]
