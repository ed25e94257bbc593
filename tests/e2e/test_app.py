"""The bundled web app in a real headless Chromium against the real stack: sign-up, presigned
uploads with progress, thumbnails and sketch progress pushed over /ws, download, sign-out, API
errors shown in the page, and one user's images invisible to another."""

from __future__ import annotations

import io
import uuid

from PIL import Image as PILImage
from playwright.async_api import Browser, FilePayload, Page, expect

from tests.conftest import PASSWORD

TIMEOUT_MS = 30_000

# Records every value the sketch progress bar takes, whenever it is (re)created or changed.
WATCH_PROGRESS = """() => {
  window.__progress = [];
  const record = () => {
    const bar = document.querySelector('#sketch-progress');
    if (bar && window.__progress.at(-1) !== bar.value) window.__progress.push(bar.value);
  };
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ['value'],
  });
}"""


def jpeg(seed: int) -> bytes:
    """A 640×480 picture with some structure, so a sketch has edges to draw."""
    image = PILImage.linear_gradient("L").resize((640, 480)).convert("RGB")
    for i in range(0, 640, 80):
        image.paste((30 + i // 4 + seed * 20, 120, 200 - i // 4), (i, 100 + seed * 10, i + 40, 380))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def photo(name: str, seed: int) -> FilePayload:
    return {"name": name, "mimeType": "image/jpeg", "buffer": jpeg(seed)}


async def sign_up(page: Page, base: str, tag: str) -> str:
    email = f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
    await page.goto(f"{base}/#/signup")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("heading", name="Your images")).to_be_visible()
    return email


async def wait_for_thumbnails(page: Page, count: int) -> None:
    cards = page.locator("#gallery img.thumb")
    await expect(cards).to_have_count(count, timeout=TIMEOUT_MS)
    await page.wait_for_function(
        "n => [...document.querySelectorAll('#gallery img.thumb')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === n",
        arg=count,
        timeout=TIMEOUT_MS,
    )


async def test_upload_sketch_download_and_sign_out(browser: Browser, live_url: str) -> None:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await sign_up(page, live_url, "artist")

    # Two files at once through the picker; the presigned POST goes to the same origin.
    await page.set_input_files("#file-input", [photo("harbour.jpg", 1), photo("garden.jpg", 2)])
    await expect(page.locator(".upload.done")).to_have_count(2)
    # Thumbnails arrive without a reload: the thumbnails task's update comes over /ws.
    await wait_for_thumbnails(page, 2)
    await expect(page.locator('#gallery [data-status="ready"]')).to_have_count(2)
    await expect(page.locator("#gallery .meta")).to_have_count(2)
    # The gallery's screenshot is made by tests/e2e/test_gallery.py, from real photographs.

    # Open one image, pick a style and method, and watch the sketch progress live.
    await page.locator("#gallery a.cover").first.click()
    await expect(page.get_by_role("heading", name="Make a sketch")).to_be_visible()
    await page.get_by_role("radio", name="Pencil").check()
    await page.get_by_label("Method").select_option("advanced")
    await page.evaluate(WATCH_PROGRESS)
    await page.get_by_role("button", name="Make sketch").click()
    await expect(page.locator('.progress-row[data-status="succeeded"]')).to_be_visible(
        timeout=TIMEOUT_MS
    )
    seen: list[float] = await page.evaluate("window.__progress")
    assert seen == sorted(seen), seen
    assert seen[-1] == 100, seen
    assert len(set(seen)) >= 3, seen  # it moved through intermediate values, not just 0 → 100
    download = page.locator("#download")
    await expect(download).to_be_visible()
    await expect(page.locator(".compare img.after")).to_be_visible()
    await page.wait_for_function(
        "() => document.querySelector('.compare img.after').naturalWidth > 0"
    )

    # The download link serves a decodable picture with the page's cookies.
    href = await download.get_attribute("href")
    assert href
    answer = await page.request.get(f"{live_url}{href}")
    assert answer.ok, await answer.text()
    drawn = PILImage.open(io.BytesIO(await answer.body()))
    drawn.load()
    assert drawn.size == (640, 480)

    # Signing out ends the session: the gallery is replaced by the sign-in form.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto(f"{live_url}/#/gallery")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#gallery")).to_have_count(0)
    assert (await page.request.get(f"{live_url}/api/images")).status == 401
    await context.close()


async def test_invalid_file_shows_the_api_error(browser: Browser, live_url: str) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await sign_up(page, live_url, "careless")
    fake: FilePayload = {
        "name": "notes.jpg",
        "mimeType": "image/jpeg",
        "buffer": b"these are my shopping notes, not a photo\n" * 20,
    }
    async with page.expect_response(lambda r: r.url.endswith("/api/upload/confirm")) as info:
        await page.set_input_files("#file-input", [fake])
    confirm = await info.value
    assert confirm.status == 422
    detail = (await confirm.json())["detail"]
    assert detail
    alert = page.locator(".upload.failed [role=alert]")
    await expect(alert).to_contain_text(detail)
    await expect(alert).to_contain_text("notes.jpg")
    # The failed record is listed with its badge; it has no thumbnail.
    await page.reload()
    await expect(page.locator('#gallery [data-status="failed"]')).to_have_count(1)
    await context.close()


async def test_another_user_sees_none_of_the_images(browser: Browser, live_url: str) -> None:
    first = await browser.new_context()
    second = await browser.new_context()
    alice, bob = await first.new_page(), await second.new_page()
    for page in (alice, bob):
        page.set_default_timeout(TIMEOUT_MS)
    await sign_up(alice, live_url, "alice")
    await alice.set_input_files("#file-input", [photo("private.jpg", 3)])
    await wait_for_thumbnails(alice, 1)
    image_id = await alice.locator("#gallery li").first.get_attribute("data-id")

    await sign_up(bob, live_url, "bob")
    await expect(bob.locator(".empty")).to_be_visible()
    await expect(bob.locator("#gallery li")).to_have_count(0)
    await bob.goto(f"{live_url}/#/image/{image_id}")
    await expect(bob.get_by_role("alert")).to_be_visible()
    assert (await bob.request.get(f"{live_url}/api/images/{image_id}")).status == 404
    await first.close()
    await second.close()
