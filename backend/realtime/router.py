"""``GET /ws``: live task updates for the signed-in user.

Handshake: a browser's ``Origin`` must be PUBLIC_BASE_URL's or one of ``ALLOWED_ORIGINS`` (a
request without ``Origin`` comes from a non-browser client and is allowed), and the caller must be
authenticated by the ``access_token`` cookie or an ``X-API-Key`` header. Both are checked
before the upgrade is accepted, so a refusal is a plain HTTP 403 and no socket is opened.

Messages, server to client, all JSON text frames:

- ``{"type": "snapshot", "tasks": [Task, ...], "cursor": str, "resumed": bool}``: the user's
  active (queued or running) tasks, plus, when resuming, every task changed since the cursor
  (finished ones included). Always the first message, and sent again whenever events may have
  been lost (then resuming from the socket's own last cursor).
- ``{"type": "task.updated", "task": Task, "cursor": str}``: one per change of one of the
  user's tasks.
- ``{"type": "ping"}``: every ``WS_PING_SECONDS`` (25 s by default), to keep proxies from
  closing an idle connection.

Messages from the client are ignored. Close codes: 1008 (refused), 1011 (server error), 1012
(server restarting), 1013 (the client fell behind, or the database is down: try again later).
After any close a client reconnects, on whichever instance it reaches, with
``GET /ws?since=<cursor>`` (the ``cursor`` of the last message it received) and misses
nothing: tasks that finished during the gap are in the snapshot.
Cursors are opaque; a malformed one is ignored (``"resumed": false``, active tasks only).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from backend.auth.deps import ACCESS_COOKIE, session_cache
from backend.auth.service import resolve_access, resolve_api_key
from backend.auth.tokens import InvalidToken, decode_access_token
from backend.core.db import commit, utcnow
from backend.core.errors import AppError, dependency_down
from backend.core.resources import Resources
from backend.realtime.deps import realtime_hub
from backend.realtime.hub import (
    RESYNC_FRAME,
    HubClosed,
    SlowConsumer,
    Subscription,
    send_directly,
    write_directly,
)
from backend.realtime.transport import WRITE_EXTENSION
from backend.tasks.events import cursor_for, parse_cursor, task_json
from backend.tasks.service import active_tasks, changed_tasks

log = structlog.get_logger(__name__)
router = APIRouter()

API_KEY_HEADER = "x-api-key"
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
# A resumed snapshot reaches this far behind its cursor: rows are stamped by their writer's clock
# before their commit, so a change can become visible a little after a later-stamped one.
# Duplicates are harmless, a client keeps the latest state of each task.
RESUME_OVERLAP = timedelta(seconds=30)
# Changed tasks in one resumed snapshot (newest first); active ones are always all there.
RESUME_LIMIT = 500
# A message that cannot even be handed to the socket for this long (its buffers are full):
# the client has stopped reading, and is treated as a slow consumer (1013).
SEND_TIMEOUT_SECONDS = 10.0
# How long a close frame may wait for a client that has stopped reading before the connection
# is dropped without a closing handshake.
CLOSE_SEND_SECONDS = 5.0


def _normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """A missing Origin is a server-side client; a present one must be listed (case and a
    trailing slash aside: browsers send neither variation, configuration may)."""
    if origin is None:
        return True
    return _normalise_origin(origin) in {_normalise_origin(o) for o in allowed}


async def _authenticate(
    websocket: WebSocket, resources: Resources
) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """The caller's user id and sign-in session (None for an API key), or None when refused.
    Same precedence as HTTP: an API key header wins."""
    api_key = websocket.headers.get(API_KEY_HEADER)
    token = websocket.cookies.get(ACCESS_COOKIE)
    if api_key is None and not token:
        return None
    try:
        # Only for the handshake: a socket can stay open for hours and must not pin a connection.
        async with resources.db.sessionmaker() as session:
            if api_key is not None:
                user = await resolve_api_key(session, api_key)
                await commit(session)  # the key's last_used_at
                return user.id, None
            claims = decode_access_token(token or "", secret=resources.settings.secret)
            user = await resolve_access(
                session, user_id=claims.user_id, session_id=claims.session_id
            )
            return user.id, claims.session_id
    except (AppError, InvalidToken) as exc:
        log.info("ws_refused", reason="auth", error=type(exc).__name__)
        return None


async def _send_snapshot(
    websocket: WebSocket,
    resources: Resources,
    sub: Subscription,
    user_id: uuid.UUID,
    since: datetime | None,
) -> datetime:
    """Send a snapshot (resumed from ``since`` when given); the point it is current as of."""
    # Every event already queued was published after a commit this read will see, so it is
    # superseded; events arriving from now on may be newer and are kept.
    sub.clear()
    read_at = utcnow()
    async with resources.db.sessionmaker() as session:
        rows = {task.id: task for task in await active_tasks(session, user_id=user_id)}
        if since is not None:
            changed = await changed_tasks(
                session, user_id=user_id, since=since - RESUME_OVERLAP, limit=RESUME_LIMIT
            )
            rows.update((task.id, task) for task in changed)
        tasks = [task_json(task) for task in sorted(rows.values(), key=_created)]
    await _bounded(
        websocket.send_json(
            {
                "type": "snapshot",
                "tasks": tasks,
                "cursor": cursor_for(read_at),
                "resumed": since is not None,
            }
        )
    )
    return read_at


async def _bounded(send: Coroutine[Any, Any, None]) -> None:
    """Run a send; ``SlowConsumer`` if the socket cannot take it in ``SEND_TIMEOUT_SECONDS``.
    (uvicorn waits for the transport to drain before it writes, so a cancelled send wrote
    nothing.)"""
    try:
        async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
            await send
    except TimeoutError:
        raise SlowConsumer("the client stopped reading") from None


def _created(task: Any) -> tuple[datetime, str]:
    return task.created_at, str(task.id)


async def _forward(
    websocket: WebSocket, resources: Resources, sub: Subscription, user_id: uuid.UUID
) -> int:
    """Snapshot, then events and pings until the hub ends the subscription: the close code."""
    try:
        await _deliver(websocket, resources, sub, user_id)
    except SlowConsumer:
        return CLOSE_TRY_AGAIN_LATER
    except HubClosed:
        return CLOSE_SERVICE_RESTART
    raise AssertionError("unreachable: delivery ends only by an exception")


async def _deliver(
    websocket: WebSocket, resources: Resources, sub: Subscription, user_id: uuid.UUID
) -> None:
    interval = resources.settings.ws_ping_seconds
    loop = asyncio.get_running_loop()
    send = websocket.send_text
    # The server's shared-frame write when it offers one (``atelier serve`` does), else ASGI.
    write = websocket.scope.get("extensions", {}).get(WRITE_EXTENSION)
    direct = write_directly(write["write"]) if write else send_directly(send)
    # How far this socket is known to be current (``sub.position``): a resync snapshot resumes
    # from there, so a task that finished while the event subscription was down still arrives.
    sub.position = await _send_snapshot(
        websocket, resources, sub, user_id, parse_cursor(websocket.query_params.get("since"))
    )
    next_ping = loop.time() + interval
    while True:
        try:
            # While this waits, the hub sends events through ``direct`` itself (Subscription).
            async with asyncio.timeout_at(next_ping):
                frame = await sub.get(direct=direct)
        except TimeoutError:
            await _bounded(websocket.send_json({"type": "ping"}))
            # From now, not from the missed slot: a stalled loop must not trigger a burst.
            next_ping = max(next_ping + interval, loop.time())
            continue
        if frame is RESYNC_FRAME:
            sub.position = await _send_snapshot(websocket, resources, sub, user_id, sub.position)
        else:
            await _bounded(send(frame.text))
            sub.delivered(frame)


async def _until_client_leaves(websocket: WebSocket) -> None:
    # Reading is the only way to learn of a disconnect promptly; what clients send is ignored.
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@router.websocket("/ws")
async def task_updates(websocket: WebSocket) -> None:
    """Live task updates for the caller; see the module docstring for the protocol."""
    resources: Resources = websocket.app.state.resources
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, resources.settings.browser_origins):
        log.info("ws_refused", reason="origin", origin=origin[:200] if origin else None)
        await websocket.close(code=CLOSE_POLICY_VIOLATION)
        return
    caller = await _authenticate(websocket, resources)
    if caller is None:
        await websocket.close(code=CLOSE_POLICY_VIOLATION)
        return
    user_id, session_id = caller

    structlog.contextvars.bind_contextvars(user_id=str(user_id))
    # A socket lives for hours: signing out (or an admin disabling the account) ends it too,
    # on whichever instance holds it, instead of leaving it to stream events.
    with session_cache(resources).watch(session_id, user_id) as revoked:
        code = await _serve(websocket, resources, user_id, revoked)
    if code is not None:
        await _close(websocket, code)


async def _close(websocket: WebSocket, code: int) -> None:
    try:
        # The client may have gone in the meantime; then there is nothing left to close.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            async with asyncio.timeout(CLOSE_SEND_SECONDS):
                await websocket.close(code=code)
    except TimeoutError:
        log.info("ws_dropped_unread", code=code)
        server = websocket.scope.get("extensions", {}).get(WRITE_EXTENSION)
        if server is not None:
            server["abort"]()


async def _serve(
    websocket: WebSocket, resources: Resources, user_id: uuid.UUID, revoked: asyncio.Event
) -> int | None:
    """Run an authorised socket; the close code to send, or None when the client has gone."""
    try:
        # Subscribed before the handshake completes and before the snapshot is read: no change
        # can fall between the two, and a client that is connected is already listening.
        async with realtime_hub(resources).subscribe(user_id) as sub:
            await websocket.accept()
            forward = asyncio.create_task(_forward(websocket, resources, sub, user_id))
            listen = asyncio.create_task(_until_client_leaves(websocket))
            ended = asyncio.create_task(revoked.wait())
            try:
                done, _ = await asyncio.wait({forward, listen, ended}, return_when=FIRST_COMPLETED)
            finally:
                for task in (forward, listen, ended):
                    task.cancel()
                await asyncio.gather(forward, listen, ended, return_exceptions=True)
    except HubClosed:
        # Shutting down before the handshake: still unaccepted, so the client sees a 403.
        return CLOSE_SERVICE_RESTART

    if ended in done and forward not in done and listen not in done:
        log.info("ws_closed_revoked")
        return CLOSE_POLICY_VIOLATION

    if forward not in done:
        error = listen.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect):
            log.error("ws_receive_failed", error=repr(error), exc_info=error)
        return None
    error = forward.exception()
    if error is None:
        code = forward.result()
        log.info("ws_closed_by_server", code=code)
        return code
    if isinstance(error, WebSocketDisconnect):
        return None  # the client vanished mid-send
    if dependency_down(error):
        # The database (or Redis) is down: not a bug; the client should retry a little later.
        log.warning("ws_dependency_down", error=type(error).__name__)
        return CLOSE_TRY_AGAIN_LATER
    log.error("ws_failed", error=repr(error), exc_info=error)
    return CLOSE_INTERNAL_ERROR
