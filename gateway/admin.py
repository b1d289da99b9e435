"""The operator's dashboard at ``/admin/``: static files only; its data comes from the REST API with a token."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from gateway.access import Handler

STATIC_DIR = Path(__file__).with_name("static")
_FILES = {
    "": ("admin.html", "text/html"),
    "admin.js": ("admin.js", "text/javascript"),
    "admin.css": ("admin.css", "text/css"),
    "chart.umd.min.js": ("chart.umd.min.js", "text/javascript"),  # Chart.js, vendored (MIT): works offline
}
# The page loads nothing from elsewhere and talks only to this gateway; Chart.js sets canvas sizes inline.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


class AdminPage:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self._directory = directory
        self._cache: dict[str, bytes] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin", self._to_slash),
            *(web.get(f"/admin/{name}", self._file(name)) for name in _FILES),
        ]

    async def _to_slash(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/admin/")

    def _file(self, name: str) -> Handler:
        filename, content_type = _FILES[name]

        async def serve(request: web.Request) -> web.StreamResponse:
            body = self._cache.get(filename)
            if body is None:
                try:
                    body = await asyncio.to_thread((self._directory / filename).read_bytes)
                except OSError:
                    raise web.HTTPNotFound(text=f"{filename} is missing from this installation") from None
                self._cache[filename] = body
            return web.Response(
                body=body,
                headers={
                    "Content-Type": f"{content_type}; charset=utf-8",
                    "Content-Security-Policy": _CSP,
                    "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-cache",
                },
            )

        return serve
