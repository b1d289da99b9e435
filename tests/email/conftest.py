"""Real servers for the email tests: a private Dovecot IMAP instance and an aiosmtpd SMTP sink on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.email.connector import EmailConnector
from core.config import Config
from core.model import Direction, Message
from gateway.app import GATEWAY
from tests.conftest import Gateway, make_config, need
from tests.email.certs import Pki, make_pki

PASSWORD = "secret123"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 10, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@dataclass
class Dovecot:
    port: int
    conf: Path
    host: str = "127.0.0.1"
    # With TLS (``run_dovecot(pki=…)``): the implicit-TLS port and the CA that signed the server certificate.
    imaps_port: int | None = None
    pki: Pki | None = None

    @property
    def log(self) -> Path:
        return self.conf.parent / "dovecot.log"

    def user(self) -> str:
        """A fresh mailbox per test: the passdb accepts any user name with the one password."""
        return f"u{uuid.uuid4().hex[:12]}"

    def imap(self, user: str) -> imaplib.IMAP4:
        if self.pki is not None:  # plaintext login is disabled there: STARTTLS first
            client = imaplib.IMAP4(self.host, self.port)
            client.starttls(self.pki.client_context())
        else:
            client = imaplib.IMAP4(self.host, self.port)
        client.login(user, PASSWORD)
        return client

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        client = self.imap(user)
        try:
            typ, data = client.append(folder, None, imaplib.Time2Internaldate(time.time()), raw)
            assert typ == "OK", data
        finally:
            client.logout()

    def command(self, user: str, *commands: tuple[str, ...]) -> None:
        client = self.imap(user)
        try:
            for name, *args in commands:
                typ, data = getattr(client, name)(*args)
                assert typ == "OK", (name, data)
        finally:
            client.logout()

    def uidvalidity(self, user: str, folder: str) -> int:
        client = self.imap(user)
        try:
            typ, data = client.status(folder, "(UIDVALIDITY)")
            assert typ == "OK"
            return int(str(data[0]).split("UIDVALIDITY ")[1].split(")")[0])
        finally:
            client.logout()


def _ssl_conf(pki: Pki | None) -> str:
    if pki is None:
        return "ssl = no\ndisable_plaintext_auth = no\n"
    # STARTTLS on the imap port, implicit TLS on imaps; no LOGIN before TLS (Dovecot treats a client on the
    # server's own address as secure, which is why the TLS instance listens on 127.0.0.2).
    return f"ssl = yes\nssl_cert = <{pki.cert_file}\nssl_key = <{pki.key_file}\ndisable_plaintext_auth = yes\n"


def _dovecot_conf(
    state: Path, port: int, as_root: bool, *, host: str = "127.0.0.1", pki: Pki | None = None, imaps_port: int = 0
) -> str:
    if as_root:
        owner = "uid=vmail gid=vmail"
        users = ""
    else:
        me = pwd.getpwuid(os.getuid()).pw_name
        owner = f"uid={os.getuid()} gid={os.getgid()}"
        users = f"default_internal_user = {me}\ndefault_login_user = {me}\ndefault_internal_group = {me}\n"
    return f"""protocols = imap
listen = {host}
base_dir = {state}/run
log_path = {state}/dovecot.log
info_log_path = {state}/dovecot.log
{_ssl_conf(pki)}auth_mechanisms = plain login
mail_location = maildir:{state}/mail/%u
first_valid_uid = 100
{users}passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = {owner} home={state}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  mailbox Archive {{
    auto = create
  }}
}}
"""


class DovecotUnavailable(Exception):
    pass


@contextlib.contextmanager
def run_dovecot(*, pki: Pki | None = None, host: str = "127.0.0.1") -> Iterator[Dovecot]:
    """A private Dovecot on a free loopback port (config, mail and sockets in a temp dir), stopped on exit.

    With ``pki``: TLS with that server certificate, STARTTLS on the IMAP port and implicit TLS on another.
    """
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    if binary is None:
        raise DovecotUnavailable("dovecot is not installed (apt-get install dovecot-imapd; .ci/run does it)")
    as_root = os.getuid() == 0
    if as_root and subprocess.run(["id", "vmail"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-r", "-U", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "vmail"], check=True)
    state = Path(tempfile.mkdtemp(prefix="hl-dovecot-"))
    state.chmod(0o755)
    (state / "run").mkdir()
    (state / "mail").mkdir()
    if as_root:
        shutil.chown(state / "mail", "vmail", "vmail")
    port = _free_port(host)
    imaps_port = _free_port(host) if pki is not None else 0
    conf = state / "dovecot.conf"
    conf.write_text(_dovecot_conf(state, port, as_root, host=host, pki=pki, imaps_port=imaps_port))
    # Dovecot daemonizes and keeps its inherited descriptors: give it files, not pipes we would wait on.
    with (state / "start.log").open("wb") as out:
        started = subprocess.run([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        if started.returncode != 0 or not _wait_port(port, host=host):
            logs = "".join(p.read_text() for p in (state / "start.log", state / "dovecot.log") if p.exists())
            raise DovecotUnavailable(f"dovecot did not start: {logs[-800:]}")
        yield Dovecot(port=port, conf=conf, host=host, imaps_port=imaps_port or None, pki=pki)
    finally:
        subprocess.run(["doveadm", "-c", str(conf), "stop"], stdin=subprocess.DEVNULL, capture_output=True)
        pid_file = state / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One private Dovecot for the test session; each test uses its own fresh mailbox."""
    try:
        server = run_dovecot()
        instance = server.__enter__()
    except DovecotUnavailable as exc:
        need(False, str(exc))
        raise
    try:
        yield instance
    finally:
        server.__exit__(None, None, None)


TLS_HOST = "127.0.0.2"  # not the client's address: Dovecot would count a same-address client as secure


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    """A throwaway CA and a server certificate for localhost, 127.0.0.1 and 127.0.0.2."""
    folder = Path(tempfile.mkdtemp(prefix="hl-pki-"))
    try:
        yield make_pki(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_tls(pki: Pki) -> Iterator[Dovecot]:
    """A second private Dovecot with TLS: STARTTLS on ``port``, implicit TLS on ``imaps_port``, no plaintext LOGIN."""
    try:
        server = run_dovecot(pki=pki, host=TLS_HOST)
        instance = server.__enter__()
    except (DovecotUnavailable, OSError) as exc:
        need(False, str(exc))
        raise
    try:
        yield instance
    finally:
        server.__exit__(None, None, None)


@dataclass
class SmtpSink:
    """What our gateway sent, as parsed mails; a ``reject`` code makes the sink refuse RCPT like a real server.

    ``greylist`` refuses that many RCPTs with a temporary 451 before accepting, as a greylisting server does.
    """

    port: int
    received: list[EmailMessage] = field(default_factory=list)
    reject: tuple[int, str] | None = None
    greylist: int = 0
    refused: int = 0  # RCPTs answered 451 because of ``greylist``
    lock: threading.Lock = field(default_factory=threading.Lock)
    tls: list[bool] = field(default_factory=list)  # per received mail: did it come over TLS

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if self.reject is not None:
            return f"{self.reject[0]} {self.reject[1]}"
        with self.lock:
            if self.refused < self.greylist:
                self.refused += 1
                return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = message_from_bytes(data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.received.append(msg)
            self.tls.append(session.ssl is not None)
        return "250 Message accepted"

    async def wait_for(self, count: int, timeout_s: float = 15) -> list[EmailMessage]:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:  # noqa: ASYNC110 - the sink runs in aiosmtpd's own thread
                await asyncio.sleep(0.05)
        return list(self.received)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    port = _free_port()
    sink = SmtpSink(port=port)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class LateSmtp:
    """An SMTP sink whose server is not up yet: connections to ``sink.port`` are refused until ``start()``."""

    sink: SmtpSink
    controller: Controller
    up: bool = False

    async def start(self) -> None:
        await asyncio.to_thread(self.controller.start)
        self.up = True


@pytest.fixture
def smtp_late() -> Iterator[LateSmtp]:
    port = _free_port()
    sink = SmtpSink(port=port)
    late = LateSmtp(sink=sink, controller=Controller(sink, hostname="127.0.0.1", port=port))
    try:
        yield late
    finally:
        if late.up:
            late.controller.stop()


@pytest.fixture
def smtp_tls_sink(pki: Pki) -> Iterator[SmtpSink]:
    """An SMTP sink that offers STARTTLS with the test certificate and refuses mail before it."""
    port = _free_port()
    sink = SmtpSink(port=port)
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, tls_context=pki.server_context(), require_starttls=True
    )
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def email_config(
    tmp_path: Path,
    dovecot: Dovecot,
    smtp: SmtpSink,
    user: str,
    *,
    imap_port: int | None = None,
    smtp_options: dict[str, Any] | None = None,
    **inbox: Any,
) -> Config:
    imap = {
        "host": "127.0.0.1",
        "port": imap_port or dovecot.port,
        "tls": "none",
        "user": user,
        "password": PASSWORD,
        "poll_interval_s": 60,
        "backoff_max_s": 0.5,
        "timeout_s": 10,
        **inbox.pop("imap", {}),
    }
    box = {
        "name": "support",
        "channel": "email",
        "address": "support@example.test",
        "from_name": "Huiliu Support",
        "imap": imap,
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "tls": "none", **(smtp_options or {})},
        "ack_min_interval_s": 0,
        **inbox,
    }
    return make_config(tmp_path, inboxes=[box])


def connector_of(gw: Gateway) -> EmailConnector:
    from gateway.app import GATEWAY

    connector = gw.server.app[GATEWAY].connectors["support"]
    assert isinstance(connector, EmailConnector)
    return connector


def mail(
    *,
    sender: str = "customer@example.org",
    subject: str = "订单 12345 退款问题",
    body: str = "你好，我想申请退款。",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    charset: str = "utf-8",
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.org>"
    msg["Date"] = "Mon, 2 Jun 2025 10:00:00 +0800"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body, charset=charset)
    return msg.as_bytes(policy=policy.SMTP)


async def stored_inbound(gw: Gateway, n: int, *, settle_s: float = 0.0) -> dict[str, Message]:
    """The stored inbound mails by Message-ID, once there are ``n`` of them; ``settle_s`` waits a little
    longer, for a test where a duplicate would show up late."""
    store = gw.server.app[GATEWAY].store

    async def now() -> dict[str, Message]:
        events = await store.events_after(0, limit=10_000)
        out: dict[str, Message] = {}
        for conv_id in dict.fromkeys(e.conversation_id for e in events if e.conversation_id):
            out |= {m.external_id: m for m in await store.messages(conv_id) if m.direction is Direction.INBOUND}
        return out

    async with asyncio.timeout(20):
        while len(await now()) < n:  # noqa: ASYNC110 - polling the store is what we test against
            await asyncio.sleep(0.05)
    await asyncio.sleep(settle_s)
    return await now()
