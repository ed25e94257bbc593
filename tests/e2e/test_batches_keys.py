"""The batches and API keys screens in real Chromium against the real stack (issue 16 points 6,
10 and the batch parts of 1 and 2): a batch's real outcome in words and colour, each URL's error
in plain words and each output's thumbnail, the quality kept after an import, a CSV problem said
once, paging past 50 batches, delete with a confirmation dialog; a key's Copy button, its last
use, delete with confirm or cancel; axe-core on both screens at desktop and phone sizes.

Product images come from a local origin on loopback serving real photographs (tests/data), which
the app may fetch because ``fetch_allow_loopback_hosts`` names 127.0.0.1 (a test-only setting).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, FilePayload, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from backend.tasks.worker import running_worker
from tests.conftest import PASSWORD, AppFactory
from tests.e2e.axe import VIEWPORTS, assert_accessible
from tests.live import serve
from tests.photos import DATA
from tests.servers import free_port

TIMEOUT_MS = 30_000
PHOTOS = {name: (DATA / f"{name}.jpg").read_bytes() for name in ("astronaut", "chelsea", "coffee")}
# Never fetched: the SSRF guard refuses private addresses before any connection.
PRIVATE_URL = "http://10.0.0.1/product.jpg"


@dataclass
class Shop:
    base: str
    images: str  # the product images' origin


@pytest.fixture
async def shop(make_live_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Shop]:
    async def photo(request: Request) -> Response:
        data = PHOTOS.get(request.path_params["name"])
        if data is None:
            return Response(b"no such photo", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/jpeg")

    async def trickle(_: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            data = PHOTOS["coffee"]
            for start in range(0, len(data), 16):
                yield data[start : start + 16]
                await asyncio.sleep(0.2)

        return StreamingResponse(body(), media_type="image/jpeg")

    origin = Starlette(
        routes=[Route("/photos/{name}.jpg", photo), Route("/slow/coffee.jpg", trickle)]
    )
    async with serve(origin) as images:  # type: ignore[arg-type]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        app = make_live_app(
            env="dev",
            public_base_url=base,
            allowed_origins=[base],
            fetch_allow_loopback_hosts=["127.0.0.1"],
            # The trickling photo times out quickly on each try (a cancel waits for it).
            fetch_total_timeout_seconds=1.5,
        )
        monkeypatch.setattr("tests.live.free_port", lambda: port)
        async with running_worker(app.state.resources), serve(app) as served:
            assert served == base
            yield Shop(base, images)


def product_csv(rows: list[tuple[str, list[str]]]) -> FilePayload:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for n, (name, urls) in enumerate(rows, 1):
        writer.writerow([str(n), name, ", ".join(urls)])
    return {"name": "products.csv", "mimeType": "text/csv", "buffer": out.getvalue().encode()}


async def open_app(browser: Browser, base: str, viewport: str = "desktop", **options: Any) -> Page:
    context = await browser.new_context(viewport=VIEWPORTS[viewport], **options)  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    email = f"shop-{uuid.uuid4().hex[:10]}@example.com"
    await page.goto(f"{base}/#/signup")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("heading", name="Your images")).to_be_visible()
    return page


async def csrf(context: BrowserContext) -> dict[str, str]:
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    return {"X-CSRF-Token": cookies["csrf_token"]}


async def start_import(page: Page, rows: list[tuple[str, list[str]]]) -> str:
    await page.get_by_label("CSV file").set_input_files([product_csv(rows)])
    async with page.expect_response(lambda r: r.url.endswith("/api/batches")) as info:
        await page.get_by_role("button", name="Start import").click()
    answer = await info.value
    assert answer.status == 202, await answer.text()
    batch_id: str = (await answer.json())["batch"]["id"]
    return batch_id


async def test_failed_and_partial_batches_show_their_outcome_and_each_url(
    browser: Browser, shop: Shop, screenshots: Path | None
) -> None:
    page = await open_app(browser, shop.base)
    await page.get_by_role("link", name="Batches").click()
    quality = page.get_by_label("Output quality (1–95)")
    await expect(quality).to_have_value("50")
    await quality.fill("40")

    missing = f"{shop.images}/photos/gone.jpg"
    failed_id = await start_import(page, [("Lamp", [missing, PRIVATE_URL])])
    failed = page.locator(f'li.batch[data-id="{failed_id}"]')
    # Live over the WebSocket, no reload: the batch ends failed, in red words, never "Succeeded".
    await expect(failed).to_have_attribute("data-status", "failed", timeout=TIMEOUT_MS)
    await expect(failed.locator(".badge")).to_have_text("Failed")
    await expect(failed.locator(".batch-status")).to_have_text("Failed: no image of 2 imported")
    await expect(failed).to_contain_text("quality 40")
    await expect(quality).to_have_value("40")  # kept for the next import

    await failed.get_by_role("button", name="Show each image").click()
    items = failed.locator(".batch-detail li.item")
    await expect(items).to_have_count(2, timeout=TIMEOUT_MS)
    await expect(items.nth(0)).to_contain_text(missing)
    await expect(items.nth(0)).to_contain_text("The site answered 404 (not found).")
    await expect(items.nth(1)).to_contain_text(PRIVATE_URL)
    await expect(items.nth(1)).to_contain_text("private or internal network")
    assert (
        await failed.get_by_role("button", name="Hide each image").get_attribute("aria-expanded")
        == "true"
    )

    good = [f"{shop.images}/photos/{name}.jpg" for name in ("astronaut", "chelsea")]
    partial_id = await start_import(page, [("Mug", good), ("Chair", [missing])])
    partial = page.locator(f'li.batch[data-id="{partial_id}"]')
    await expect(partial).to_have_attribute("data-status", "partial", timeout=TIMEOUT_MS)
    await expect(partial.locator(".badge")).to_have_text("Partly done")
    await expect(partial.locator(".batch-status")).to_have_text("Partly done: 2 of 3 images")
    # Newest first.
    assert await page.locator("li.batch").first.get_attribute("data-id") == partial_id
    await partial.get_by_role("button", name="Show each image").click()
    await expect(partial.locator("li.item.succeeded")).to_have_count(2, timeout=TIMEOUT_MS)
    await expect(partial.locator("li.item.failed")).to_contain_text("404")
    thumbs = partial.locator("img.item-thumb")
    await expect(thumbs).to_have_count(2)
    # The outputs are delivery URLs that load without cookies: real pixels arrive.
    await page.wait_for_function(
        "id => [...document.querySelectorAll(`li.batch[data-id='${id}'] img.item-thumb`)]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 2",
        arg=partial_id,
        timeout=TIMEOUT_MS,
    )
    # Small previews (fitted in 200 px), each a link to the full output JPEG.
    widths = await thumbs.evaluate_all(
        "imgs => imgs.map(i => Math.max(i.naturalWidth, i.naturalHeight))"
    )
    assert all(0 < side <= 200 for side in widths), widths
    href = await partial.locator("a.thumb-link").first.get_attribute("href") or ""
    anonymous = await page.context.browser.new_context()  # type: ignore[union-attr]
    output = await anonymous.request.get(href)
    assert output.status == 200
    assert output.headers["content-type"] == "image/jpeg"
    await anonymous.close()

    if screenshots:
        await page.screenshot(path=str(screenshots / "screenshot-batches.png"), full_page=True)
    for name, viewport in VIEWPORTS.items():
        await page.set_viewport_size(viewport)  # type: ignore[arg-type]
        await assert_accessible(page, f"batches with details open ({name})")

    # Delete: the dialog names the batch; "Keep it" keeps it, "Delete batch" deletes it.
    await failed.get_by_role("button", name="Delete products.csv").first.click()
    dialog = page.get_by_role("dialog", name="Delete this batch?")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("products.csv")
    await expect(dialog).to_contain_text("It imported no images.")
    for name, viewport in VIEWPORTS.items():
        await page.set_viewport_size(viewport)  # type: ignore[arg-type]
        await assert_accessible(page, f"batches with the delete dialog open ({name})")
    await dialog.get_by_role("button", name="Keep it").click()
    await expect(dialog).to_be_hidden()
    await expect(failed).to_be_visible()
    await failed.get_by_role("button", name="Delete products.csv").click()
    await dialog.get_by_role("button", name="Delete batch").click()
    await expect(failed).to_have_count(0)
    await expect(page.locator("li.batch")).to_have_count(1)
    gone = await page.request.get(f"{shop.base}/api/batches/{failed_id}")
    assert gone.status == 404
    # Deleting the partial batch keeps the two images it imported.
    await partial.get_by_role("button", name="Delete products.csv").click()
    await expect(dialog).to_contain_text("The 2 images it imported stay in your gallery.")
    await dialog.get_by_role("button", name="Delete batch").click()
    await expect(page.get_by_text("No imports yet.")).to_be_visible()
    images = await (await page.request.get(f"{shop.base}/api/images")).json()
    assert len(images["items"]) == 2
    await page.context.close()


async def test_a_running_batch_is_canceled_then_deleted(browser: Browser, shop: Shop) -> None:
    page = await open_app(browser, shop.base, "phone")
    await page.get_by_role("link", name="Batches").click()
    batch_id = await start_import(page, [("Coffee", [f"{shop.images}/slow/coffee.jpg"])])
    row = page.locator(f'li.batch[data-id="{batch_id}"]')
    await expect(row).to_have_attribute("data-status", "running", timeout=TIMEOUT_MS)
    await expect(row.locator(".batch-status")).to_have_text("Importing: 0 of 1 tried")
    await expect(row.get_by_role("button", name="Delete products.csv")).to_have_count(0)
    await row.get_by_role("button", name="Cancel products.csv").click()
    # It stops once the photo in flight gives up; the row follows over the WebSocket.
    await expect(row.get_by_role("button", name="Canceling products.csv")).to_be_disabled()
    await expect(row).to_have_attribute("data-status", "canceled", timeout=TIMEOUT_MS)
    await expect(row.locator(".badge")).to_have_text("Canceled")
    await expect(row.get_by_role("button", name="Cancel products.csv")).to_have_count(0)
    await row.get_by_role("button", name="Delete products.csv").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete batch").click()
    await expect(row).to_have_count(0)
    await page.context.close()


async def test_csv_problems_are_said_once(browser: Browser, shop: Shop) -> None:
    page = await open_app(browser, shop.base, "phone")
    await page.get_by_role("link", name="Batches").click()
    wrong: FilePayload = {
        "name": "products.csv",
        "mimeType": "text/csv",
        "buffer": b"No,Name,Image Urls\n1,Shoe,https://example.com/a.jpg\n",
    }
    await page.get_by_label("CSV file").set_input_files([wrong])
    async with page.expect_response(lambda r: r.url.endswith("/api/batches")) as info:
        await page.get_by_role("button", name="Start import").click()
    problem = await (await info.value).json()
    assert problem["code"] == "batch.csv_header"
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text(problem["detail"])
    text = await alert.inner_text()
    # The API's detail already names the missing columns: they appear once, not twice.
    assert text.count("missing") == 1, text
    assert text.count("unexpected 'No', 'Name', 'Image Urls'") == 1, text

    # Rows with problems: the summary, then each line once.
    bad_rows: FilePayload = {
        "name": "products.csv",
        "mimeType": "text/csv",
        "buffer": b"S. No.,Product Name,Input Image Urls\n1,Shoe,not-a-url\n2,Hat,\n",
    }
    await page.get_by_label("CSV file").set_input_files([bad_rows])
    async with page.expect_response(lambda r: r.url.endswith("/api/batches")) as info:
        await page.get_by_role("button", name="Start import").click()
    problem = await (await info.value).json()
    assert problem["code"] == "batch.csv_rows"
    await expect(alert).to_contain_text(problem["detail"])
    lines = alert.locator("li")
    await expect(lines).to_have_count(len(problem["errors"]))
    await expect(lines.first).to_have_text(
        f"Line {problem['errors'][0]['line']}: {problem['errors'][0]['message']}"
    )
    await assert_accessible(page, "batches with a CSV problem (phone)")
    await page.context.close()


async def test_load_more_reaches_every_batch(browser: Browser, shop: Shop) -> None:
    page = await open_app(browser, shop.base)
    headers = await csrf(page.context)
    made: list[str] = []
    for n in range(55):
        answer = await page.request.post(
            f"{shop.base}/api/batches",
            headers=headers,
            multipart={"file": product_csv([(f"Item {n}", [PRIVATE_URL])])},
        )
        assert answer.status == 202, await answer.text()
        made.append((await answer.json())["batch"]["id"])
    # Every one ends (failed: a private address is never fetched) before the screen opens.
    deadline = time.monotonic() + 90
    while True:
        page_1 = await (await page.request.get(f"{shop.base}/api/batches?limit=100")).json()
        if all(b["status"] == "failed" for b in page_1["items"]):
            break
        assert time.monotonic() < deadline, [b["status"] for b in page_1["items"]]
        await asyncio.sleep(0.25)

    await page.get_by_role("link", name="Batches").click()
    rows = page.locator("li.batch")
    await expect(rows).to_have_count(50, timeout=TIMEOUT_MS)
    more = page.get_by_role("button", name="Load more")
    await expect(more).to_be_visible()
    await more.click()
    await expect(rows).to_have_count(55, timeout=TIMEOUT_MS)
    await expect(more).to_be_hidden()
    shown = await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert shown == list(reversed(made))  # newest first, none twice, none missing
    await expect(page.get_by_text("Showing 55 batches.")).to_be_visible()
    await page.context.close()


async def test_api_keys_copy_last_use_and_delete(
    browser: Browser, shop: Shop, screenshots: Path | None
) -> None:
    page = await open_app(browser, shop.base, permissions=["clipboard-read", "clipboard-write"])
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Key name").fill("shop server")
    await page.get_by_role("button", name="Create key").click()
    key = (await page.locator("code.key").text_content() or "").strip()
    assert key

    await page.get_by_role("button", name="Copy key shop server").click()
    await expect(page.locator(".new-key").get_by_role("status")).to_have_text("Copied")
    await expect(page.locator("#live")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == key
    if screenshots:
        await page.screenshot(path=str(screenshots / "screenshot-keys.png"), full_page=True)

    row = page.get_by_role("row", name="shop server")
    await expect(row.locator('[data-label="Last used"]')).to_have_text("never")
    created = row.locator('[data-label="Created"] time')
    await expect(created).to_have_text("just now")
    assert await created.get_attribute("title")
    assert await created.get_attribute("datetime")

    # Used by a server client: the list says so after a reload of the screen.
    used = await page.request.get(
        f"{shop.base}/api/images", headers={"X-API-Key": key, "Cookie": ""}
    )
    assert used.status == 200
    await page.reload()
    last_used = row.locator('[data-label="Last used"] time')
    await expect(last_used).to_have_text("just now")
    assert await last_used.get_attribute("title")

    for name, viewport in VIEWPORTS.items():
        await page.set_viewport_size(viewport)  # type: ignore[arg-type]
        await assert_accessible(page, f"API keys ({name})")

    # Delete asks first, naming the key; "Keep it" keeps it and gives focus back.
    delete = page.get_by_role("button", name="Delete key shop server")
    await delete.click()
    dialog = page.get_by_role("dialog", name="Delete this API key?")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("shop server")
    for name, viewport in VIEWPORTS.items():
        await page.set_viewport_size(viewport)  # type: ignore[arg-type]
        await assert_accessible(page, f"API keys with the delete dialog open ({name})")
    await dialog.get_by_role("button", name="Keep it").click()
    await expect(dialog).to_be_hidden()
    await expect(delete).to_be_focused()
    again = await page.request.get(f"{shop.base}/api/images", headers={"X-API-Key": key})
    assert again.status == 200

    await delete.click()
    await dialog.get_by_role("button", name="Delete key").click()
    await expect(page.get_by_text("No keys yet.")).to_be_visible()
    refused = await page.request.get(
        f"{shop.base}/api/images", headers={"X-API-Key": key, "Cookie": ""}
    )
    assert refused.status == 401
    await page.context.close()


async def test_key_copy_without_the_clipboard_api_selects_the_key(
    browser: Browser, shop: Shop
) -> None:
    page = await open_app(browser, shop.base, "phone")
    # As on an insecure origin: no async clipboard API at all.
    await page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined})"
    )
    await page.reload()
    assert await page.evaluate("navigator.clipboard === undefined")
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Key name").fill("backup job")
    await page.get_by_role("button", name="Create key").click()
    key = (await page.locator("code.key").text_content() or "").strip()
    await page.get_by_role("button", name="Copy key backup job").click()
    # The key is selected (Ctrl+C works) and the older copy command has copied it.
    assert await page.evaluate("window.getSelection().toString()") == key
    await expect(page.locator(".new-key").get_by_role("status")).to_have_text("Copied")
    await page.context.close()
