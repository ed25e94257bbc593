"""The shell in Chromium when the session or the network goes away: a sign-out in another tab
or a revoked session leads to the sign-in view with a message and back to the same place after
signing in; an expired access token is refreshed silently; the header says when the app is
offline or reconnecting, and the live socket resumes from its cursor as soon as the network is
back. axe checks the sign-in and sign-up views at both viewports."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, WebSocket, expect

from backend.tasks.worker import running_worker
from tests.conftest import PASSWORD, AppFactory
from tests.e2e.axe import VIEWPORTS, assert_accessible
from tests.live import serve
from tests.servers import free_port

TIMEOUT_MS = 30_000
ENDED = "Your session has ended; please sign in again."


async def new_page(context: BrowserContext) -> Page:
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


async def sign_up(page: Page, base: str) -> str:
    email = f"shell-{uuid.uuid4().hex[:10]}@example.com"
    await page.goto(f"{base}/#/signup")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("heading", name="Your images")).to_be_visible()
    return email


async def sign_in(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def expect_signed_out(page: Page) -> None:
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_text(ENDED)).to_be_visible()
    assert page.url.endswith("#/signin")
    # Neither the menu, the name nor "Sign out" may show while signed out.
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    await expect(page.locator("#who")).to_have_text("")
    await expect(page.get_by_text("X-API-Key")).to_have_count(0)


async def test_sign_out_in_another_tab_leads_to_sign_in_then_back(
    browser: Browser, live_url: str
) -> None:
    first = await browser.new_context()
    page = await new_page(first)
    email = await sign_up(page, live_url)
    await page.goto(f"{live_url}/#/keys")
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()

    # Another tab of the same browser: the same cookies, the same sign-in session.
    second = await browser.new_context(storage_state=await first.storage_state())
    other = await new_page(second)
    await other.goto(f"{live_url}/#/gallery")
    await other.get_by_role("button", name="Sign out").click()
    await expect(other.get_by_role("heading", name="Sign in")).to_be_visible()

    # Nothing is clicked in the first tab: the server ends the signed-out session's socket
    # (1008), the app checks its session (401, and the refresh fails too) and asks to sign in.
    await expect_signed_out(page)

    await sign_in(page, email)
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    assert page.url.endswith("#/keys")
    await page.get_by_role("link", name="Batches").click()
    await expect(page.get_by_role("heading", name="Batches", level=1)).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await first.close()
    await second.close()


async def test_cookies_gone_and_a_refused_socket_lead_to_sign_in(
    browser: Browser, live_url: str
) -> None:
    context = await browser.new_context()
    page = await new_page(context)
    email = await sign_up(page, live_url)
    await page.goto(f"{live_url}/#/keys")
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    # Signed out elsewhere in this browser: the shared cookies are gone. Nothing is clicked: the
    # socket is dropped and refused on reconnect, and that alone must end the session here.
    await context.clear_cookies()
    await context.set_offline(True)
    await context.set_offline(False)
    await expect_signed_out(page)

    await sign_in(page, email)
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    assert page.url.endswith("#/keys")
    await context.close()


async def test_a_deep_link_opened_signed_out_signs_in_first_then_opens(
    browser: Browser, live_url: str
) -> None:
    context = await browser.new_context()
    page = await new_page(context)
    email = await sign_up(page, live_url)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto(f"{live_url}/#/keys")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    await sign_in(page, email)
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    assert page.url.endswith("#/keys")
    await context.close()


@pytest.fixture
async def short_session_url(
    make_live_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The app with the shortest access token the settings allow (30 s)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_live_app(
        env="dev", public_base_url=base, allowed_origins=[base], access_token_ttl_seconds=30
    )
    monkeypatch.setattr("tests.live.free_port", lambda: port)
    async with running_worker(app.state.resources), serve(app) as served:
        yield served


async def test_an_expired_access_token_is_refreshed_silently(
    browser: Browser, short_session_url: str
) -> None:
    context = await browser.new_context()
    page = await new_page(context)
    await sign_up(page, short_session_url)
    refreshes: list[int] = []

    async def record(response: object) -> None:
        if getattr(response, "url", "").endswith("/api/auth/refresh"):
            refreshes.append(response.status)  # type: ignore[attr-defined]

    page.on("response", record)
    # The access cookie lives as long as the token: after 30 s the browser no longer sends it.
    await page.wait_for_timeout(31_000)
    listed_codes: list[int] = []
    page.on(
        "response",
        lambda r: listed_codes.append(r.status) if "/api/auth/api-keys" in r.url else None,
    )
    ok = lambda r: "/api/auth/api-keys" in r.url and r.status == 200  # noqa: E731
    async with page.expect_response(ok) as listed:
        await page.get_by_role("link", name="API keys").click()
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    await listed.value
    # First a 401 (no access cookie any more), then one refresh, then the retry answered.
    assert listed_codes == [401, 200]
    assert refreshes == [200]
    # The new cookies work for unsafe requests too (a fresh CSRF token came with them).
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_text(ENDED)).to_have_count(0)
    await context.close()


async def test_offline_indicator_and_prompt_resume(browser: Browser, live_url: str) -> None:
    context = await browser.new_context()
    page = await new_page(context)
    sockets: list[WebSocket] = []
    first_frames: dict[int, dict[str, object]] = {}

    def opened(ws: WebSocket) -> None:
        index = len(sockets)
        sockets.append(ws)

        def frame(payload: str | bytes) -> None:
            if index not in first_frames:
                first_frames[index] = json.loads(payload)

        ws.on("framereceived", frame)

    page.on("websocket", opened)
    await sign_up(page, live_url)
    await page.evaluate(
        """() => { window.__net = [];
        addEventListener('atelier:connectivity', e => window.__net.push(e.detail.state)); }"""
    )
    net = page.locator("#net")
    await expect(net).to_have_attribute("data-state", "online")
    assert await net.get_attribute("role") == "status"
    # Online is announced but not shown: nothing to see in the normal case.
    await expect(net).not_to_be_in_viewport()

    await context.set_offline(True)
    await expect(net).to_have_attribute("data-state", "offline")
    await expect(net).to_have_text("Offline")
    await expect(net).to_be_visible()

    await context.set_offline(False)
    # Back to online means the socket is open again: no 15 s backoff wait.
    await expect(net).to_have_attribute("data-state", "online", timeout=5_000)
    await expect(net).to_have_text("Back online")
    # Network back, socket not yet open: "reconnecting" in between, then "online".
    assert await page.evaluate("window.__net") in (
        ["offline", "online"],
        ["offline", "reconnecting", "online"],
    )
    assert len(sockets) == 2
    assert "since=" not in sockets[0].url
    assert "since=" in sockets[1].url
    for _ in range(100):  # the snapshot follows the handshake
        if 1 in first_frames:
            break
        await page.wait_for_timeout(50)
    resumed = first_frames.get(1)
    assert resumed is not None
    assert resumed["type"] == "snapshot"
    assert resumed["resumed"] is True
    await context.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
async def test_sign_in_and_sign_up_are_accessible(
    browser: Browser, live_url: str, viewport: str
) -> None:
    context = await browser.new_context(viewport=VIEWPORTS[viewport])  # type: ignore[arg-type]
    page = await new_page(context)
    await page.goto(f"{live_url}/#/signin")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await assert_accessible(page, f"sign-in ({viewport})")
    # With an error shown, and the connectivity indicator visible.
    await sign_in(page, "nobody@example.com")
    await expect(page.get_by_role("alert")).to_be_visible()
    await context.set_offline(True)
    await expect(page.locator("#net")).to_have_text("Offline")
    await assert_accessible(page, f"sign-in, offline ({viewport})")
    await context.set_offline(False)
    await page.get_by_role("link", name="Create an account").click()
    await expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    await assert_accessible(page, f"sign-up ({viewport})")
    await context.close()


async def test_a_failed_fetch_shows_reconnecting_until_the_server_answers(
    browser: Browser, live_url: str
) -> None:
    context = await browser.new_context()
    page = await new_page(context)
    await sign_up(page, live_url)
    net = page.locator("#net")
    await expect(net).to_have_attribute("data-state", "online")

    # The network stays up but the server cannot be reached (a proxy or the server is down).
    async def unreachable(route: Route) -> None:
        await route.abort("connectionrefused")

    await page.route("**/api/**", unreachable)
    await page.route("**/healthz", unreachable)
    await page.get_by_role("link", name="API keys").click()
    # In plain words, not "Failed to fetch".
    await expect(page.get_by_role("alert")).to_have_text(
        "The server could not be reached; please try again in a moment."
    )
    await expect(net).to_have_text("Reconnecting…")
    await expect(net).to_be_visible()
    # Nobody clicks anything: the app probes the server and notices it is back.
    await page.unroute("**/api/**")
    await page.unroute("**/healthz")
    await expect(net).to_have_attribute("data-state", "online")
    await context.close()


async def test_coming_back_to_the_tab_reconnects_without_waiting_for_the_backoff(
    browser: Browser, live_url: str
) -> None:
    context = await browser.new_context()
    page = await new_page(context)
    await sign_up(page, live_url)
    net = page.locator("#net")
    await expect(net).to_have_attribute("data-state", "online")
    # A socket dropped after many failed attempts: the next try is 11 s or more away.
    await page.evaluate(
        """async () => {
        const { realtime } = await import('/web/ui.js');
        realtime.attempt = 10;
        realtime.socket.close();
    }"""
    )
    await expect(net).to_have_attribute("data-state", "reconnecting")
    await expect(net).to_have_text("Reconnecting…")
    await page.evaluate("() => window.dispatchEvent(new Event('focus'))")
    await expect(net).to_have_attribute("data-state", "online", timeout=5_000)
    await context.close()
