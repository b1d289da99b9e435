"""TLS for the email channel: verified client contexts, and IMAP STARTTLS (RFC 3501 §6.2.1) for aioimaplib.

aioimaplib speaks implicit TLS (IMAP4_SSL) but has no STARTTLS. Its ``IMAP4ClientProtocol`` is a plain
``asyncio.Protocol`` that writes through ``self.transport``, so the upgrade is: send STARTTLS on the plain
connection, wait for the tagged OK, hand the socket's transport to ``loop.start_tls`` (which wraps the same
protocol object in TLS) and point the protocol at the new transport. Everything the server said before the
handshake is then forgotten (RFC 3501: the client MUST discard cached capabilities) and CAPABILITY is asked for
again over TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aioimaplib


class ImapTlsError(Exception):
    """TLS was required and could not be established: we never log in without it."""


def _client_context(ca_file: str | None) -> ssl.SSLContext:
    # Server certificate and host name are always verified. The system trust store is loaded unless a CA
    # file is given, in which case only that CA is trusted (a private CA should not also trust the world).
    if ca_file:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


async def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context; built off the event loop because loading CA certificates reads files."""
    return await asyncio.to_thread(_client_context, ca_file)


async def imap_starttls(client: aioimaplib.IMAP4, context: ssl.SSLContext, server_hostname: str) -> None:
    """Upgrade a greeted, not yet logged-in aioimaplib connection to TLS, or raise ImapTlsError.

    Call after ``wait_hello_from_server()`` (aioimaplib has read the greeting and the first CAPABILITY).
    """
    protocol: Any = client.protocol
    if protocol.state != aioimaplib.NONAUTH:
        # PREAUTH: the server logged us in over plaintext; STARTTLS is not allowed any more (RFC 3501).
        raise ImapTlsError(f"IMAP server greeted in state {protocol.state}; STARTTLS is no longer possible")
    if not client.has_capability("STARTTLS"):
        raise ImapTlsError("IMAP server does not offer STARTTLS; refusing to log in without TLS")
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), client.timeout)
    if response.result != "OK":
        raise ImapTlsError(f"IMAP STARTTLS refused: {response.lines[-1:]!r}")
    if protocol.incomplete_line:
        # Bytes after the OK, before the handshake, can only be an injection (CVE-2011-0411 style): drop out.
        raise ImapTlsError("IMAP server sent data after STARTTLS before the TLS handshake")
    loop = asyncio.get_running_loop()
    try:
        # start_tls wraps the same protocol object, and does not call connection_made again: we set the
        # transport ourselves so that aioimaplib's writes go through TLS from now on.
        protocol.transport = await loop.start_tls(
            protocol.transport,
            protocol,
            context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=client.timeout,
        )
    except (ssl.SSLError, ssl.CertificateError, ConnectionError, TimeoutError) as exc:
        raise ImapTlsError(f"IMAP STARTTLS handshake with {server_hostname} failed: {exc}") from exc
    # Forget what we learnt over plaintext and ask again (capability() replaces the whole set).
    protocol.capabilities = set()
    await asyncio.wait_for(protocol.capability(), client.timeout)
