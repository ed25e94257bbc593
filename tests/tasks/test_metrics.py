"""Task metrics are counters kept as tasks change; a scrape never reads the tasks table."""

from __future__ import annotations

import re
from typing import Any

from pydantic import SecretStr
from sqlalchemy import event

from backend.composition import AppResources
from backend.main import create_app
from backend.tasks.models import TaskStatus
from backend.tasks.worker import running_worker
from tests.conftest import client_for
from tests.tasks.conftest import CreateTask, wait_status

TOKEN = "scrape-" + "t" * 40


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_scrape_reads_counters_not_the_tasks_table(
    resources: AppResources, create_task: CreateTask
) -> None:
    settings = resources.settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    api = AppResources(settings, db=resources.db, redis=resources.redis)
    app = create_app(settings, resources=api)
    async with running_worker(resources):
        done = await create_task("test.steps", steps=2)
        broken = await create_task("test.broken")
        await wait_status(resources, done, TaskStatus.succeeded)
        await wait_status(resources, broken, TaskStatus.failed)
    waiting = await create_task("test.noop")  # no worker any more: it stays queued

    statements: list[str] = []
    engine = resources.db.sessionmaker.kw["bind"].sync_engine

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with client_for(app) as c:
            scrape = await c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        scrape_statements = list(statements)
        await resources.db.ping()  # proves the listener sees this engine's statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert scrape.status_code == 200
    assert scrape_statements == []
    assert statements == ["SELECT 1"]
    text = scrape.text
    assert _value(text, "atelier_tasks_total", kind="test.steps", status="queued") == 1
    assert _value(text, "atelier_tasks_total", kind="test.steps", status="running") == 1
    assert _value(text, "atelier_tasks_total", kind="test.steps", status="succeeded") == 1
    # Two attempts: queued and running twice each, failed once; progress events are not counted.
    assert _value(text, "atelier_tasks_total", kind="test.broken", status="queued") == 2
    assert _value(text, "atelier_tasks_total", kind="test.broken", status="running") == 2
    assert _value(text, "atelier_tasks_total", kind="test.broken", status="failed") == 1
    assert _value(text, "atelier_tasks_total", kind="test.noop", status="queued") == 1
    count = _value(
        text, "atelier_task_duration_seconds_count", kind="test.steps", status="succeeded"
    )
    assert count == 1
    seconds = _value(
        text, "atelier_task_duration_seconds_sum", kind="test.steps", status="succeeded"
    )
    assert 0 < seconds < 10
    assert "atelier_queue_depth 1.0" in text
    assert waiting
