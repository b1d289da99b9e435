"""IMAP STARTTLS and implicit TLS, and SMTP STARTTLS, against a real Dovecot with a throwaway CA."""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
from pathlib import Path

import pytest

from core.model import DeliveryStatus, Direction, EventType, Message
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import started
from tests.email.certs import Pki, make_pki
from tests.email.conftest import TLS_HOST, Dovecot, SmtpSink, connector_of, email_config, mail
from tests.email.test_imap_intake import _conversation_ids, _count_inbound, _inbound, _until

CONNECTOR_LOG = "connectors.email.connector"


def _plaintext_capabilities(server: Dovecot) -> tuple[str, ...]:
    client = imaplib.IMAP4(server.host, server.port)
    try:
        return tuple(client.capabilities)
    finally:
        client.shutdown()


def _logins(server: Dovecot, user: str) -> list[str]:
    """Dovecot's log line for every successful login of ``user`` (it ends with ``TLS`` when it was over TLS)."""
    return [line for line in server.log.read_text().splitlines() if f"Login: user=<{user}>" in line]


async def _warned(caplog: pytest.LogCaptureFixture, pattern: str, timeout_s: float = 15) -> str:
    """Wait for the connector to log a (reconnect) warning matching ``pattern``; return it."""
    found: list[str] = []

    async def logged() -> bool:
        found[:] = [
            r.getMessage() for r in caplog.records if r.name == CONNECTOR_LOG and re.search(pattern, r.getMessage())
        ]
        return bool(found)

    await _until(logged, timeout_s)
    return found[0]


async def test_starttls_fetches_mail_idles_and_acknowledges_over_smtp_starttls(
    tmp_path: Path, dovecot_tls: Dovecot, smtp_tls_sink: SmtpSink, pki: Pki, bot_setup: BotSetup
) -> None:
    # The server takes no password before TLS: a successful fetch below can only have come after STARTTLS.
    capabilities = await asyncio.to_thread(_plaintext_capabilities, dovecot_tls)
    assert "STARTTLS" in capabilities and "LOGINDISABLED" in capabilities
    user = dovecot_tls.user()
    await asyncio.to_thread(dovecot_tls.append, user, mail(message_id="<tls1@example.org>"))
    config = email_config(
        tmp_path, dovecot_tls, smtp_tls_sink, user,
        imap={"host": TLS_HOST, "tls": "starttls", "ca_file": str(pki.ca_file), "poll_interval_s": 600},
        smtp_options={"tls": "starttls", "ca_file": str(pki.ca_file)},
    )  # fmt: skip
    async with started(config, bot_setup) as gw:
        [first] = await _count_inbound(gw, 1, timeout_s=10)
        assert first.external_id == "tls1@example.org"
        # IDLE over the upgraded connection: the server's push arrives through TLS too.
        await asyncio.wait_for(connector_of(gw).synced.wait(), 10)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(dovecot_tls.append, user, mail(message_id="<tls2@example.org>"))
        messages = await _count_inbound(gw, 2, timeout_s=10)
        assert sorted(str(m.external_id) for m in messages) == ["tls1@example.org", "tls2@example.org"]
        # The acknowledgements went out through SMTP STARTTLS (the sink refuses mail before it).
        acks = await smtp_tls_sink.wait_for(2)
        assert {a["In-Reply-To"] for a in acks} == {"<tls1@example.org>", "<tls2@example.org>"}
        assert smtp_tls_sink.tls == [True, True]
    logins = await asyncio.to_thread(_logins, dovecot_tls, user)
    assert len(logins) >= 3  # two appends and the connector
    assert all(", TLS, " in line for line in logins), logins


async def test_implicit_tls_fetches_mail(
    tmp_path: Path, dovecot_tls: Dovecot, smtp_sink: SmtpSink, pki: Pki, bot_setup: BotSetup
) -> None:
    assert dovecot_tls.imaps_port is not None
    user = dovecot_tls.user()
    await asyncio.to_thread(dovecot_tls.append, user, mail(message_id="<imaps@example.org>"))
    config = email_config(
        tmp_path, dovecot_tls, smtp_sink, user, imap_port=dovecot_tls.imaps_port,
        imap={"host": TLS_HOST, "tls": "tls", "ca_file": str(pki.ca_file)},
    )  # fmt: skip
    async with started(config, bot_setup) as gw:
        [message] = await _count_inbound(gw, 1, timeout_s=10)
        assert message.external_id == "imaps@example.org"


@pytest.mark.parametrize("tls", ["starttls", "tls"])
@pytest.mark.parametrize("trust", ["other-ca", "system"])
async def test_certificate_from_an_unknown_ca_is_refused(
    tmp_path: Path,
    dovecot_tls: Dovecot,
    smtp_sink: SmtpSink,
    bot_setup: BotSetup,
    caplog: pytest.LogCaptureFixture,
    tls: str,
    trust: str,
) -> None:
    caplog.set_level(logging.WARNING, logger=CONNECTOR_LOG)
    user = dovecot_tls.user()
    await asyncio.to_thread(dovecot_tls.append, user, mail(message_id="<untrusted@example.org>"))
    # The server's certificate is signed by the test CA; the connector trusts another CA, or the system's.
    ca_file = (
        str((await asyncio.to_thread(make_pki, tmp_path / "other", "Rogue")).ca_file) if trust == "other-ca" else None
    )
    port = dovecot_tls.port if tls == "starttls" else dovecot_tls.imaps_port
    config = email_config(
        tmp_path, dovecot_tls, smtp_sink, user, imap_port=port,
        imap={"host": TLS_HOST, "tls": tls, "ca_file": ca_file},
    )  # fmt: skip
    async with started(config, bot_setup) as gw:
        warning = await _warned(caplog, "certificate verify failed")
        assert ("STARTTLS handshake" if tls == "starttls" else "TLS handshake") + " with 127.0.0.2" in warning
        assert warning.startswith("inbox support folder INBOX: ImapTlsError: IMAP ")
        await asyncio.sleep(0.3)
        assert await _inbound(gw) == []
    assert len(await asyncio.to_thread(_logins, dovecot_tls, user)) == 1  # only our own append logged in


async def test_starttls_required_but_not_offered_never_logs_in(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup, caplog: pytest.LogCaptureFixture
) -> None:
    # The session's plain Dovecot has no TLS at all and would happily take the password in the clear.
    caplog.set_level(logging.WARNING, logger=CONNECTOR_LOG)
    assert "STARTTLS" not in await asyncio.to_thread(_plaintext_capabilities, dovecot)
    user = dovecot.user()
    await asyncio.to_thread(dovecot.append, user, mail(message_id="<cleartext@example.org>"))
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"tls": "starttls"})
    async with started(config, bot_setup) as gw:
        warning = await _warned(caplog, "ImapTlsError")
        assert "does not offer STARTTLS; refusing to log in without TLS" in warning
        await asyncio.sleep(0.3)
        assert await _inbound(gw) == []
    assert len(await asyncio.to_thread(_logins, dovecot, user)) == 1  # only our own append logged in


@pytest.mark.parametrize("server", ["no-starttls", "unknown-ca"])
async def test_smtp_starttls_is_required_and_verified(
    tmp_path: Path,
    dovecot: Dovecot,
    smtp_sink: SmtpSink,
    smtp_tls_sink: SmtpSink,
    bot_setup: BotSetup,
    server: str,
) -> None:
    # The acknowledgement is never sent in the clear to a server without STARTTLS, nor to one we cannot verify.
    sink = smtp_sink if server == "no-starttls" else smtp_tls_sink
    user = dovecot.user()
    await asyncio.to_thread(dovecot.append, user, mail(message_id="<smtp-tls@example.org>"))
    config = email_config(tmp_path, dovecot, sink, user, smtp_options={"tls": "starttls"})
    async with started(config, bot_setup, retry_delays_s=(0.1, 0.1)) as gw:
        await _count_inbound(gw, 1, timeout_s=10)
        store = gw.server.app[GATEWAY].store
        outbound: list[Message] = []

        async def delivery_given_up() -> bool:
            outbound[:] = [
                m
                for conv_id in await _conversation_ids(gw)
                for m in await store.messages(conv_id)
                if m.direction is Direction.OUTBOUND and m.delivery is DeliveryStatus.FAILED
            ]
            return bool(outbound)

        # Retried like any temporary failure (the server may be fixed), never in the clear; then given up.
        await _until(delivery_given_up, 15)
        [ack] = outbound
        assert ack.delivery_error == "retries_exhausted"
        expected = "STARTTLS extension not supported" if server == "no-starttls" else "certificate verify failed"
        [failed] = [e for e in await store.events_after(0, limit=1000) if e.type == EventType.MESSAGE_DELIVERY_FAILED]
        assert failed.data["message_id"] == ack.id
        assert expected in failed.data["error"]
        assert sink.received == []
