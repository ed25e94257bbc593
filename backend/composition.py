"""The composition root: what one process needs, wired from settings.

It sits above the features (arrows run app → features → core): the core ``Resources`` holds the
shared clients, and this module fills the slots features declare for their own pieces (the task
queue, the AI providers, the realtime hub). ``create_app``, ``atelier worker`` and the Lambda
handler build an ``AppResources``; tests build one on their own servers.
"""

from __future__ import annotations

from functools import partial

from redis.asyncio import Redis

from backend.ai.deps import PROVIDERS
from backend.ai.providers.base import Provider, ProviderSettings, build_providers
from backend.auth import service as auth_service
from backend.auth.deps import SESSIONS
from backend.auth.sessions import SessionCache
from backend.config import Settings
from backend.core.db import Database
from backend.core.resources import Resources
from backend.realtime.deps import HUB
from backend.realtime.hub import Hub
from backend.storage.base import Storage
from backend.tasks.deps import QUEUE
from backend.tasks.queue import TaskQueue


class AppResources(Resources):
    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        redis: Redis | None = None,
        storage: Storage | None = None,
    ) -> None:
        super().__init__(settings, db=db, redis=redis, storage=storage)
        self.provide(QUEUE, self._build_queue)
        self.provide(PROVIDERS, self._build_providers, close=_close_providers)
        self.provide(HUB, lambda: Hub(self.redis), close=Hub.close)
        self.provide(
            SESSIONS,
            lambda: SessionCache(
                self.redis,
                ttl=settings.session_cache_seconds,
                recheck=partial(auth_service.ended_of, self.db),
            ),
            close=SessionCache.close,
        )

    def _build_queue(self) -> TaskQueue:
        return TaskQueue(
            self.redis,
            embedded=self.embedded_redis,
            queue_grace=self.settings.task_queue_grace_seconds,
        )

    def _build_providers(self) -> dict[str, Provider]:
        return build_providers(ProviderSettings.from_settings(self.settings))

    # Direct handles for the process that owns the wiring (and its tests); features use the
    # accessors of their own package (``backend.tasks.deps.task_queue`` …) on plain Resources.
    @property
    def queue(self) -> TaskQueue:
        return QUEUE.of(self)

    @property
    def providers(self) -> dict[str, Provider]:
        return PROVIDERS.of(self)

    @property
    def hub(self) -> Hub:
        return HUB.of(self)

    @hub.setter
    def hub(self, hub: Hub) -> None:
        self.provide(HUB, lambda: hub, close=Hub.close)


async def _close_providers(providers: dict[str, Provider]) -> None:
    for provider in providers.values():
        await provider.close()
