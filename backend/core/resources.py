"""The long-lived clients of one app instance, created on first use.

Lazy creation matters on Lambda, where Mangum runs with ``lifespan="off"`` and nothing is set up
at start; under uvicorn the lifespan simply closes them at shutdown.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from backend.config import Settings
from backend.core.db import Database
from backend.core.redis import create_redis
from backend.storage.base import Storage, open_storage
from backend.tasks.queue import TaskQueue

if TYPE_CHECKING:
    from backend.ai.providers.base import Provider
    from backend.realtime.hub import Hub


class Resources:
    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        redis: Redis | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.settings = settings
        # Injected instances belong to the caller (tests share them between app instances):
        # set directly so cached_property never runs, and left open by close().
        self._borrowed = {
            name: value
            for name, value in (("db", db), ("redis", redis), ("storage", storage))
            if value is not None
        }
        self.__dict__.update(self._borrowed)

    @cached_property
    def db(self) -> Database:
        return Database(
            self.settings.database_url,
            pool_size=self.settings.database_pool_size,
            max_overflow=self.settings.database_max_overflow,
        )

    @cached_property
    def redis(self) -> Redis:
        return create_redis(self.settings.redis_url)

    @cached_property
    def storage(self) -> Storage:
        return open_storage(
            self.settings.storage_url,
            secret=self.settings.secret,
            public_base_url=self.settings.public_base_url,
        )

    @cached_property
    def queue(self) -> TaskQueue:
        return TaskQueue(
            self.redis,
            embedded=self.embedded_redis,
            queue_grace=self.settings.task_queue_grace_seconds,
        )

    @cached_property
    def providers(self) -> dict[str, Provider]:
        from backend.ai.providers.base import ProviderSettings, build_providers

        settings = self.settings
        return build_providers(
            ProviderSettings(
                gemini_api_key=(
                    settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else None
                ),
                gemini_base_url=settings.gemini_base_url,
                caption_model=settings.gemini_caption_model,
                edit_model=settings.gemini_edit_model,
                timeout_seconds=settings.gemini_timeout_seconds,
                max_retries=settings.gemini_max_retries,
                image_max_side=settings.ai_image_max_side,
            )
        )

    @cached_property
    def hub(self) -> Hub:
        from backend.realtime.hub import Hub

        return Hub(self.redis)

    @property
    def embedded_redis(self) -> bool:
        return self.settings.redis_url is None

    def _owns(self, name: str) -> bool:
        return name in self.__dict__ and name not in self._borrowed

    async def close(self) -> None:
        if "hub" in self.__dict__:
            await self.hub.close()
        if "providers" in self.__dict__:
            for provider in self.providers.values():
                await provider.close()
        if self._owns("db"):
            await self.db.dispose()
        if self._owns("redis"):
            await self.redis.aclose()
        if self._owns("storage"):
            await self.storage.close()


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def get_settings_dep(request: Request) -> Settings:
    return get_resources(request).settings


def get_redis(request: Request) -> Redis:
    return get_resources(request).redis


def get_queue(request: Request) -> TaskQueue:
    return get_resources(request).queue


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
