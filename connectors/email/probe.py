"""``huiliu doctor``'s mailbox checks: log in to IMAP and SMTP as the gateway would, and log out again."""

from __future__ import annotations

import asyncio
import ssl
from contextlib import suppress

import aioimaplib
import aiosmtplib

from connectors.email.imap_tls import client_context, imap_starttls
from core.config import EmailInbox


def _ok(response: object, what: str) -> None:
    if getattr(response, "result", None) != "OK":
        lines = getattr(response, "lines", [])
        raise ConnectionError(f"{what} failed: {lines[-1:] if lines else response!r}")


async def check_imap(cfg: EmailInbox) -> str:
    """What the server said when we logged in and selected the first folder; raises with the reason."""
    imap = cfg.imap
    context = await client_context(imap.ca_file) if imap.tls != "none" else None
    if imap.tls == "tls":
        assert context is not None
        client = aioimaplib.IMAP4_SSL(host=imap.host, port=imap.effective_port, timeout=imap.timeout_s,
                                      ssl_context=context)  # fmt: skip
    else:
        client = aioimaplib.IMAP4(host=imap.host, port=imap.effective_port, timeout=imap.timeout_s)
    try:
        await asyncio.wait_for(client.wait_hello_from_server(), imap.timeout_s)
        if imap.tls == "starttls":
            assert context is not None
            await imap_starttls(client, context, imap.host)
        _ok(await client.login(imap.user, imap.password), "LOGIN")
        _ok(await client.select(imap.folders[0]), f"SELECT {imap.folders[0]}")
        return f"logged in as {imap.user or '(no user)'} at {imap.host}:{imap.effective_port}, {imap.folders[0]} opens"
    finally:
        with suppress(Exception):
            await asyncio.wait_for(client.logout(), 2)
        with suppress(Exception):  # a refused login leaves the connection open: close it ourselves
            transport = getattr(client.protocol, "transport", None)
            if transport is not None:
                transport.close()


async def check_smtp(cfg: EmailInbox) -> str:
    smtp = cfg.smtp
    context: ssl.SSLContext | None = await client_context(smtp.ca_file) if smtp.tls != "none" else None
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.effective_port,
        use_tls=smtp.tls == "tls",
        start_tls=smtp.tls == "starttls",
        timeout=smtp.timeout_s,
        tls_context=context,
    )
    async with client:
        if smtp.user:
            await client.login(smtp.user, smtp.password)
    who = f"as {smtp.user}" if smtp.user else "without login"
    return f"connected {who} to {smtp.host}:{smtp.effective_port} ({smtp.tls})"
