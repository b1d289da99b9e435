"""The Chromium fixtures of the widget's browser tests, shared with the dashboard's."""

from __future__ import annotations

from tests.browser.test_widget_browser import browser, chromium, page

__all__ = ["browser", "chromium", "page"]
