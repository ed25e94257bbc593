"""The gallery in a real Chromium against the real stack: 105 images all reachable by scrolling,
search and filters kept in the URL, delete (one, a failed upload's card, and many) behind a real
dialog, a 70-file drop queued through the upload rate limit honouring Retry-After, an upload that
survives a server restart, and axe-core at desktop and phone sizes on every state."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select

from backend.core.db import Database
from backend.images.models import Blob, Image, ImageStatus
from tests.e2e.axe import VIEWPORTS, assert_accessible
from tests.e2e.conftest import RestartableServer
from tests.e2e.test_app import TIMEOUT_MS, sign_up

DATA = Path(__file__).resolve().parents[1] / "data"
# Real photographs (tests/data/README.md), 640 px, so thumbnails and delivery are quick.
PHOTOS = [
    DATA / f"{name}.jpg"
    for name in (
        "aqua",
        "dune",
        "fresh-flower",
        "garden",
        "green-meadow",
        "ladybird",
        "rain-drops",
        "storm",
    )
]
ACTIVE = "document.activeElement.id || document.activeElement.tagName"
NOW = datetime.now(UTC).replace(microsecond=0)


async def new_page(browser: Browser, viewport: str = "desktop") -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=VIEWPORTS[viewport], timezone_id="UTC")  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return context, page


async def csrf(context: BrowserContext) -> dict[str, str]:
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    return {"X-CSRF-Token": cookies["csrf_token"]}


async def upload_direct(page: Page, base: str, name: str, data: bytes) -> dict[str, Any]:
    answer = await page.request.post(
        f"{base}/api/images",
        multipart={"file": {"name": name, "mimeType": "image/jpeg", "buffer": data}},
        headers=await csrf(page.context),
    )
    assert answer.status == 201, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


async def seed_gallery(page: Page, base: str, db: Database) -> dict[str, dict[str, Any]]:
    """105 images: 8 real photographs uploaded through the API (their thumbnails made by the
    worker), then 94 more records sharing those stored files and 3 failed uploads written to
    the database, with names, sources and dates spread out. Returns them by id."""
    uploaded = [await upload_direct(page, base, p.name, p.read_bytes()) for p in PHOTOS]
    for _ in range(120):
        listed = await page.request.get(f"{base}/api/images?status=ready")
        if (await listed.json())["total"] == len(PHOTOS):
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("thumbnails were not made in time")
    me = await (await page.request.get(f"{base}/api/auth/me")).json()
    user_id = uuid.UUID(me["id"])
    seeded: dict[str, dict[str, Any]] = {
        image["id"]: {"name": image["original_name"], "status": "ready", "source": "upload"}
        for image in uploaded
    }
    async with db.sessionmaker() as session:
        blobs = list(await session.scalars(select(Blob).where(Blob.user_id == user_id)))
        assert len(blobs) == len(PHOTOS)
        rows = []
        for n in range(94):
            blob = blobs[n % len(blobs)]
            stem = PHOTOS[n % len(PHOTOS)].stem
            source = "edit" if n % 10 == 3 else "batch" if n % 15 == 7 else "upload"
            at = NOW - timedelta(hours=6 * (n + 1))
            rows.append(
                Image(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    blob_id=blob.id,
                    original_name=f"{stem}-{n:03}.jpg",
                    status=ImageStatus.ready,
                    size_bytes=blob.size_bytes,
                    source=source,
                    created_at=at,
                    processed_at=at,
                )
            )
        for n in range(3):
            at = NOW - timedelta(days=40 + n)
            rows.append(
                Image(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    original_name=f"broken-{n}.jpg",
                    status=ImageStatus.failed,
                    error="The file is larger than the 25 MB allowed.",
                    error_code="upload.too_large",
                    created_at=at,
                    processed_at=at,
                )
            )
        session.add_all(rows)
        await session.commit()
    for row in rows:
        seeded[str(row.id)] = {
            "name": row.original_name,
            "status": row.status.value,
            "source": row.source,
            "created_at": row.created_at,
        }
    assert len(seeded) == 105
    return seeded


async def shown_ids(page: Page) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all(
        "#gallery > li", "cards => cards.map(c => c.dataset.id)"
    )
    return ids


async def scroll_to_the_end(page: Page, expected: int) -> None:
    count = page.locator("#gallery > li")
    for _ in range(40):
        if await count.count() >= expected:
            break
        await page.mouse.wheel(0, 20_000)
        await page.wait_for_timeout(250)
    await expect(count).to_have_count(expected)


async def test_105_images_search_filters_and_delete(
    browser: Browser,
    restartable_server: RestartableServer,
    committed_database: Database,
    screenshots: Path | None,
) -> None:
    server = restartable_server
    await server.start()
    context, page = await new_page(browser)
    await sign_up(page, server.url, "gallery")
    seeded = await seed_gallery(page, server.url, committed_database)
    await page.reload()
    count = page.locator("#gallery-count")
    await expect(count).to_have_text("Showing 40 of 105")
    await expect(page.locator("#gallery img.thumb").first).to_be_visible()
    # The srcset claims the widths its URLs really have: a 640 px photo offers nothing wider,
    # and a card-sized (400 px) variant sits between the 200 and 800 px ones.
    srcset = await page.locator("#gallery img.thumb").first.get_attribute("srcset") or ""
    widths = [int(w) for w in re.findall(r" (\d+)w", srcset)]
    assert widths[:2] == [200, 400], srcset
    assert widths == sorted(set(widths)), srcset
    assert max(widths) <= 640, srcset

    if screenshots:
        # The top of the gallery, thumbnails loaded, reduced to a palette to stay small.
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery img.thumb')].slice(0, 8)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        await save_screenshot(page, screenshots / "screenshot-gallery.png")

    for name in VIEWPORTS:
        await page.set_viewport_size(VIEWPORTS[name])  # type: ignore[arg-type]
        await assert_accessible(page, f"gallery with images ({name})")
    await page.set_viewport_size(VIEWPORTS["desktop"])  # type: ignore[arg-type]

    # Infinite scroll reaches every one of the 105, each once, newest first.
    await scroll_to_the_end(page, 105)
    await expect(count).to_have_text("Showing 105 of 105")
    await expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    ids = await shown_ids(page)
    assert len(set(ids)) == 105
    assert set(ids) == set(seeded)
    assert ids[-3:] == [i for i, s in seeded.items() if s["status"] == "failed"]

    # Search: a case-insensitive part of the name; the URL keeps it across a reload.
    dunes = {i for i, s in seeded.items() if "dune" in s["name"]}
    await page.get_by_role("searchbox", name="Search").fill("DUNE")
    await expect(count).to_have_text(f"Showing {len(dunes)} of {len(dunes)}")
    assert set(await shown_ids(page)) == dunes
    assert "q=DUNE" in page.url
    await page.reload()
    await expect(page.get_by_role("searchbox", name="Search")).to_have_value("DUNE")
    await expect(count).to_have_text(f"Showing {len(dunes)} of {len(dunes)}")
    await page.get_by_role("button", name="Clear").click()
    await expect(count).to_have_text("Showing 40 of 105")
    assert "q=" not in page.url

    # Source filter, and the "Load more" button as the fallback to scrolling.
    edits = {i for i, s in seeded.items() if s["source"] == "edit"}
    await page.get_by_label("Source", exact=True).select_option("edit")
    await expect(count).to_have_text(f"Showing {len(edits)} of {len(edits)}")
    assert set(await shown_ids(page)) == edits
    await page.get_by_label("Source", exact=True).select_option("upload")
    uploads = {i for i, s in seeded.items() if s["source"] == "upload"}
    await expect(count).to_have_text(f"Showing 40 of {len(uploads)}")
    await page.get_by_role("button", name="Load more").click()
    await expect(count).to_have_text(f"Showing 80 of {len(uploads)}")
    await page.get_by_label("Source", exact=True).select_option("")

    # A date range: whole days, both ends included (the page runs in UTC here).
    first = (NOW - timedelta(days=10)).date()
    last = (NOW - timedelta(days=8)).date()
    in_range = {
        i
        for i, s in seeded.items()
        if "created_at" in s and first <= s["created_at"].date() <= last
    }
    await page.get_by_label("From", exact=True).fill(first.isoformat())
    await page.get_by_label("To", exact=True).fill(last.isoformat())
    await expect(count).to_have_text(f"Showing {len(in_range)} of {len(in_range)}")
    assert set(await shown_ids(page)) == in_range
    await page.get_by_role("button", name="Clear").click()

    # Status filter: the failed uploads' cards, one of which is deleted.
    await page.get_by_label("Status", exact=True).select_option("failed")
    await expect(count).to_have_text("Showing 3 of 3")
    delete = page.get_by_role("button", name="Delete broken-0.jpg")
    await delete.click()
    dialog = page.get_by_role("dialog", name="Delete “broken-0.jpg”?")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    for name in VIEWPORTS:
        await page.set_viewport_size(VIEWPORTS[name])  # type: ignore[arg-type]
        await assert_accessible(page, f"gallery with the delete dialog open ({name})")
    await page.set_viewport_size(VIEWPORTS["desktop"])  # type: ignore[arg-type]
    await page.keyboard.press("Escape")  # cancel: nothing happens, focus goes back
    await expect(dialog).to_be_hidden()
    await expect(delete).to_be_focused()
    await expect(count).to_have_text("Showing 3 of 3")
    await delete.click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(count).to_have_text("Showing 2 of 2")
    await expect(page.locator("#gallery").get_by_text("broken-0.jpg")).to_have_count(0)
    gone = next(i for i, s in seeded.items() if s["name"] == "broken-0.jpg")
    assert (await page.request.get(f"{server.url}/api/images/{gone}")).status == 404

    # One ready image, deleted from the full list; the total follows without a reload.
    await page.get_by_label("Status", exact=True).select_option("")
    await expect(count).to_have_text("Showing 40 of 104")
    victim = (await shown_ids(page))[0]
    victim_name = seeded[victim]["name"]
    await page.get_by_role("button", name=f"Delete {victim_name}", exact=True).click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    await expect(count).to_have_text("Showing 40 of 104")
    await page.get_by_role("button", name=f"Delete {victim_name}", exact=True).click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(count).to_have_text("Showing 39 of 103")
    assert (await page.request.get(f"{server.url}/api/images/{victim}")).status == 404

    # Bulk: select two by hand, then every visible card, one confirmation for all.
    await page.get_by_label("Select all visible").check()
    await expect(page.get_by_role("button", name="Delete selected (39)")).to_be_enabled()
    await page.get_by_label("Select all visible").uncheck()
    later = await shown_ids(page)
    for image_id in later[:2]:
        await page.get_by_label(f"Select {seeded[image_id]['name']}", exact=True).check()
    await page.get_by_role("button", name="Delete selected (2)").click()
    await expect(page.get_by_role("dialog", name="Delete 2 images?")).to_be_visible()
    await page.get_by_role("dialog").get_by_role("button", name="Delete 2").click()
    await expect(count).to_have_text("Showing 37 of 101")
    await page.get_by_label("Select all visible").check()
    await page.get_by_role("button", name="Delete selected (37)").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete 37").click()
    # The emptied page is refilled from the rest.
    await expect(count).to_have_text("Showing 40 of 64")
    listed = await (await page.request.get(f"{server.url}/api/images?limit=1")).json()
    assert listed["total"] == 64
    for image_id in [victim, *later[:2]]:
        assert image_id not in await shown_ids(page)
    await context.close()


async def save_screenshot(page: Page, path: Path) -> None:
    raw = await page.screenshot(full_page=False)
    image = PILImage.open(io.BytesIO(raw)).convert("RGB")
    palette = image.quantize(colors=256, method=PILImage.Quantize.MEDIANCUT)
    dithered = image.quantize(palette=palette, dither=PILImage.Dither.FLOYDSTEINBERG)
    dithered.save(path, optimize=True)


async def test_empty_gallery_skip_link_drop_zone_and_refused_files(
    browser: Browser, restartable_server: RestartableServer
) -> None:
    restartable_server.overrides["max_upload_bytes"] = 256 * 1024
    await restartable_server.start()
    context, page = await new_page(browser)
    await sign_up(page, restartable_server.url, "empty")
    await expect(page.get_by_text("No images yet")).to_be_visible()
    for name in VIEWPORTS:
        await page.set_viewport_size(VIEWPORTS[name])  # type: ignore[arg-type]
        await assert_accessible(page, f"empty gallery ({name})")

    # From a fresh load, Tab reaches the skip link first; it moves focus into <main> and
    # leaves the route alone.
    await page.reload()
    await expect(page.get_by_text("No images yet")).to_be_visible()
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    await expect(skip).to_be_in_viewport()
    url = page.url
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    assert page.url == url
    # The next stops are the real controls; the hidden file input is never one of them.
    stops = []
    for _ in range(4):
        await page.keyboard.press("Tab")
        stops.append(await page.evaluate(ACTIVE))
    assert stops[0] == "choose-files", stops
    assert "file-input" not in stops
    assert not await page.locator("#file-input").is_visible()
    # The button opens the picker.
    async with page.expect_file_chooser() as chooser:
        await page.get_by_role("button", name="Choose files").click()
    assert (await chooser.value).is_multiple()

    # Refused files: a failed row each, the limit in people's words, Retry and Dismiss, and
    # their failed records in the grid at once.
    await drop_files(
        page, [("huge.jpg", b"\xff" * 300_000), ("notes.jpg", b"shopping list, not a photo\n" * 9)]
    )
    await expect(page.locator(".upload-summary")).to_have_text("0 of 2 uploaded, 2 failed")
    huge = page.locator(".upload.failed", has_text="huge.jpg")
    await expect(huge.get_by_role("alert")).to_contain_text("larger than the 256 KB allowed")
    await expect(huge.get_by_role("button", name="Retry huge.jpg")).to_be_visible()
    await expect(page.get_by_role("button", name="Retry all failed")).to_be_visible()
    await expect(page.locator("#gallery-count")).to_have_text("Showing 2 of 2")
    await expect(page.locator('#gallery [data-status="failed"]')).to_have_count(2)
    await expect(page.locator("#gallery")).to_contain_text("256 KB")
    for name in VIEWPORTS:
        await page.set_viewport_size(VIEWPORTS[name])  # type: ignore[arg-type]
        await assert_accessible(page, f"gallery with failed uploads ({name})")
    await huge.get_by_role("button", name="Dismiss huge.jpg").click()
    await expect(page.locator(".upload-summary")).to_have_text("0 of 1 uploaded, 1 failed")
    await expect(page.get_by_role("button", name="Retry all failed")).to_be_hidden()
    await context.close()


def small_jpeg(n: int) -> bytes:
    """A distinct small picture per file, cut from the real photographs."""
    with PILImage.open(PHOTOS[n % len(PHOTOS)]) as photo:
        left = (n * 7) % 200
        tile = photo.convert("RGB").crop((left, 0, left + 320, 240))
    out = io.BytesIO()
    tile.save(out, "JPEG", quality=80)
    return out.getvalue()


WATCH_PRESIGNS = """() => {
  window.__presigns = [];
  const original = window.fetch;
  window.fetch = async (url, init) => {
    if (!String(url).endsWith('/api/upload/presigned-url')) return original(url, init);
    const call = { name: JSON.parse(init.body).filename, start: performance.now() };
    const response = await original(url, init);
    Object.assign(call, {
      end: performance.now(), status: response.status,
      retry_after: Number(response.headers.get('retry-after') || 0),
    });
    window.__presigns.push(call);
    return response;
  };
}"""

DROP = """async ({files}) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, { type: 'image/jpeg' }));
  }
  const zone = document.querySelector('.dropzone');
  for (const type of ['dragenter', 'dragover', 'drop']) {
    const init = { bubbles: true, cancelable: true, dataTransfer: transfer };
    zone.dispatchEvent(new DragEvent(type, init));
  }
}"""


async def drop_files(page: Page, files: list[tuple[str, bytes]]) -> None:
    payload = [{"name": n, "data": base64.b64encode(d).decode()} for n, d in files]
    await page.evaluate(DROP, {"files": payload})


async def test_a_70_file_drop_waits_out_the_rate_limit(
    browser: Browser, restartable_server: RestartableServer
) -> None:
    server = restartable_server
    # 8 uploads per 3-second window: the drop meets the limit many times.
    server.overrides.update(upload_rate_per_minute=8, upload_rate_window_seconds=3)
    await server.start()
    context, page = await new_page(browser)
    await sign_up(page, server.url, "dropper")

    # Every presign as the page sees it (times from the page's own clock): start, answer.
    await page.evaluate(WATCH_PRESIGNS)
    files = [(f"drop-{n:02}.jpg", small_jpeg(n)) for n in range(70)]
    await drop_files(page, files)
    summary = page.locator(".upload-summary")
    retrying = page.locator('.upload[data-state="retrying"]').first
    await expect(retrying).to_contain_text("Too many uploads at once; retrying in", timeout=20_000)
    for name in VIEWPORTS:
        await page.set_viewport_size(VIEWPORTS[name])  # type: ignore[arg-type]
        await assert_accessible(page, f"gallery with the upload queue ({name})")
    # The queue goes on while another screen is shown, and is there again on coming back.
    await page.get_by_role("link", name="Batches").click()
    await expect(page.get_by_role("heading", name="Batches", exact=True)).to_be_visible()
    await page.get_by_role("link", name="Gallery").click()
    await expect(summary).to_be_visible()
    await expect(summary).to_have_text("70 of 70 uploaded", timeout=180_000)
    await expect(page.locator("#gallery-count")).to_have_text(re.compile(r"Showing \d+ of 70$"))
    # Finished rows clear by themselves; nothing failed.
    await expect(page.locator(".upload")).to_have_count(0)

    calls: list[dict[str, Any]] = await page.evaluate("window.__presigns")
    assert {c["status"] for c in calls} == {201, 429}, "the drop never met the rate limit"
    assert sum(c["status"] == 201 for c in calls) == 70
    for call in calls:
        if call["status"] != 429:
            continue
        # The next try of that file waited for the server's Retry-After.
        later = [
            c["start"] for c in calls if c["name"] == call["name"] and c["start"] > call["end"]
        ]
        assert later, call
        assert 1 <= call["retry_after"] <= 3
        assert min(later) - call["end"] >= call["retry_after"] * 1000 - 50, (call, min(later))
    listed = await (await page.request.get(f"{server.url}/api/images?limit=1")).json()
    assert listed["total"] == 70
    await context.close()


async def test_an_upload_is_retried_across_a_server_restart(
    browser: Browser, restartable_server: RestartableServer
) -> None:
    server = restartable_server
    await server.start()
    context, page = await new_page(browser)
    await sign_up(page, server.url, "restart")

    files = [(f"restart-{n}.jpg", small_jpeg(n + 3)) for n in range(9)]
    await drop_files(page, files)
    summary = page.locator(".upload-summary")
    await expect(summary).not_to_have_text("0 of 9 uploaded")
    await server.stop()
    # The queue sees the lost connection and backs off instead of failing.
    retrying = page.locator('.upload[data-state="retrying"]')
    await expect(retrying.first).to_contain_text("Connection lost", timeout=30_000)
    await expect(page.locator(".upload.failed")).to_have_count(0)
    await server.start()
    await expect(summary).to_have_text("9 of 9 uploaded", timeout=60_000)
    await expect(page.locator(".upload.failed")).to_have_count(0)
    listed = await (await page.request.get(f"{server.url}/api/images")).json()
    assert sorted(i["original_name"] for i in listed["items"]) == sorted(n for n, _ in files)
    await context.close()


async def test_queued_uploads_never_go_into_the_next_account(
    browser: Browser, restartable_server: RestartableServer
) -> None:
    server = restartable_server
    server.overrides.update(upload_rate_per_minute=2, upload_rate_window_seconds=60)
    await server.start()
    context, page = await new_page(browser)
    await sign_up(page, server.url, "first")
    await drop_files(page, [(f"first-{n}.jpg", small_jpeg(n)) for n in range(5)])
    summary = page.locator(".upload-summary")
    await expect(summary).to_have_text("2 of 5 uploaded")
    await expect(page.locator('.upload[data-state="retrying"]').first).to_be_visible()

    # Someone else signs in in the same tab while three files wait out the rate limit.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await sign_up(page, server.url, "second")
    await expect(page.locator(".upload")).to_have_count(0)
    await expect(summary).to_be_hidden()
    # Waking every waiting retry (as coming back online does) sends nothing for the old account.
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    await page.wait_for_timeout(1500)
    listed = await (await page.request.get(f"{server.url}/api/images")).json()
    assert listed["total"] == 0, listed
    await expect(page.locator("#gallery-count")).to_have_text("")
    await context.close()
