"""The image page in real Chromium on the real stack, with real photographs: readable facts
(dates, sizes, camera), sketch options and thumbnails of earlier sketches, a copyable delivery
link, deleting sketches and the image behind a real <dialog>, the AI edit suggestions and a
short refusal (operator hints for admins only), and axe at desktop and phone sizes."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage
from playwright.async_api import Browser, BrowserContext, Page, expect
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import update

from backend.auth.models import Role, User
from backend.auth.sessions import publish_revocation
from backend.core.db import Database
from backend.tasks.worker import running_worker
from tests.ai.fake_gemini import FakeGemini
from tests.conftest import PASSWORD, AppFactory
from tests.e2e.axe import VIEWPORTS, assert_accessible
from tests.live import serve
from tests.photos import DARK_SCENE, PHOTO, PORTRAIT
from tests.servers import free_port

TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def patient_expect() -> Iterator[None]:
    """Server round trips on a shared 2-core machine can take over expect's 5 s default."""
    expect.set_options(timeout=15_000)
    yield
    expect.set_options(timeout=None)  # back to Playwright's default for other modules


def with_camera(path: Path, make: str, model: str) -> bytes:
    """The photograph re-encoded with a camera make, model and capture time in its EXIF."""
    image = PILImage.open(path)
    exif = PILImage.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:30:00"
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue()


async def signed_in(browser: Browser, base: str, **options: Any) -> tuple[BrowserContext, Page]:
    """A fresh user in a fresh context (registered through the API, so cookies are set)."""
    context = await browser.new_context(**options)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    email = f"viewer-{uuid.uuid4().hex[:10]}@example.com"
    answer = await page.request.post(
        f"{base}/api/auth/register", data={"email": email, "password": PASSWORD}
    )
    assert answer.status == 201, await answer.text()
    return context, page


async def csrf(context: BrowserContext) -> dict[str, str]:
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    return {"X-CSRF-Token": cookies["csrf_token"]}


async def upload(page: Page, base: str, name: str, data: bytes) -> dict[str, Any]:
    """Upload through the API and wait until the thumbnails exist (status ``ready``)."""
    answer = await page.request.post(
        f"{base}/api/images",
        multipart={"file": {"name": name, "mimeType": "image/jpeg", "buffer": data}},
        headers=await csrf(page.context),
    )
    assert answer.status == 201, await answer.text()
    image: dict[str, Any] = await answer.json()
    for _ in range(300):
        image = await (await page.request.get(f"{base}/api/images/{image['id']}")).json()
        if image["status"] != "processing":
            break
        await asyncio.sleep(0.1)
    assert image["status"] == "ready", image
    return image


async def open_image(page: Page, base: str, image_id: str) -> None:
    await page.goto(f"{base}/#/image/{image_id}")
    await expect(page.get_by_role("heading", name="Make a sketch")).to_be_visible()


async def sketch_done(page: Page) -> str:
    """Wait for the running sketch's result; returns its id."""
    await expect(page.locator("#result-heading")).to_be_visible(timeout=TIMEOUT_MS)
    await page.wait_for_function(
        "() => document.querySelector('.compare img.after')?.naturalWidth > 0"
    )
    sketch_id = await page.locator(".result").get_attribute("data-sketch")
    assert sketch_id
    return sketch_id


async def in_viewport(page: Page, selector: str) -> bool:
    return bool(
        await page.evaluate(
            """s => { const r = document.querySelector(s).getBoundingClientRect();
                     return r.top >= 0 && r.top < innerHeight; }""",
            selector,
        )
    )


async def test_details_sketch_options_history_and_deletes(
    browser: Browser, live_url: str, screenshots: Path | None
) -> None:
    context, page = await signed_in(browser, live_url, viewport={"width": 1280, "height": 900})
    image = await upload(
        page, live_url, "astronaut.jpg", with_camera(PORTRAIT, "Canon", "Canon EOS R6")
    )
    await open_image(page, live_url, image["id"])

    # Facts people read: the camera once, megapixels and a byte size, a relative upload time
    # with the exact date on hover.
    facts = page.locator(".image-head .meta")
    await expect(facts.locator("dt:text-is('Camera') + dd")).to_have_text("Canon EOS R6")
    await expect(facts.locator("dt:text-is('Size') + dd")).to_have_text(
        re.compile(r"^512 × 512 · 0\.3 MP · \d+ KB · JPEG$")
    )
    uploaded = facts.locator("dt:text-is('Uploaded') + dd time")
    await expect(uploaded).to_have_text(re.compile(r"^(just now|\d+ minutes? ago)$"))
    assert await uploaded.get_attribute("datetime") == image["created_at"]
    assert re.search(r"\d{4}", await uploaded.get_attribute("title") or "")
    await expect(facts.locator("dt:text-is('Taken') + dd")).to_contain_text("2024")
    assert (await page.locator("#download-original").get_attribute("download")) == "astronaut.jpg"
    await expect(page.locator("#no-sketches")).to_be_visible()

    # Options: a colour style, stronger, as WebP, at the photograph's full size.
    await page.get_by_role("radio", name="Acrylic").check()
    await page.get_by_label("Intensity").fill("0.8")
    await expect(page.locator("#intensity-value")).to_have_text("80%")
    await page.get_by_label("Format", exact=True).select_option("webp")
    await expect(page.get_by_label("Size", exact=True)).to_have_value("512")
    await page.get_by_role("button", name="Make sketch").click()
    first = await sketch_done(page)
    # The result is in view and focused, so a keyboard or screen reader user lands on it.
    assert await in_viewport(page, "#result-heading")
    assert await page.evaluate("document.activeElement.id") == "result-heading"
    made = await (await page.request.get(f"{live_url}/api/sketch/{first}")).json()
    assert made["params"] == {"intensity": 0.8, "max_side": 512, "format": "webp"}
    download = page.locator("#download")
    assert await download.get_attribute("download") == "astronaut-acrylic.webp"
    drawn = await page.request.get(f"{live_url}{await download.get_attribute('href')}")
    assert drawn.headers["content-type"] == "image/webp"
    assert PILImage.open(io.BytesIO(await drawn.body())).size == (512, 512)

    # A second sketch replaces the first in the comparison; both are listed, newest first,
    # as lazy thumbnails from signed delivery URLs.
    await page.get_by_role("radio", name="Pencil").check()
    await page.get_by_label("Format", exact=True).select_option("")  # automatic: PNG for gray
    await page.get_by_role("button", name="Make sketch").click()
    await expect(page.locator("#history li")).to_have_count(2)
    await expect(page.locator(f'.result[data-sketch="{first}"]')).to_have_count(0)
    second = await sketch_done(page)
    assert second != first
    await expect(page.locator(".compare")).to_have_count(1)
    assert await page.locator("#download").get_attribute("download") == "astronaut-pencil.png"
    items = page.locator("#history li")
    assert [await items.nth(i).get_attribute("data-id") for i in range(2)] == [second, first]
    thumbs = page.locator("#history li img")
    await expect(thumbs).to_have_count(2)
    for i in range(2):
        assert await thumbs.nth(i).get_attribute("loading") == "lazy"
        assert "/d/" in (await thumbs.nth(i).get_attribute("src") or "")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#history img')].every(i => i.naturalWidth > 0)"
    )
    await expect(items.nth(0)).to_have_attribute("aria-current", "")
    await expect(items.nth(0)).to_contain_text(re.compile(r"just now|minute"))

    # Clicking the older thumbnail shows it in the comparison.
    await items.nth(1).get_by_role("button", name=re.compile("^Show the acrylic sketch")).click()
    await expect(page.locator(f'.result[data-sketch="{first}"]')).to_have_count(1)
    await expect(items.nth(1)).to_have_attribute("aria-current", "")
    await page.wait_for_function(
        "() => document.querySelector('.compare img.after')?.naturalWidth > 0"
    )
    if screenshots:
        # The sketch card: style cards, the options, and the before/after of a real portrait.
        card = page.locator("section.card", has=page.locator("#result-heading"))
        await card.screenshot(path=str(screenshots / "screenshot-sketch.png"))
        shrink(screenshots / "screenshot-sketch.png")

    for name, size in VIEWPORTS.items():
        await page.set_viewport_size({"width": size["width"], "height": size["height"]})
        await assert_accessible(page, f"image page with a result ({name})")

    # Deleting a sketch asks first in a modal dialog; it leaves the list and the server.
    await items.nth(1).get_by_role("button", name=re.compile("^Delete the acrylic sketch")).click()
    dialog = page.get_by_role("dialog", name="Delete this sketch?")
    await expect(dialog).to_be_visible()
    for name, size in VIEWPORTS.items():
        await page.set_viewport_size({"width": size["width"], "height": size["height"]})
        await assert_accessible(page, f"image page with the dialog open ({name})")
    await dialog.get_by_role("button", name="Delete sketch").click()
    await expect(dialog).to_have_count(0)
    await expect(page.locator("#history li")).to_have_count(1)
    await expect(page.locator(".compare")).to_have_count(0)  # it was the one shown
    assert (await page.request.get(f"{live_url}/api/sketch/{first}")).status == 404
    assert (await page.request.get(f"{live_url}/api/sketch/{second}")).status == 200

    # Deleting the image: Cancel keeps it; confirming goes back to the gallery with a notice.
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.get_by_role("button", name="Delete image").click()
    dialog = page.get_by_role("dialog", name="Delete this image?")
    await expect(dialog).to_contain_text("astronaut.jpg")
    await expect(dialog).to_contain_text("sketch will be deleted too")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    assert (await page.request.get(f"{live_url}/api/images/{image['id']}")).status == 200
    await expect(page.get_by_role("button", name="Delete image")).to_be_focused()
    await page.get_by_role("button", name="Delete image").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete image").click()
    await page.wait_for_url(re.compile(r"#/gallery$"))
    await expect(page.locator(".toast")).to_contain_text("Deleted “astronaut.jpg”")
    assert (await page.request.get(f"{live_url}/api/images/{image['id']}")).status == 404
    assert (await page.request.get(f"{live_url}/api/sketch/{second}")).status == 404
    await context.close()


def shrink(path: Path) -> None:
    """Keep the committed screenshot small: a 256-colour palette is plenty for a UI capture."""
    with PILImage.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=PILImage.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


async def test_copy_link_and_sketch_size(browser: Browser, live_url: str) -> None:
    context, page = await signed_in(browser, live_url)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
    image = await upload(page, live_url, "two-wings.jpg", PHOTO.read_bytes())
    await open_image(page, live_url, image["id"])

    await page.get_by_label("Width", exact=True).select_option("400")
    await page.get_by_label("File type", exact=True).select_option("webp")
    await page.get_by_role("button", name="Copy link").click()
    await expect(page.locator(".link-status")).to_have_text("Link copied.")
    shown = await page.locator("#link-url").input_value()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == shown
    assert "/d/" in copied
    assert "w:400" in copied
    # The link works for anyone: no cookies, no session.
    async with httpx.AsyncClient(timeout=30) as anonymous:
        answer = await anonymous.get(copied)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/webp"
    assert PILImage.open(io.BytesIO(answer.content)).size == (400, 250)

    # Without clipboard access the link is selected instead, ready for Ctrl+C.
    await page.evaluate(
        "() => { navigator.clipboard.writeText = () =>"
        " Promise.reject(new DOMException('denied', 'NotAllowedError')); }"
    )
    await page.get_by_label("Width", exact=True).select_option("200")
    await page.get_by_role("button", name="Copy link").click()
    await expect(page.locator("#link-url")).to_have_value(re.compile(r"/w:200/"))
    await expect(page.locator("#link-url")).to_be_focused()
    selected = await page.evaluate(
        "(() => { const i = document.querySelector('#link-url');"
        " return i.value.slice(i.selectionStart, i.selectionEnd) === i.value; })()"
    )
    assert selected
    await expect(page.locator(".link-status")).to_have_text(
        re.compile(r"^(Link copied\.|The link is selected: press Ctrl\+C.*)$")
    )

    # The sketch size option: sizes below the photograph's, and its full size.
    size = page.locator("#max-side")
    options = await size.locator("option").all_text_contents()
    assert options == ["Up to 1024 px", "Up to 2048 px", "Full size (2560 px)"]
    await expect(size).to_have_value("2048")
    await size.select_option("1024")
    await page.get_by_role("radio", name="Ink").check()
    await page.get_by_role("button", name="Make sketch").click()
    sketch_id = await sketch_done(page)
    sketch = await (await page.request.get(f"{live_url}/api/sketch/{sketch_id}")).json()
    assert (sketch["width"], sketch["height"]) == (1024, 640)
    await context.close()


async def make_admin(database: Database, redis: Redis, email: str) -> None:
    """Promote a signed-in user as ``atelier create-admin`` does: the row, then the news to
    every API instance, whose cache of live sessions still holds the old role."""
    async with database.sessionmaker() as session:
        user_id = await session.scalar(
            update(User).where(User.email == email).values(role=Role.admin).returning(User.id)
        )
        await session.commit()
    assert user_id is not None
    await publish_revocation(redis, users=[user_id])


async def test_edit_suggestions_and_refusal_for_users_and_admins(
    browser: Browser, live_url: str, committed_database: Database, redis: Redis
) -> None:
    context, page = await signed_in(browser, live_url)
    image = await upload(page, live_url, "coffee.jpg", DARK_SCENE.read_bytes())
    await open_image(page, live_url, image["id"])

    # Before trying: who makes captions and edits, and the edits on offer as suggestions.
    await expect(page.locator("#ai-provider")).to_contain_text("Captions and edits by")
    suggestions = page.locator("#edit-help .chip")
    await expect(suggestions.first).to_be_visible()
    offered = await suggestions.all_text_contents()
    assert {"grayscale", "sepia", "pencil sketch"} <= set(offered)
    listed = await page.locator("#edit-suggestions option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert listed == offered
    await expect(page.locator(".operator")).to_have_count(0)

    # A refused edit: one short sentence, suggestions to click, nothing about server settings.
    await page.get_by_label("Edit with a prompt").fill("add a unicorn on the table")
    await page.get_by_role("button", name="Edit", exact=True).click()
    refusal = page.locator(".refusal")
    await expect(refusal.get_by_role("alert")).to_be_visible()
    text = await refusal.get_by_role("alert").text_content() or ""
    assert len(text.split()) <= 20, text
    assert "unicorn" in text
    assert "GEMINI" not in (await refusal.text_content() or "")
    assert "API_KEY" not in (await page.locator("main").text_content() or "")
    await expect(refusal.locator(".chip")).to_have_count(len(offered))
    await expect(page.locator("#edit-help")).to_be_hidden()  # one list, next to the reason
    await refusal.get_by_role("button", name="sepia").click()
    await expect(page.get_by_label("Edit with a prompt")).to_have_value("sepia")
    await expect(page.get_by_label("Edit with a prompt")).to_be_focused()

    # A suggestion works as it is.
    await page.get_by_role("button", name="Edit", exact=True).click()
    await expect(page.get_by_role("link", name="Open the edited image")).to_be_visible(
        timeout=TIMEOUT_MS
    )
    await assert_accessible(page, "image page after an edit")

    # An admin sees the same short refusal, plus what would enable a provider that could.
    me = await (await page.request.get(f"{live_url}/api/auth/me")).json()
    await make_admin(committed_database, redis, me["email"])
    await page.reload()
    await expect(page.get_by_role("heading", name="Make a sketch")).to_be_visible()
    await expect(page.locator("details.operator")).to_contain_text("GEMINI_API_KEY")
    await page.get_by_label("Edit with a prompt").fill("add a unicorn on the table")
    await page.get_by_role("button", name="Edit", exact=True).click()
    hint = page.locator(".refusal .hint.operator")
    await expect(hint).to_contain_text("GEMINI_API_KEY")
    await assert_accessible(page, "image page with an admin's refusal")
    await context.close()


@pytest.fixture
async def gemini_url(
    make_live_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, FakeGemini]]:
    """Like ``live_url``, with Gemini configured and aimed at the local fake."""
    fake = FakeGemini().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_live_app(
        env="dev",
        public_base_url=base,
        allowed_origins=[base],
        gemini_api_key=SecretStr("test-key"),
        gemini_base_url=fake.base_url,
        gemini_max_retries=0,
    )
    monkeypatch.setattr("tests.live.free_port", lambda: port)
    try:
        async with running_worker(app.state.resources), serve(app) as served:
            assert served == base
            yield base, fake
    finally:
        fake.stop()


async def test_a_failed_ai_task_speaks_to_the_user_and_details_go_to_admins(
    browser: Browser,
    gemini_url: tuple[str, FakeGemini],
    committed_database: Database,
    redis: Redis,
) -> None:
    base, fake = gemini_url
    context, page = await signed_in(browser, base)
    image = await upload(page, base, "coffee.jpg", DARK_SCENE.read_bytes())
    await open_image(page, base, image["id"])
    await expect(page.locator("#ai-provider")).to_have_text("Captions and edits by Google Gemini.")
    await expect(page.locator("#edit-help .chip")).to_have_count(0)  # free-form prompts

    # Gemini refuses the server's key: the user reads a plain sentence, no setting names.
    fake.reply_error(401, times=20, message="API key not valid.")
    await page.get_by_role("button", name="Write a caption").click()
    failure = page.get_by_role("alert")
    await expect(failure).to_have_text(
        "The caption could not be made just now; please try again later.", timeout=TIMEOUT_MS
    )
    assert "GEMINI" not in (await page.locator("main").text_content() or "")

    me = await (await page.request.get(f"{base}/api/auth/me")).json()
    await make_admin(committed_database, redis, me["email"])
    await page.reload()
    await expect(page.get_by_role("heading", name="Make a sketch")).to_be_visible()
    await page.get_by_role("button", name="Write a caption").click()
    await expect(page.locator(".hint.operator")).to_contain_text(
        "GEMINI_API_KEY", timeout=TIMEOUT_MS
    )
    await context.close()


async def test_earlier_sketches_page_on_past_the_first_screenful(
    browser: Browser, live_url: str
) -> None:
    context, page = await signed_in(browser, live_url)
    image = await upload(page, live_url, "coffee.jpg", DARK_SCENE.read_bytes())
    other = await upload(page, live_url, "astronaut.jpg", PORTRAIT.read_bytes())
    headers = await csrf(context)
    made = []
    for n in range(26):
        body = {
            "image_id": other["id"] if n == 0 else image["id"],  # one of another image
            "style": "ink",
            "params": {"max_side": 256},
        }
        answer = await page.request.post(
            f"{live_url}/api/sketch/create", data=body, headers=headers
        )
        assert answer.status == 202, await answer.text()
        made.append((await answer.json())["sketch"]["id"])
    await open_image(page, live_url, image["id"])
    items = page.locator("#history li")
    await expect(items).to_have_count(24)
    more = page.get_by_role("button", name="Show older sketches")
    await more.click()
    await expect(items).to_have_count(25)
    await expect(more).to_be_hidden()
    listed = [await items.nth(i).get_attribute("data-id") for i in range(25)]
    assert listed == made[1:][::-1]  # this image's only, newest first, no repeats
    # A sketch of this image made elsewhere (here: the API) joins the top of the list, and
    # shows its thumbnail when it is done.
    answer = await page.request.post(
        f"{live_url}/api/sketch/create",
        data={"image_id": image["id"], "style": "charcoal"},
        headers=headers,
    )
    assert answer.status == 202, await answer.text()
    late = (await answer.json())["sketch"]["id"]
    await expect(items).to_have_count(26)
    await expect(items.first).to_have_attribute("data-id", late)
    await expect(items.first.locator("img")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator('#history li[data-status="ready"] img')).to_have_count(
        26, timeout=TIMEOUT_MS
    )
    await context.close()
