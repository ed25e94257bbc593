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


class TaskFailureOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    error_code: str | None
    error: str | None = Field(description="The error message, cut to 300 characters")
    attempts: int
    user_id: uuid.UUID
    user_email: str | None = Field(description="The owner's email; null if the user is gone")
    created_at: datetime
    finished_at: datetime | None


class TaskSummaryOut(BaseModel):
    total: int
    by_status: dict[str, int] = Field(description="Every status, zeros included")
    by_kind: dict[str, dict[str, int]] = Field(
        description="Per kind present: every status, zeros included"
    )
    failed_by_code: dict[str, int] = Field(description="Failed tasks by error code")
    oldest_queued_at: datetime | None = Field(description="Creation time of the oldest queued task")
    recent_failures: list[TaskFailureOut] = Field(description="Newest failures first")
