"""A web chat customer links their email address by a one-time code sent there (a real SMTP sink)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started
from tests.email.conftest import Dovecot, SmtpSink, email_config, mail


def _config(tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, user: str) -> Any:
    mailbox = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 0.3, "idle": False})
    web = {"name": "web", "channel": "webchat", "allowed_origins": ["*"]}
    return make_config(tmp_path, inboxes=[mailbox.inboxes[0].model_dump(), web])


async def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events", params={"limit": "1000"})
    return [e for e in body["events"] if e["type"] == kind]


async def test_a_code_sent_to_the_address_links_it_and_merges_its_earlier_contact(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    async with started(_config(tmp_path, dovecot, smtp_sink, user), bot_setup) as gw:
        store = gw.server.app[GATEWAY].store
        # The customer wrote by mail before: that address has a contact and a ticket of its own.
        await asyncio.to_thread(dovecot.append, user, mail(sender="li@example.org", message_id="<m1@example.org>"))
        await smtp_sink.wait_for(1)
        [mail_ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]

        chat = await gw.chat()
        _, sent = await chat.say("绑定邮箱 Li@Example.org")
        assert "li@example.org" in sent["text"]
        code_mail = (await smtp_sink.wait_for(2))[1]
        assert code_mail["To"] == "li@example.org"
        code = re.search(r"\d{6}", str(code_mail.get_body(preferencelist=("plain",)).get_content()))
        assert code is not None
        _, again = await chat.say("绑定邮箱 li@example.org")
        assert "稍后" in again["text"]  # one code a minute
        await asyncio.sleep(0.2)
        assert len(smtp_sink.received) == 2
        wrong = "000000" if code.group(0) != "000000" else "111111"
        _, refused = await chat.say(wrong)
        assert "不正确" in refused["text"]
        _, linked = await chat.say(f"验证码 {code.group(0)}")
        assert "已绑定" in linked["text"]
        _, replayed = await chat.say(code.group(0))
        assert "失效" in replayed["text"]

        visitor = await store.contact_by_identity(
            next(i for i in (await _contact_of_chat(gw)).identities if str(i).startswith("webchat:"))
        )
        assert visitor is not None
        assert "email:li@example.org" in {str(i) for i in visitor.identities}
        # Proving the address joined the contact that had it: its ticket is the customer's now.
        _, tickets = await gw.api("GET", f"/contacts/{visitor.id}/tickets")
        assert mail_ticket["id"] in [t["id"] for t in tickets["tickets"]]
        [merged] = await _events(gw, "contact.merged")
        assert merged["data"]["how"] == "one_time_code" and merged["data"]["by"] == "customer"


async def test_too_many_wrong_codes_burn_it(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    async with started(_config(tmp_path, dovecot, smtp_sink, user), bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("link my email wu@example.org")
        [code_mail] = await smtp_sink.wait_for(1)
        code = re.search(r"\d{6}", str(code_mail.get_body(preferencelist=("plain",)).get_content()))
        assert code is not None
        contact = await _contact_of_chat(gw)
        kept = await gw.server.app[GATEWAY].store.get_secret(f"link-code:{contact.id}", datetime.now(UTC))
        assert kept is not None and "digest" in kept and code.group(0) not in kept  # only a digest is stored
        wrong = "000000" if code.group(0) != "000000" else "111111"
        answers = [(await chat.say(wrong))[1]["text"] for _ in range(5)]
        assert all("不正确" in a for a in answers)
        _, burnt = await chat.say(code.group(0))  # even the right code, after five wrong ones
        assert "次数过多" in burnt["text"]
        contact = await _contact_of_chat(gw)
        assert [str(i) for i in contact.identities if str(i).startswith("email:")] == []
        _, unsupported = await chat.say("绑定手机 13800138000")
        assert "邮箱" in unsupported["text"]


async def _contact_of_chat(gw: Gateway) -> Any:
    store = gw.server.app[GATEWAY].store
    events = await store.events_after(0, limit=1000)
    for event in events:
        if event.conversation_id:
            conversation = await store.get_conversation(event.conversation_id)
            if conversation is not None and conversation.channel == "webchat":
                return await store.get_contact(conversation.contact_id)
    raise AssertionError("no web chat conversation")
