"""The customer's loop by email: acknowledged with the number, status answered in the thread, a new mail joins
the open ticket, survey mail with a signed link to a small page, a low rating reopens."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from core.config import CustomerConfig, SurveyConfig
from gateway.intake import BotSetup
from tests.conftest import Gateway, started
from tests.email.conftest import Dovecot, SmtpSink, email_config, mail
from tests.email.test_imap_intake import _until

PUBLIC = "https://help.example.test"


def _body(msg: Any) -> str:
    return str(msg.get_body(preferencelist=("plain",)).get_content())


async def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events", params={"limit": "1000"})
    return [e for e in body["events"] if e["type"] == kind]


async def test_the_whole_loop_by_email(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(
        tmp_path,
        dovecot,
        smtp_sink,
        user,
        imap={"poll_interval_s": 0.3, "idle": False},
        trusted_authserv_ids=["mx.example.test"],
    )
    config = config.model_copy(update={"customer": CustomerConfig(survey=SurveyConfig(public_url=PUBLIC))})
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<loop1@example.org>"))
        [ack] = await smtp_sink.wait_for(1)
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        number = ticket["number"]
        assert number in _body(ack)

        # In the thread, a status question is answered by mail, and opens nothing.
        ask = mail(message_id="<loop2@example.org>", in_reply_to="<loop1@example.org>", body=f"{number} 进度怎么样？")
        await asyncio.to_thread(dovecot.append, user, ask)
        status_mail = (await smtp_sink.wait_for(2))[1]
        assert number in _body(status_mail) and "等待客服处理" in _body(status_mail)
        assert status_mail["In-Reply-To"] == "<loop2@example.org>"

        # A new mail with no thread reference joins the open ticket, since our MX vouches for its sender (an
        # unauthenticated From: could be anyone, and opens a ticket of its own: test_ticket_trick.py).
        again = mail(
            message_id="<loop3@example.org>",
            subject="还有一个问题",
            body="附件里是发票，请一并处理。",
            headers={"Authentication-Results": "mx.example.test; dmarc=pass header.from=example.org"},
        )
        await asyncio.to_thread(dovecot.append, user, again)
        joined = (await smtp_sink.wait_for(3))[2]
        assert number in _body(joined)
        assert [t["id"] for t in (await gw.api("GET", "/tickets"))[1]["tickets"]] == [ticket["id"]]

        status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
        assert status == 200
        survey = (await smtp_sink.wait_for(4))[3]
        found = re.search(re.escape(PUBLIC) + r"(/survey/\S+)", _body(survey))
        assert found is not None and number in _body(survey)
        link = gw.url + found.group(1)

        # Opening the link changes nothing (scanners open links); the page's button records the score.
        async with gw.http.get(link) as resp:
            page = await resp.text()
            assert resp.status == 200 and 'name="score"' in page and number in page
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["csat"] is None
        async with gw.http.post(link, data={"score": "2", "comment": "等了太久"}) as resp:
            assert resp.status == 200 and "回访" in await resp.text()
        _, after = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert after["csat"]["score"] == 2 and after["csat"]["comment"] == "等了太久"
        assert after["csat"]["channel"] == "email"
        assert after["status"] == "open" and "回访" in after["tags"]
        assert len(await _events(gw, "ticket.callback_requested")) == 1

        # Once only; a forged or mangled link gets a clear page and changes nothing.
        async with gw.http.post(link, data={"score": "5"}) as resp:
            assert resp.status == 409
        forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        async with gw.http.post(forged, data={"score": "5"}) as resp:
            assert resp.status == 404
        async with gw.http.get(gw.url + "/survey/tk_x.1.abc") as resp:
            assert resp.status == 404
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["csat"]["score"] == 2

        async def rated_once() -> bool:
            return len(await _events(gw, "ticket.rated")) == 1

        await _until(rated_once)
