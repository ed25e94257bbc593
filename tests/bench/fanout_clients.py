"""WebSocket clients for the fan-out benchmark, run as processes of their own.

``python -m tests.bench.fanout_clients --targets FILE --events N --warmup W --redis-url URL
--ack-key KEY --out FILE`` opens one socket per entry of the JSON list in ``--targets``
(``{"url": ..., "headers": {...}}``), waits for every socket's first frame, writes ``READY``,
then records the receipt time of every benchmark event (``bench i=<round> t=<ns>`` in the task
message, see ``tests.bench.kinds``). Once each of its sockets has round ``i``, it pushes one
item to the ack key: the publisher waits for one per client process before the next round
(closed loop). After the last round it writes ``DONE`` and its figures (latencies in µs, warm-up
rounds left out) to ``--out``.

The clients are part of the measurement, and on a shared 2-core machine their own CPU time
delays every receipt, for Atelier and the bare reference alike; so they do as little as a
browser's socket would before the page sees a message. Each frame is timestamped and counted
in the connection's protocol callback, as soon as it is parsed (and inflated, when the server
negotiated compression): no reader task per socket to wake, no message queue. The round and
send time are read with a regular expression rather than a JSON parser; every frame is still
read whole. The event loop is uvloop's, as the servers'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

# The same clients as the in-process latency bench's, with targets of several users.
from tests.bench.ws_clients import BenchConnection, Run, raise_open_file_limit

OPEN_TIMEOUT = 60.0
STALL_TIMEOUT = 30.0


async def open_socket(target: dict[str, Any]) -> BenchConnection:
    ws = await connect(
        target["url"],
        create_connection=BenchConnection,
        additional_headers=target.get("headers", {}),
        open_timeout=OPEN_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        max_queue=None,
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT))
    if first.get("type") != "snapshot":
        raise RuntimeError(f"expected a snapshot first, got {first!r}")
    assert isinstance(ws, BenchConnection)
    return ws


async def main(args: argparse.Namespace) -> int:
    raise_open_file_limit()
    targets: list[dict[str, Any]] = json.loads(Path(args.targets).read_text())
    gate = asyncio.Semaphore(args.concurrency)

    async def one(target: dict[str, Any]) -> BenchConnection:
        async with gate:
            return await open_socket(target)

    started = time.perf_counter()
    sockets = list(await asyncio.gather(*(one(t) for t in targets)))
    open_seconds = time.perf_counter() - started
    redis = Redis.from_url(args.redis_url)
    run = Run(len(sockets), args.events, args.warmup, redis, args.ack_key)
    acks: set[asyncio.Task[Any]] = set()
    for ws in sockets:
        ws.acks = acks
        ws.run = run
    sys.stdout.write(f"READY sockets={len(sockets)} open_s={open_seconds:.2f}\n")
    sys.stdout.flush()

    cpu_started = time.process_time()
    stalled = False
    while run.complete < run.events:
        run.progressed.clear()
        try:
            await asyncio.wait_for(run.progressed.wait(), STALL_TIMEOUT)
        except TimeoutError:
            stalled = True
            break
    cpu_seconds = time.process_time() - cpu_started
    await asyncio.gather(*acks, return_exceptions=True)

    async def close(ws: ClientConnection) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await ws.close()

    await asyncio.gather(*(close(ws) for ws in sockets))
    await redis.aclose()
    Path(args.out).write_text(
        json.dumps(
            {
                "sockets": len(sockets),
                "events_complete": run.complete,
                "stalled": stalled,
                "open_seconds": open_seconds,
                "cpu_seconds": cpu_seconds,
                "latencies_us": run.latencies_us,
                "last_ns": run.last_ns,
            }
        )
    )
    sys.stdout.write(f"DONE events={run.complete}\n")
    sys.stdout.flush()
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--ack-key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args(sys.argv[1:]))))
