"""The FAQ admin API (``/api/v1/faqs``): list, create, update and delete entries, and reload the KB file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.faq import FaqEntry, KbError, KnowledgeBase, parse_entry
from bot.live import LiveIndex
from core.config import BusinessHours, business_hours_text
from core.jsonweb import json_response
from core.scopes import Scope
from gateway.access import Guarded, error, needs
from gateway.api import PREFIX
from gateway.audit import Auditor


def answer_values(hours: BusinessHours | None) -> dict[str, str]:
    """Values for answer placeholders, so a KB answer can say ``{business_hours}`` and stay true to the config."""
    return {"business_hours": business_hours_text(hours)}


def entry_view(entry: FaqEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "questions": list(entry.questions),
        "answer": entry.answer,
        "keywords": list(entry.keywords),
        "tags": list(entry.tags),
    }


class _Conflict(Exception):
    pass


class _Missing(Exception):
    pass


class FaqAdmin:
    """Every change is audited with the entry before and after: an answer rewritten to a phishing link must
    say who did it."""

    def __init__(self, live: LiveIndex, auditor: Auditor) -> None:
        self._live = live
        self._audit = auditor

    def routes(self) -> list[Guarded]:
        return [
            needs(Scope.KB_ADMIN, web.get(f"{PREFIX}/faqs", self.list_faqs)),
            needs(Scope.KB_ADMIN, web.post(f"{PREFIX}/faqs", self.create_faq)),
            needs(Scope.KB_ADMIN, web.post(f"{PREFIX}/faqs/reload", self.reload)),
            needs(Scope.KB_ADMIN, web.put(f"{PREFIX}/faqs/{{faq}}", self.update_faq)),
            needs(Scope.KB_ADMIN, web.delete(f"{PREFIX}/faqs/{{faq}}", self.delete_faq)),
        ]

    async def list_faqs(self, request: web.Request) -> web.StreamResponse:
        kb = self._live.kb
        return json_response({"faqs": [entry_view(e) for e in kb.entries], "count": len(kb.entries)})

    async def create_faq(self, request: web.Request) -> web.StreamResponse:
        entry = await self._entry(request, None)
        if isinstance(entry, web.Response):
            return entry

        def add(kb: KnowledgeBase) -> KnowledgeBase:
            if any(e.id == entry.id for e in kb.entries):
                raise _Conflict(f"an entry with id {entry.id!r} already exists")
            return dataclasses.replace(kb, entries=(*kb.entries, entry))

        response = await self._apply(add, entry_view(entry), status=201)
        if response.status == 201:
            await self._audit.record(request, action="faq.create", target=f"faq:{entry.id}", after=entry_view(entry))
        return response

    async def update_faq(self, request: web.Request) -> web.StreamResponse:
        faq_id = request.match_info["faq"]
        entry = await self._entry(request, faq_id)
        if isinstance(entry, web.Response):
            return entry

        old: list[FaqEntry] = []

        def replace(kb: KnowledgeBase) -> KnowledgeBase:
            old[:] = [e for e in kb.entries if e.id == faq_id]
            if not old:
                raise _Missing(f"no FAQ entry {faq_id!r}")
            return dataclasses.replace(kb, entries=tuple(entry if e.id == faq_id else e for e in kb.entries))

        response = await self._apply(replace, entry_view(entry), status=200)
        if response.status == 200 and old:
            await self._audit.record_change(
                request,
                action="faq.update",
                target=f"faq:{faq_id}",
                was=entry_view(old[0]),
                now=entry_view(entry),
                unchanged_too=True,
            )
        return response

    async def delete_faq(self, request: web.Request) -> web.StreamResponse:
        faq_id = request.match_info["faq"]

        old: list[FaqEntry] = []

        def remove(kb: KnowledgeBase) -> KnowledgeBase:
            old[:] = [e for e in kb.entries if e.id == faq_id]
            kept = tuple(e for e in kb.entries if e.id != faq_id)
            if len(kept) == len(kb.entries):
                raise _Missing(f"no FAQ entry {faq_id!r}")
            if not kept:
                raise _Conflict("the knowledge base must keep at least one entry")
            return dataclasses.replace(kb, entries=kept)

        response = await self._apply(remove, None, status=204)
        if response.status == 204 and old:
            await self._audit.record(request, action="faq.delete", target=f"faq:{faq_id}", before=entry_view(old[0]))
        return response

    async def reload(self, request: web.Request) -> web.StreamResponse:
        before = len(self._live.kb.entries)
        try:
            kb = await self._live.reload()
        except KbError as exc:
            return error(422, "invalid_kb", f"{exc}; the previous knowledge base stays in use")
        await self._audit.record(
            request, action="faq.reload", target="kb", before={"count": before}, after={"count": len(kb.entries)}
        )
        return json_response({"reloaded": True, "count": len(kb.entries)})

    async def _entry(self, request: web.Request, faq_id: str | None) -> FaqEntry | web.Response:
        try:
            raw = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError):
            return error(400, "bad_json", "request body is not valid JSON")
        if faq_id is not None and isinstance(raw, dict):
            if raw.get("id", faq_id) != faq_id:
                return error(422, "invalid", f"id: the body's id must match the path ({faq_id!r}), or be left out")
            raw = {**raw, "id": faq_id}
        try:
            return parse_entry(raw, "body")
        except KbError as exc:
            return error(422, "invalid", str(exc))

    async def _apply(
        self, edit: Callable[[KnowledgeBase], KnowledgeBase], body: dict[str, Any] | None, *, status: int
    ) -> web.StreamResponse:
        try:
            await self._live.change(edit)
        except _Conflict as exc:
            return error(409, "conflict", str(exc))
        except _Missing as exc:
            return error(404, "not_found", str(exc))
        except OSError as exc:
            detail = f"could not write the knowledge base file: {exc.strerror} ({exc.filename})"
            return error(500, "kb_write_failed", detail)
        if body is None:
            return web.Response(status=status)
        return json_response(body, status=status)
