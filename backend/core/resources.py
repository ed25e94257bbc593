"""The long-lived clients of one app instance, created on first use, and how features reach them.

This module knows only the shared infrastructure (settings, database, Redis, storage). Pieces
that belong to a feature (the task queue, the AI providers, the realtime hub) are ``Component``
slots declared by that feature and filled by the composition root (``backend.composition``),
so imports run one way: app → features → core.

Lazy creation matters on Lambda, where Mangum runs with ``lifespan="off"`` and nothing is set up
at start; under uvicorn the lifespan simply closes them at shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Annotated, Any, Generic, TypeVar, cast

from fastapi import Depends, Request
from redis.asyncio import Redis

from backend.config import Settings
from backend.core.db import Database
from backend.core.redis import create_redis
from backend.storage.base import Storage, open_storage

T = TypeVar("T")


class Component(Generic[T]):
    """A named slot for one feature-owned piece; ``slot.of(resources)`` builds it once."""

    def __init__(self, name: str) -> None:
        self.name = name

    def of(self, resources: Resources) -> T:
        return resources.component(self)

    def __repr__(self) -> str:
        return f"Component({self.name!r})"


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
        self._factories: dict[Component[Any], Callable[[], Any]] = {}
        self._closers: dict[Component[Any], Callable[[Any], Awaitable[None]]] = {}
        self._built: dict[Component[Any], Any] = {}

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

    @property
    def embedded_redis(self) -> bool:
        return self.settings.redis_url is None

    def provide(
        self,
        component: Component[T],
        build: Callable[[], T],
        *,
        close: Callable[[T], Awaitable[None]] | None = None,
    ) -> None:
        """Say how to build ``component`` (on first use); replaces an unbuilt or built one."""
        self._factories[component] = build
        self._built.pop(component, None)
        if close is not None:
            self._closers[component] = close

    def component(self, component: Component[T]) -> T:
        if component not in self._built:
            try:
                build = self._factories[component]
            except KeyError:
                raise LookupError(
                    f"nothing provides {component.name}: build the resources with "
                    "backend.composition.AppResources"
                ) from None
            self._built[component] = build()
        return cast(T, self._built[component])

    def _owns(self, name: str) -> bool:
        return name in self.__dict__ and name not in self._borrowed

    async def close(self) -> None:
        # Components first (newest first): they use the clients closed after them.
        for component, value in reversed(list(self._built.items())):
            closer = self._closers.get(component)
            if closer is not None:
                await closer(value)
        self._built.clear()
        if self._owns("db"):
            await self.db.dispose()
        if self._owns("redis"):
            await self.redis.aclose()
        if self._owns("storage"):
            await self.storage.close()


# The dependencies below are coroutine functions although none awaits: FastAPI runs a plain
# ``def`` dependency in a worker thread, a hop that cost more than the rest of a request.


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def get_settings_dep(request: Request) -> Settings:
    resources: Resources = request.app.state.resources
    return resources.settings


async def get_redis(request: Request) -> Redis:
    resources: Resources = request.app.state.resources
    return resources.redis


async def get_storage(request: Request) -> Storage:
    resources: Resources = request.app.state.resources
    return resources.storage


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
StorageDep = Annotated[Storage, Depends(get_storage)]
