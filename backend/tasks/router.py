from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from backend.auth.deps import CurrentUser
from backend.core.db import SessionDep
from backend.core.errors import problem_responses
from backend.core.pagination import Page, PageDep
from backend.core.resources import RedisDep
from backend.tasks import service
from backend.tasks.models import Task, TaskStatus
from backend.tasks.schemas import TaskOut

router = APIRouter(prefix="/api/tasks", tags=["tasks"], responses=problem_responses(401))


@router.get("", response_model=Page[TaskOut], responses=problem_responses(422))
async def list_tasks(
    user: CurrentUser,
    session: SessionDep,
    page: PageDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
) -> Page[TaskOut]:
    items, cursor = await service.list_tasks(
        session, user_id=user.id, page=page, status=status_filter
    )
    return Page(items=[TaskOut.model_validate(t) for t in items], next_cursor=cursor)


@router.get("/{task_id}", response_model=TaskOut, responses=problem_responses(404, 422))
async def get_task(task_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Task:
    return await service.get_task(session, user_id=user.id, task_id=task_id)


@router.post(
    "/{task_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses=problem_responses(403, 404, 409, 422),
)
async def cancel_task(
    task_id: uuid.UUID, user: CurrentUser, session: SessionDep, redis: RedisDep
) -> Task:
    """A queued task never starts; a running one stops at its next progress checkpoint."""
    return await service.cancel_task(session, redis, user_id=user.id, task_id=task_id)
