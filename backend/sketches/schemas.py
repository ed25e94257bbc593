from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.tasks.schemas import TaskOut

StyleId = Literal["pencil", "charcoal", "watercolor", "ink", "pastel", "oil", "acrylic"]
MethodId = Literal["basic", "advanced", "artistic"]
SketchStatus = Literal["processing", "ready", "failed", "canceled"]


class StyleOut(BaseModel):
    id: str
    name: str
    description: str
    grayscale: bool
    preview_url: str | None = None


class MethodOut(BaseModel):
    id: str
    name: str
    description: str


class Available(BaseModel):
    styles: list[StyleOut]
    methods: list[MethodOut]


class ParamsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intensity: float = Field(default=0.5, ge=0.0, le=1.0)
    max_side: int = Field(default=2048, ge=256, le=8192)
    # Left out: PNG for gray styles, JPEG for colour ones (resolved when the sketch is made).
    format: Literal["png", "jpeg", "webp"] | None = None


class CreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID
    style: StyleId
    method: MethodId = "basic"
    params: ParamsIn = Field(default_factory=ParamsIn)


class SketchOut(BaseModel):
    id: uuid.UUID
    image_id: uuid.UUID
    style: str
    method: str
    params: dict[str, Any]
    status: SketchStatus
    task_id: uuid.UUID | None
    result_url: str | None
    delivery: dict[str, str] | None = Field(
        default=None,
        description="Signed delivery URLs of the result (small/medium/large), once it is ready",
    )
    width: int | None
    height: int | None
    created_at: datetime
    processing_time_ms: int | None
    error: str | None = None


class Created(BaseModel):
    sketch: SketchOut
    task: TaskOut
