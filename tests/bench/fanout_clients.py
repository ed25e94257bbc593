"""WebSocket clients for the fan-out benchmark, run as processes of their own.

``python -m tests.bench.fanout_clients --targets FILE --events N --warmup W --redis-url URL
--ack-key KEY --out FILE`` opens one socket per entry of the JSON list in ``--targets``
(``{"url": ..., "headers": {...}}``), waits for every socket's first frame, writes ``READY``,
then records the receipt time of every benchmark event (``bench i=<round> t=<ns>`` in the task
message, see ``tests.bench.kinds``). Once each of its sockets has round ``i``, it pushes one
item to the ack key: the publisher waits for one per client process before the next round
(closed loop). After the last round it writes ``DONE`` and its figures (latencies in µs, warm-up
rounds left out) to ``--out``.

The round and send time are read with a regular expression rather than a JSON parser, to keep
the clients' share of the two cores small; every frame is still read whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

# The same bookkeeping as the in-process latency bench's clients; only reading differs: a regex
# on the raw frame, so 1,000 sockets' clients do not spend their CPU parsing JSON.
from tests.bench.ws_clients import Run, raise_open_file_limit

OPEN_TIMEOUT = 60.0
STALL_TIMEOUT = 30.0
EVENT = re.compile(r'"message":\s*"bench i=(\d+) t=(\d+)"')


async def open_socket(target: dict[str, Any]) -> ClientConnection:
    ws = await connect(
        target["url"],
        additional_headers=target.get("headers", {}),
        open_timeout=OPEN_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        max_queue=None,
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT))
    if first.get("type") != "snapshot":
        raise RuntimeError(f"expected a snapshot first, got {first!r}")
    return ws


async def read(ws: ClientConnection, run: Run) -> None:
    last = run.events - 1
    async for raw in ws:
        received_ns = time.time_ns()
        found = EVENT.search(raw if isinstance(raw, str) else raw.decode())
        if found is None:
            continue
        index = int(found.group(1))
        await run.received(index, int(found.group(2)), received_ns)
        if index == last:
            return


async def main(args: argparse.Namespace) -> int:
    raise_open_file_limit()
    targets: list[dict[str, Any]] = json.loads(Path(args.targets).read_text())
    gate = asyncio.Semaphore(args.concurrency)

    async def one(target: dict[str, Any]) -> ClientConnection:
        async with gate:
            return await open_socket(target)

    started = time.perf_counter()
    sockets = list(await asyncio.gather(*(one(t) for t in targets)))
    open_seconds = time.perf_counter() - started
    redis = Redis.from_url(args.redis_url)
    run = Run(len(sockets), args.events, args.warmup, redis, args.ack_key)
    readers = [asyncio.create_task(read(ws, run)) for ws in sockets]
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
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)

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
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
