"""axe-core in the page under test: zero serious or critical violations is the bar (issue 16).

The script comes from the ``axe-playwright-python`` wheel (axe-core, MPL-2.0), a registry
package pinned in requirements-dev.txt; nothing is downloaded at test time.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from playwright.async_api import Page

VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
_SOURCE = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe on the page as it is now; return the serious and critical violations, summarised."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=_SOURCE)
    result: dict[str, Any] = await page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "targets": [node["target"] for node in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def assert_accessible(page: Page, where: str) -> None:
    violations = await serious_violations(page)
    assert not violations, f"axe on {where}: {violations}"
