"""`ATELIER_PORT=8011 make run`: forms, links and the WebSocket follow the port actually served.

Runs `atelier serve --migrate` as `make run` does (dev, embedded, no PUBLIC_BASE_URL) on a free
port, given by the environment or by --port, then does what the web app does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import PASSWORD, unique_email
from tests.deploy.processes import atelier_env, serving
from tests.photos import photo_jpeg
from tests.servers import free_port


def _ws_status(base: str, origin: str, cookies: httpx.Cookies) -> int:
    url = base.replace("http://", "ws://", 1) + "/ws"
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    try:
        with connect(
            url, additional_headers={"Origin": origin, "Cookie": cookie}, open_timeout=10
        ) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize("given_by", ["env", "flag"])
def test_uploads_and_websocket_on_the_served_port(tmp_path: Path, given_by: str) -> None:
    port = free_port()
    env = atelier_env(ATELIER_ENV="dev")
    args = ["serve", "--migrate"]
    if given_by == "env":
        env["ATELIER_PORT"] = str(port)
    else:
        args += ["--port", str(port)]
        env["PORT"] = str(free_port())  # the flag wins over the environment
    data = photo_jpeg(0.5)
    with (
        serving(*args, env=env, cwd=tmp_path, port=port) as served,
        httpx.Client(base_url=served.base, timeout=20) as client,
    ):
        assert served.base == f"http://127.0.0.1:{port}"
        registered = client.post(
            "/api/auth/register", json={"email": unique_email(), "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        csrf = {"X-CSRF-Token": client.cookies["csrf_token"]}

        signed = client.post(
            "/api/upload/presigned-url",
            json={"filename": "p.jpg", "content_type": "image/jpeg", "size_bytes": len(data)},
            headers=csrf,
        )
        assert signed.status_code == 201, signed.text
        form = signed.json()
        assert form["url"] == f"{served.base}/api/storage/upload"
        # The browser posts the form where it says, with no cookies.
        stored = httpx.post(
            form["url"],
            data=form["fields"],
            files={"file": ("p.jpg", data, "image/jpeg")},
            timeout=20,
        )
        assert stored.status_code == 204, stored.text
        confirmed = client.post(
            "/api/upload/confirm", json={"upload_id": form["upload_id"]}, headers=csrf
        )
        assert confirmed.status_code == 201, confirmed.text
        image = confirmed.json()
        deadline = time.monotonic() + 30
        while image["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.2)
            image = client.get(f"/api/images/{image['id']}").json()
        assert image["status"] == "ready", image
        thumb = client.get(image["thumbnails"]["small"], follow_redirects=True)
        assert thumb.status_code == 200
        assert thumb.headers["content-type"] == "image/jpeg"

        cookies = client.cookies
        assert _ws_status(served.base, f"http://127.0.0.1:{port}", cookies) == 101
        assert _ws_status(served.base, f"http://localhost:{port}", cookies) == 101
        # The old fixed default is not this server's origin.
        other = 8000 if port != 8000 else 8001
        assert _ws_status(served.base, f"http://127.0.0.1:{other}", cookies) == 403
