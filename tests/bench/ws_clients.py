"""WebSocket clients for the event-latency benchmark, run as a process of their own.

``python -m tests.bench.ws_clients --url ws://127.0.0.1:PORT/ws --sockets N --events M ...``
opens N sockets for one user (the ``Cookie`` header comes from ``BENCH_COOKIE``), waits for
every snapshot, writes ``READY`` on stdout, then records the receipt time of each progress event
of the ``bench.progress`` task on every socket. Once every socket has an event, it pushes to
the ack key, which lets the worker send the next one; after the last event it writes ``DONE``,
then closes the sockets. The latencies (receipt minus the send time carried in the message, in
microseconds, warm-up events left out) go to ``--out`` as JSON.

Kept out of the API's process so that parsing a thousand frames per event is not charged to the
server's event loop, just as browsers do not share the API's CPU. Still, on a shared 2-core
machine the clients' own CPU time delays every receipt, so they do as little as a browser's
socket would before the page sees a message: each frame is timestamped and counted in the
connection's protocol callback as soon as it is parsed (and inflated, if the server negotiated
compression), with no reader task per socket to wake and no message queue; the round and send
time are read with a regular expression rather than a JSON parser; every frame is still read
whole. The event loop is uvloop's, as the servers'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

OPEN_TIMEOUT = 30.0
# Without a new complete event for this long, the run has stalled: give up and report.
STALL_TIMEOUT = 30.0
# A benchmark event's task message (``tests.bench.kinds.progress_message``) in the raw frame.
EVENT = re.compile(rb'"message":\s*"bench i=(\d+) t=(\d+)"')


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class Run:
    sockets: int
    events: int
    warmup: int
    redis: Redis
    ack_key: str
    latencies_us: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    complete: int = 0
    progressed: asyncio.Event = field(default_factory=asyncio.Event)

    # The last receipt of each measured event (keyed by its send time, unique per event): the
    # benchmark sets it against the server's own timestamps to show where the time goes.
    last_ns: dict[int, int] = field(default_factory=dict)

    def record(self, index: int, sent_ns: int, received_ns: int) -> bool:
        """Count one frame; True when it completes its round on every socket."""
        if index >= self.warmup:
            self.latencies_us.append((received_ns - sent_ns) // 1000)
            if received_ns > self.last_ns.get(sent_ns, 0):
                self.last_ns[sent_ns] = received_ns
        count = self.counts.get(index, 0) + 1
        self.counts[index] = count
        if count == self.sockets:
            del self.counts[index]
            self.complete += 1
            self.progressed.set()
            return True
        return False


class BenchConnection(ClientConnection):
    """Records benchmark frames as they are parsed; anything else goes the usual way."""

    run: Run | None = None
    acks: set[asyncio.Task[Any]]

    def process_event(self, event: Event) -> None:
        run = self.run
        if run is not None and isinstance(event, Frame) and event.opcode is Opcode.TEXT:
            received_ns = time.time_ns()
            found = EVENT.search(event.data)
            if found is not None:
                if run.record(int(found.group(1)), int(found.group(2)), received_ns):
                    ack = asyncio.ensure_future(run.redis.rpush(run.ack_key, b"1"))
                    self.acks.add(ack)
                    ack.add_done_callback(self.acks.discard)
                return
        super().process_event(event)


async def open_socket(url: str, cookie: str) -> BenchConnection:
    ws = await connect(
        url,
        additional_headers={"Cookie": cookie},
        create_connection=BenchConnection,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=2,
        # Keep-alive pings are noise here; the run is short. Compression stays as browsers have
        # it: permessage-deflate is offered, and the server decides (``atelier serve`` declines).
        ping_interval=None,
        max_queue=None,
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT))
    if first.get("type") != "snapshot":
        raise RuntimeError(f"expected a snapshot first, got {first!r}")
    assert isinstance(ws, BenchConnection)
    return ws


async def open_all(url: str, cookie: str, count: int, concurrency: int) -> list[BenchConnection]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> BenchConnection:
        async with gate:
            return await open_socket(url, cookie)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def main(args: argparse.Namespace) -> int:
    limit = raise_open_file_limit()
    cookie = os.environ["BENCH_COOKIE"]
    started = time.perf_counter()
    sockets = await open_all(args.url, cookie, args.sockets, args.concurrency)
    open_seconds = time.perf_counter() - started
    redis = Redis.from_url(args.redis_url)
    run = Run(args.sockets, args.events, args.warmup, redis, args.ack_key)
    acks: set[asyncio.Task[Any]] = set()
    for ws in sockets:
        ws.acks = acks
        ws.run = run
    sys.stdout.write(f"READY sockets={len(sockets)} open_s={open_seconds:.2f} nofile={limit}\n")
    sys.stdout.flush()

    started, cpu_started = time.perf_counter(), time.process_time()
    stalled = False
    while run.complete < run.events:
        run.progressed.clear()
        try:
            await asyncio.wait_for(run.progressed.wait(), STALL_TIMEOUT)
        except TimeoutError:
            stalled = True
            break
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    sys.stdout.write(f"DONE events={run.complete}\n")
    sys.stdout.flush()
    await asyncio.gather(*acks, return_exceptions=True)

    gate = asyncio.Semaphore(args.concurrency)

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
                "events_seconds": elapsed,
                "cpu_seconds": cpu_seconds,
                "latencies_us": run.latencies_us,
            }
        )
    )
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--sockets", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--ack-key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args(sys.argv[1:]))))
