from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.tasks.models import TaskStatus


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str = Field(description="thumbnails, sketch, caption, edit or batch")
    status: TaskStatus
    progress: int = Field(ge=0, le=100)
    message: str | None = Field(description="What the task is doing now")
    image_id: uuid.UUID | None = None
    sketch_id: uuid.UUID | None = None
    batch_id: uuid.UUID | None = None
    error: str | None
    error_code: str | None = Field(description="Stable code of the error, when failed")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
