"""A small closed-loop HTTP/1.1 load generator, run as a process of its own.

``python -m tests.bench.http_load --url http://127.0.0.1:P/path --seconds S --connections C
[--header "Name: value"]... --out FILE`` keeps C keep-alive connections busy with GET requests
for S seconds (each sends its next request once the previous answer is read whole) and writes
the count, status codes and latencies to ``--out`` as JSON.

Written on raw asyncio streams rather than an HTTP client library so that the client's cost per
request (a few tens of µs) stays small next to the server's on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit


async def connection(
    host: str, port: int, request: bytes, until: float, latencies: list[float], codes: Counter[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            codes[status] += 1
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> int:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *args.header]
    request = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    started = time.perf_counter()
    until = started + args.seconds
    await asyncio.gather(
        *(connection(host, port, request, until, latencies, codes) for _ in range(args.connections))
    )
    elapsed = time.perf_counter() - started
    Path(args.out).write_text(
        json.dumps(
            {
                "requests": len(latencies),
                "seconds": elapsed,
                "codes": {str(code): n for code, n in codes.items()},
                "latencies_ms": latencies,
            }
        )
    )
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
