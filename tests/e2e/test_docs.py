"""/docs and /redoc render in Chromium with the network cut off: every asset comes from the app
(vendored registry packages), none from a CDN or a font service."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, Route, expect

TIMEOUT_MS = 30_000


async def offline_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page whose every request off 127.0.0.1 is aborted and recorded."""
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    async def gate(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            outside.append(url)
            await route.abort()

    await context.route("**/*", gate)
    return page, outside


async def test_swagger_ui_renders_the_operations_with_no_external_request(
    browser: Browser, live_url: str
) -> None:
    page, outside = await offline_page(browser)
    await page.goto(f"{live_url}/docs")
    # Swagger UI draws one block per operation, tagged with its method and path.
    operations = page.locator(".opblock")
    await expect(operations.first).to_be_visible()
    assert await operations.count() > 40
    await expect(page.locator(".opblock-summary-path", has_text="/api/auth/login")).to_have_count(1)
    await expect(page.locator(".info .title")).to_contain_text("Atelier")
    assert outside == []


async def test_redoc_renders_with_no_external_request(browser: Browser, live_url: str) -> None:
    page, outside = await offline_page(browser)
    await page.goto(f"{live_url}/redoc")
    # ReDoc lays out the whole schema before it shows anything: slow on a busy machine.
    heading = page.get_by_role("heading", name="Atelier", exact=False).first
    await expect(heading).to_be_visible(timeout=90_000)
    await expect(page.get_by_text("/api/auth/login").first).to_be_attached()
    assert outside == []


@pytest.mark.parametrize(
    "path",
    [
        "/web/vendor/swagger-ui/swagger-ui-bundle.js",
        "/web/vendor/swagger-ui/swagger-ui.css",
        "/web/vendor/swagger-ui/LICENSE",
        "/web/vendor/redoc/redoc.standalone.js",
        "/web/vendor/redoc/LICENSE",
    ],
)
async def test_vendored_assets_are_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.content


async def test_doc_pages_name_only_local_assets(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        html = (await client.get(path)).text
        assert "/web/vendor/" in html
        assert "https://" not in html, path
        assert "http://" not in html, path


async def test_doc_pages_follow_a_path_prefix(app: FastAPI) -> None:
    # Behind an API Gateway stage the app sees root_path; the browser must ask under it.
    transport = httpx.ASGITransport(app=app, root_path="/prod")
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
        swagger = (await c.get("/docs")).text
        redoc = (await c.get("/redoc")).text
    assert "'/prod/openapi.json'" in swagger
    assert "/prod/web/vendor/swagger-ui/swagger-ui-bundle.js" in swagger
    assert 'spec-url="/prod/openapi.json"' in redoc
    assert "/prod/web/vendor/redoc/redoc.standalone.js" in redoc
