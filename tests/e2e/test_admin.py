"""The admin screen in Chromium against the real stack: find a user, promote them, disable them
after a confirmation (their session ends at once) and enable them again, see a refused
self-demotion, everyone's stats, the AI cache and the task overview; non-admins see no link and
a polite page. axe checks the screen and its dialog at both viewports."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import update

from backend.auth.models import Role, User
from backend.core.db import Database, utcnow
from backend.tasks.models import Task, TaskStatus
from tests.conftest import PASSWORD
from tests.e2e.axe import VIEWPORTS, assert_accessible
from tests.photos import PORTRAIT

TIMEOUT_MS = 30_000


async def new_page(context: BrowserContext) -> Page:
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


async def register(base: str, tag: str) -> tuple[httpx.AsyncClient, str, uuid.UUID]:
    email = f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
    client = httpx.AsyncClient(base_url=base)
    answer = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return client, email, uuid.UUID(answer.json()["id"])


async def promote(db: Database, user_id: uuid.UUID) -> None:
    async with db.sessionmaker() as session:
        await session.execute(update(User).where(User.id == user_id).values(role=Role.admin))
        await session.commit()


async def caption_a_photo(client: httpx.AsyncClient) -> None:
    """A real upload and a real caption task, so the AI cache holds an entry."""
    csrf = {"X-CSRF-Token": client.cookies["csrf_token"]}
    files = {"file": ("astronaut.jpg", PORTRAIT.read_bytes(), "image/jpeg")}
    image = await client.post("/api/images", files=files, headers=csrf)
    assert image.status_code == 201, image.text
    task = await client.post("/api/ai/caption", json={"image_id": image.json()["id"]}, headers=csrf)
    assert task.status_code == 202, task.text
    for _ in range(300):
        status = (await client.get(f"/api/tasks/{task.json()['id']}")).json()["status"]
        if status in ("succeeded", "failed", "canceled"):
            break
        await asyncio.sleep(0.1)
    assert status == "succeeded"


async def signed_in_page(context: BrowserContext, base: str, email: str) -> Page:
    page = await new_page(context)
    await page.goto(f"{base}/#/signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


async def test_admin_manages_users_and_sees_the_overview(
    browser: Browser, live_url: str, committed_database: Database, screenshots: Path | None
) -> None:
    _, admin_email, admin_id = await register(live_url, "root")
    await promote(committed_database, admin_id)
    carol, carol_email, carol_id = await register(live_url, "carol")
    async with committed_database.sessionmaker() as session:
        session.add(
            Task(
                user_id=carol_id,
                kind="caption",
                status=TaskStatus.failed,
                error_code="ai.timeout",
                error="The provider took too long.",
                attempts=3,
                finished_at=utcnow(),
            )
        )
        await session.commit()
    await caption_a_photo(carol)

    context = await browser.new_context(viewport=VIEWPORTS["desktop"])  # type: ignore[arg-type]
    page = await signed_in_page(context, live_url, admin_email)
    await page.get_by_role("link", name="Admin").click()
    await expect(page.get_by_role("heading", name="Administration")).to_be_visible()

    # The overview: everyone's image stats, the AI cache, the tasks with the latest failure.
    stats = page.get_by_role("region", name="Images (all users)")
    await expect(stats.get_by_text("Success rate")).to_be_visible()
    cache = page.get_by_role("region", name="AI cache")
    await expect(cache.get_by_text("Hit rate")).to_be_visible()
    await expect(cache.get_by_text("Entries live for")).to_be_visible()
    # The caption's entry, in words: its kind, provider, a size in bytes/KB and an age.
    entry = cache.locator("tbody tr").first
    await expect(entry).to_contain_text("caption")
    await expect(entry).to_contain_text("local")
    await expect(entry.locator("td").nth(2)).to_have_text(re.compile(r"^\d+(\.\d)? (B|KB)$"))
    await expect(entry.locator("td").nth(3)).to_have_text(re.compile(r"^\d+ (s|min)$"))
    await expect(stats.get_by_text("Images", exact=True)).to_be_visible()
    await expect(stats.locator("dd").first).to_have_text("1")
    tasks = page.get_by_role("region", name="Tasks (all users)")
    await expect(tasks.get_by_role("rowheader", name="caption")).to_be_visible()
    failure = tasks.locator(".failures li").first
    await expect(failure).to_contain_text("ai.timeout")
    await expect(failure).to_contain_text(carol_email)
    await expect(failure).to_contain_text("3 attempts")
    if screenshots:
        await page.screenshot(path=str(screenshots / "screenshot-admin.png"), full_page=True)

    # Find carol and make her an admin: the API agrees at once.
    await page.get_by_label("Search users").fill(carol_email.upper())
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("table.users tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(carol_email)
    await page.get_by_label(f"Role of {carol_email}").select_option("admin")
    await expect(page.locator("#live")).to_have_text(f"{carol_email} is now an admin.")
    assert (await carol.get("/api/auth/me")).json()["role"] == "admin"

    # Disabling asks first; cancelling changes nothing.
    await page.get_by_role("button", name=f"Disable {carol_email}").click()
    dialog = page.get_by_role("dialog", name=f"Disable {carol_email}?")
    await expect(dialog).to_be_visible()
    await assert_accessible(page, "admin, confirm dialog (desktop)")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    assert (await carol.get("/api/auth/me")).status_code == 200

    await page.get_by_role("button", name=f"Disable {carol_email}").click()
    await dialog.get_by_role("button", name="Disable").click()
    await expect(rows.first.get_by_text("Disabled")).to_be_visible()
    refused = await carol.get("/api/auth/me")
    assert refused.status_code in (401, 403), refused.text  # her session ended with it
    await page.get_by_role("button", name=f"Enable {carol_email}").click()
    await expect(rows.first.get_by_text("Active")).to_be_visible()

    # Demoting oneself is refused by the API; the error shows and the control is put back.
    await page.get_by_label("Search users").fill(admin_email)
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    own_role = page.get_by_label(f"Role of {admin_email}")
    await own_role.select_option("user")
    await expect(page.get_by_role("alert")).to_contain_text("cannot demote or disable themselves")
    await expect(own_role).to_have_value("admin")
    await carol.aclose()
    await context.close()


async def test_user_list_pages_with_show_more(
    browser: Browser, live_url: str, committed_database: Database
) -> None:
    _, admin_email, admin_id = await register(live_url, "root")
    await promote(committed_database, admin_id)
    for _ in range(21):  # one page is 20
        client, _, _ = await register(live_url, "many")
        await client.aclose()
    context = await browser.new_context()
    page = await signed_in_page(context, live_url, admin_email)
    await page.goto(f"{live_url}/#/admin")
    rows = page.locator("table.users tbody tr")
    await expect(rows).to_have_count(20)
    await page.get_by_role("button", name="Show more users").click()
    await expect(rows).to_have_count(22)
    await expect(page.get_by_role("button", name="Show more users")).to_be_hidden()
    await context.close()


async def test_non_admins_get_no_link_and_a_polite_page(browser: Browser, live_url: str) -> None:
    client, email, _ = await register(live_url, "plain")
    await client.aclose()
    context = await browser.new_context()
    page = await signed_in_page(context, live_url, email)
    await expect(page.get_by_role("link", name="Gallery")).to_be_visible()
    await expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    await page.goto(f"{live_url}/#/admin")
    await expect(page.get_by_role("heading", name="Administration")).to_be_visible()
    await expect(page.get_by_text("This page is for administrators.")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)
    await assert_accessible(page, "admin, as a non-admin")
    await context.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
async def test_admin_screen_is_accessible(
    browser: Browser, live_url: str, committed_database: Database, viewport: str
) -> None:
    _, email, user_id = await register(live_url, "root")
    await promote(committed_database, user_id)
    context = await browser.new_context(viewport=VIEWPORTS[viewport])  # type: ignore[arg-type]
    page = await signed_in_page(context, live_url, email)
    await page.goto(f"{live_url}/#/admin")
    cache = page.get_by_role("region", name="AI cache")
    await expect(cache.get_by_text("Hit rate")).to_be_visible()
    await expect(page.locator("table.users tbody tr").first).to_be_visible()
    await assert_accessible(page, f"admin ({viewport})")
    await page.get_by_role("button", name=f"Disable {email}").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await assert_accessible(page, f"admin, confirm dialog ({viewport})")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await context.close()
