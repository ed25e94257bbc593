from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from backend.auth import service as auth_service
from backend.auth.deps import AdminUser, CurrentPrincipal, CurrentUser
from backend.core.db import SessionDep
from backend.core.errors import problem_responses
from backend.core.pagination import Page, PageDep
from backend.core.resources import RedisDep
from backend.tasks import service
from backend.tasks.models import Task, TaskStatus
from backend.tasks.schemas import TaskFailureOut, TaskOut, TaskSummaryOut

router = APIRouter(prefix="/api/tasks", tags=["tasks"], responses=problem_responses(401))
admin_router = APIRouter(
    prefix="/api/admin/tasks", tags=["admin"], responses=problem_responses(401, 403)
)


@router.get("", response_model=Page[TaskOut], responses=problem_responses(422))
async def list_tasks(
    user: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
) -> Page[TaskOut]:
    items, cursor = await service.list_tasks(
        session, user_id=user.id, page=page, status=status_filter
    )
    return Page(items=[TaskOut.model_validate(t) for t in items], next_cursor=cursor)


@router.get("/{task_id}", response_model=TaskOut, responses=problem_responses(404, 422))
async def get_task(task_id: uuid.UUID, user: CurrentPrincipal, session: SessionDep) -> Task:
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


@admin_router.get("/summary", response_model=TaskSummaryOut, responses=problem_responses(422))
async def task_summary(
    _admin: AdminUser,
    session: SessionDep,
    failures: Annotated[
        int, Query(ge=0, le=50, description="How many recent failures to list")
    ] = 10,
) -> TaskSummaryOut:
    """Admin: every user's tasks by kind and status, failures by code, the latest failures."""
    found = await service.summary(session, failures=failures)
    emails = await auth_service.emails_by_id(session, {t.user_id for t in found.recent_failures})
    return TaskSummaryOut(
        total=sum(found.by_status.values()),
        by_status=found.by_status,
        by_kind=found.by_kind,
        failed_by_code=found.failed_by_code,
        oldest_queued_at=found.oldest_queued_at,
        recent_failures=[
            TaskFailureOut(
                id=t.id,
                kind=t.kind,
                error_code=t.error_code,
                error=t.error[:300] if t.error else None,
                attempts=t.attempts,
                user_id=t.user_id,
                user_email=emails.get(t.user_id),
                created_at=t.created_at,
                finished_at=t.finished_at,
            )
            for t in found.recent_failures
        ],
    )
