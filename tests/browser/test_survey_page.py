"""The email survey's page in a real browser: the link opens it, a score button records the rating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.app import GATEWAY
from gateway.survey import SurveyLinks
from tests.browser.test_widget_browser import browser, chromium, page, screenshot_on_failure
from tests.conftest import Gateway
from tests.test_api import open_ticket

__all__ = ["browser", "chromium", "page"]


async def test_the_survey_page_records_a_click(page: Any, gateway: Gateway, tmp_path: Path) -> None:
    _, ticket = await open_ticket(gateway)
    status, _ = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    assert status == 200
    _, resolved = await gateway.api("GET", f"/tickets/{ticket['id']}")
    expires = datetime.fromisoformat(resolved["survey"]["expires_at"])
    assert expires > datetime.now(UTC) + timedelta(days=6)
    token = await SurveyLinks(gateway.server.app[GATEWAY].store, None).token(ticket["id"], expires)
    async with screenshot_on_failure(page, tmp_path):
        await page.goto(f"{gateway.url}/survey/{token}")
        assert ticket["number"] in await page.locator("h1").inner_text()
        await page.fill("textarea[name=comment]", "很满意，谢谢")
        await page.click('button[data-score="5"]')
        await page.wait_for_selector("text=感谢")
    _, rated = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert rated["csat"]["score"] == 5 and rated["csat"]["comment"] == "很满意，谢谢"
    assert rated["status"] == "resolved"
