"""The small page behind the email survey's signed link: opening it shows the scores, a click records one.

Opening the link changes nothing (mail scanners open links too); only the page's POST records the rating.
"""

from __future__ import annotations

import html

from aiohttp import web

from core.clock import Clock
from core.model import Channel
from gateway.survey import RateOutcome, SurveyService

_MAX_FORM_BYTES = 4096
_STYLE = (
    "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;max-width:32rem;margin:3rem auto;"
    "padding:0 1rem;color:#222}button{font-size:1.25rem;margin:.25rem;padding:.5rem 1rem;border-radius:.5rem;"
    "border:1px solid #888;background:#fff;cursor:pointer}textarea{width:100%;min-height:4rem;margin:.5rem 0}"
)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    response = web.Response(text=text, content_type="text/html", charset="utf-8", status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


_GONE = ("评价链接无效或已过期。/ This survey link is not valid or has expired.", 404)


class SurveyPage:
    def __init__(self, surveys: SurveyService, clock: Clock) -> None:
        self._surveys = surveys
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/survey/{token}", self.show), web.post("/survey/{token}", self.record)]

    async def show(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        ticket_id = await self._surveys.links.verify(token, self._clock())
        ticket = await self._surveys.pending(ticket_id)
        if ticket is None:
            return _page("评价 / Survey", f"<p>{_GONE[0]}</p>", _GONE[1])
        buttons = "".join(
            f'<button type="submit" name="score" value="{n}" data-score="{n}">{n}</button>' for n in range(1, 6)
        )
        body = (
            f"<h1>工单 {html.escape(ticket.number)} 满意度评价</h1>"
            "<p>请为本次服务打分（5 为非常满意）。/ How did we do? (5 = very satisfied)</p>"
            f'<form method="post"><textarea name="comment" maxlength="500" '
            f'placeholder="可选：留言 / Optional comment"></textarea><div>{buttons}</div></form>'
        )
        return _page("评价 / Survey", body)

    async def record(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        ticket_id = await self._surveys.links.verify(token, self._clock())
        if ticket_id is None:
            return _page("评价 / Survey", f"<p>{_GONE[0]}</p>", _GONE[1])
        if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
            return _page("评价 / Survey", "<p>请求过大。/ Request too large.</p>", 413)
        form = await request.post()
        raw_score = form.get("score")
        if not isinstance(raw_score, str) or raw_score not in {"1", "2", "3", "4", "5"}:
            return _page("评价 / Survey", "<p>请选择 1-5 分。/ Please choose a score from 1 to 5.</p>", 400)
        raw_comment = form.get("comment")
        comment = " ".join(raw_comment.split())[:500] if isinstance(raw_comment, str) else ""
        outcome = await self._surveys.rate(ticket_id, int(raw_score), comment or None, Channel.EMAIL)
        cfg = self._surveys.config
        if outcome is RateOutcome.RECORDED:
            return _page("谢谢 / Thank you", f"<p>{html.escape(cfg.thanks)}</p>")
        if outcome is RateOutcome.CALLBACK:
            return _page("谢谢 / Thank you", f"<p>{html.escape(cfg.callback)}</p>")
        if outcome is RateOutcome.ALREADY:
            return _page("评价 / Survey", "<p>您已评价过，感谢！/ You already rated this ticket.</p>", 409)
        return _page("评价 / Survey", f"<p>{_GONE[0]}</p>", _GONE[1])
