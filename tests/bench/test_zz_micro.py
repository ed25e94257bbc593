# TEMPORARY micro harness (not committed)
from __future__ import annotations
import sys, time, uuid, statistics, os
from http.cookies import SimpleCookie
import httpx
from tests.conftest import AppFactory, unique_email
from tests.bench.test_request_bench import add_images
from backend.core.db import Database

N = int(os.environ.get("MICRO_N", "2000"))

async def test_micro(make_live_app: AppFactory, committed_database: Database) -> None:
    app = make_live_app()
    if os.environ.get("MICRO_NOLOG"):
        import backend.core.middleware as mw
        class _N:
            def info(self, *a, **k): pass
            def exception(self, *a, **k): pass
        mw.log = _N()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.post("/api/auth/register", json={"email": unique_email("m"), "password": "correct horse battery staple"})
            assert r.status_code == 201, r.text
            jar = SimpleCookie()
            for h in r.headers.get_list("set-cookie"): jar.load(h)
            cookie = "; ".join(f"{k}={m.value}" for k, m in jar.items() if m.value)
            me = await c.get("/api/auth/me", headers={"Cookie": cookie})
            await add_images(committed_database, uuid.UUID(me.json()["id"]), 20)
        async def call(path: str, ck: bool) -> None:
            headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
            if ck: headers.append((b"cookie", cookie.encode()))
            scope = {"type": "http", "asgi": {"version": "3.0"}, "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555), "root_path": "", "state": {}}
            async def receive(): return {"type": "http.request", "body": b"", "more_body": False}
            out = []
            async def send(m): out.append(m)
            await app(scope, receive, send)
            assert out[0]["status"] == 200, out
        if os.environ.get("MICRO_LOOP"):
            real = sys.stdout
            sys.stdout = open(os.devnull, "w")
            end = time.monotonic() + 15
            while time.monotonic() < end:
                await call(os.environ["MICRO_LOOP"], True)
            sys.stdout = real
            return
        paths = [("/api/images", True), ("/api/auth/me", True), ("/healthz", False)]
        for p, ck in paths:
            for _ in range(200): await call(p, ck)
        res = {p: [] for p, _ in paths}
        real = sys.stdout
        sys.stdout = open(os.devnull, "w")
        try:
            for _ in range(3):
                for p, ck in paths:
                    t = time.process_time()
                    for _ in range(N): await call(p, ck)
                    res[p].append((time.process_time() - t) / N * 1e6)
        finally:
            sys.stdout = real
        if os.environ.get("MICRO_PROF"):
            import cProfile, pstats
            pr = cProfile.Profile()
            sys.stdout = open(os.devnull, "w")
            pr.enable()
            for _ in range(N): await call(os.environ["MICRO_PROF"], True)
            pr.disable()
            sys.stdout = real
            pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(45)
        for p, v in res.items():
            print(f"MICRO {p} min={min(v):.0f} med={statistics.median(v):.0f} us", file=sys.stderr)

import pytest, uvloop
@pytest.fixture(scope="session")
def event_loop_policy():
    return uvloop.EventLoopPolicy()
