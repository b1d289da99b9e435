"""Email's I/O: IMAP in (IDLE or polling, UID checkpoints, one poller per mailbox), SMTP out; pure pieces beside."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import random
import secrets
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import formataddr, getaddresses
from pathlib import Path
from typing import Any, ClassVar

import aioimaplib
import aiosmtplib
from aiohttp import web

from connectors.base import ConnectorDeps, InboundSink, IntakeResult, stored_as
from connectors.email.authres import SenderAuth, checked_by_trusted, sender_auth
from connectors.email.auto import AutoKind
from connectors.email.compose import Outgoing, compose
from connectors.email.files import plan_files, write_files
from connectors.email.imap import UIDVALIDITY, Checkpoint, ExistsWatch, ImapError, fetched_bytes, imap_ok
from connectors.email.imap_tls import ImapTlsError, client_context, imap_starttls
from connectors.email.inbound import bounced_flag, bounced_flags
from connectors.email.parse import MailParseError, ParsedMail, normalize_line_endings, parse_mail
from connectors.email.quote import extract_reply, strip_signature
from connectors.email.tagsig import signed_tag
from connectors.email.threading import ThreadMatch, find_thread, participants, stored_message_id
from core.config import EmailInbox
from core.meta import intake_facts
from core.model import (
    Attachment,
    Author,
    Channel,
    Conversation,
    ConversationStatus,
    Delivery,
    DeliveryStatus,
    Direction,
    HandoffReason,
    Identity,
    IdentityKind,
    InboundMessage,
    Message,
    MessageKind,
    OutboundReply,
    QuarantinedItem,
    ReopenRequest,
    SenderCheck,
    Ticket,
    TicketRequest,
    outbound_message,
)
from core.observe import mail_fetched_key

log = logging.getLogger(__name__)
# How long a mailbox's lease lasts without a heartbeat: after a crash another instance takes over within it.
LEASE_TTL_S = 15.0

_FULL_TEXT_LIMIT = 100_000  # characters of the full body kept on the message (the .eml has everything)
_RAW_HEADER_LIMIT = 16_000


POISON_TRIES = 3  # a mail that fails this often in a row is quarantined, so it cannot block its folder


class EmailConnector:
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, cfg: EmailInbox, deps: ConnectorDeps) -> None:
        self.inbox = cfg.name
        self._cfg = cfg
        self._store = deps.store
        self._data_dir = deps.data_dir
        self._sink: InboundSink | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._clients: dict[str, Any] = {}  # folder -> its IMAP client while a session runs (for the heartbeat)
        # Verifying TLS client contexts (system CAs, or the configured ca_file), built once, off the loop.
        self._imap_tls: ssl.SSLContext | None = None
        self._smtp_tls: ssl.SSLContext | None = None
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._failures: dict[tuple[str, int, int], int] = {}  # (folder, UIDVALIDITY, UID) -> failed tries
        # Seams for tests: awaited after a mail is stored and before its checkpoint moves (to kill us there),
        # and set after every completed sync of a folder.
        self.before_checkpoint: Callable[[int], Awaitable[None]] | None = None
        self.synced = asyncio.Event()
        self._secret: bytes | None = None

    # Connector interface -------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return []

    @asynccontextmanager
    async def running(self, sink: InboundSink) -> AsyncIterator[None]:
        self._sink = sink
        try:  # a bad ca_file is reported now; the contexts are built again (and fail loudly) when needed
            if self._cfg.imap.tls != "none":
                await self._imap_context()
            if self._cfg.smtp.tls != "none":
                await self._smtp_context()
        except (OSError, ssl.SSLError) as exc:
            log.error("inbox %s: cannot load the TLS CA file: %s", self.inbox, exc)
        for folder in self._cfg.imap.folders:
            self._loops.append(asyncio.create_task(self._folder_loop(folder), name=f"email:{self.inbox}:{folder}"))
        try:
            yield
        finally:
            await self._stop()

    async def _tag_secret(self) -> bytes:
        """The key of our subject tags' signatures: configured, else made once and kept beside the mail files."""
        if self._secret is None:
            if self._cfg.tag_secret:
                self._secret = self._cfg.tag_secret.encode()
            else:
                self._secret = await asyncio.to_thread(
                    _file_secret, self._data_dir / "email" / f"{self.inbox}.tag-secret"
                )
        return self._secret

    async def _stop(self) -> None:
        loops, self._loops = self._loops, []
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for folder in self._cfg.imap.folders:
            with suppress(Exception):
                await self._store.release(self._lease_key(folder), self._holder)
        self._sink = None

    def is_running(self) -> bool:
        return self._sink is not None and all(not t.done() for t in self._loops)

    # Intake ---------------------------------------------------------------------------------------------
    def _lease_key(self, folder: str) -> str:
        return f"email:{self.inbox}:poll:{folder}"

    def _checkpoint_key(self, folder: str) -> str:
        return f"email:{self.inbox}:folder:{folder}"

    @property
    def _lease_ttl_s(self) -> float:
        """Renewed every third of it by a heartbeat, so it can be short: a new holder takes over within it."""
        return self._cfg.imap.lease_ttl_s if self._cfg.imap.lease_ttl_s is not None else LEASE_TTL_S

    async def _holding(self, folder: str) -> None:
        """The session, with its lease renewed on a heartbeat whatever the session waits for (a long IDLE, a
        poll interval), and its connection watched: a closed one ends the session at once, not at a timeout."""
        session = asyncio.create_task(self._session(folder), name=f"email:{self.inbox}:{folder}:session")
        imap = self._cfg.imap
        try:
            while not session.done():
                await asyncio.wait({session}, timeout=self._lease_ttl_s / 3)
                if session.done():
                    break
                if not await self._store.lease(self._lease_key(folder), self._holder, self._lease_ttl_s):
                    log.info("inbox %s folder %s: lease taken over; stepping back", self.inbox, folder)
                    session.cancel()
                    break
                client = self._clients.get(folder)
                transport = getattr(getattr(client, "protocol", None), "transport", None)
                if transport is not None and transport.is_closing():
                    raise ConnectionError(f"the IMAP server {imap.host}:{imap.effective_port} closed the connection")
        finally:
            while not session.done():
                # Again and again: on Python 3.11 asyncio.wait_for (inside aioimaplib) can swallow a cancel. A
                # repeat may cut the session's logout short; its transport is closed whatever happens.
                session.cancel()
                await asyncio.wait({session}, timeout=1.0)
        if not session.cancelled() and (failed := session.exception()) is not None:
            raise failed  # the session's own error goes to the backoff

    async def _folder_loop(self, folder: str) -> None:
        """Forever: hold the mailbox lease, sync, wait (IDLE or poll); reconnect with capped backoff + jitter."""
        failures = 0
        imap = self._cfg.imap
        while True:
            try:
                if not await self._store.lease(self._lease_key(folder), self._holder, self._lease_ttl_s):
                    await asyncio.sleep(min(imap.poll_interval_s, self._lease_ttl_s / 3))
                    continue
                await self._holding(folder)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network, server or store trouble: back off and come back
                failures += 1
                delay = min(imap.backoff_max_s, 1.0 * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)
                # str(TimeoutError()) is empty: this line was "TimeoutError: ;" during a Dovecot outage.
                detail = str(exc) or f"no answer from {imap.host}:{imap.effective_port} within {imap.timeout_s:g} s"
                log.warning(
                    "inbox %s folder %s: %s: %s; reconnecting in %.1fs",
                    self.inbox, folder, type(exc).__name__, detail, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)

    async def _imap_context(self) -> ssl.SSLContext:
        if self._imap_tls is None:
            self._imap_tls = await client_context(self._cfg.imap.ca_file)
        return self._imap_tls

    async def _smtp_context(self) -> ssl.SSLContext:
        if self._smtp_tls is None:
            self._smtp_tls = await client_context(self._cfg.smtp.ca_file)
        return self._smtp_tls

    async def _client(self) -> Any:
        imap = self._cfg.imap
        if imap.tls == "tls":
            return aioimaplib.IMAP4_SSL(
                host=imap.host, port=imap.effective_port, timeout=imap.timeout_s, ssl_context=await self._imap_context()
            )
        return aioimaplib.IMAP4(host=imap.host, port=imap.effective_port, timeout=imap.timeout_s)

    async def _session(self, folder: str) -> None:
        imap = self._cfg.imap
        client = await self._client()
        self._clients[folder] = client
        try:
            try:
                await client.wait_hello_from_server()
            except ssl.SSLError as exc:  # implicit TLS: the handshake (certificate check) fails here
                raise ImapTlsError(f"IMAP TLS handshake with {imap.host}:{imap.effective_port} failed: {exc}") from exc
            if imap.tls == "starttls":  # upgrade before the password goes out; ImapTlsError if we cannot
                await imap_starttls(client, await self._imap_context(), imap.host)
            imap_ok(await client.login(imap.user, imap.password), "LOGIN")
            selected = imap_ok(await client.select(folder), f"SELECT {folder}")
            uidvalidity = next(
                (int(m.group(1)) for line in selected.lines if isinstance(line, bytes | bytearray)
                 and (m := UIDVALIDITY.search(bytes(line)))),
                0,
            )  # fmt: skip
            use_idle = imap.idle and client.has_capability("IDLE")
            arrivals = ExistsWatch(client)
            while True:
                arrivals.seen = False
                await self._sync(client, folder, uidvalidity)
                if arrivals.seen:
                    continue  # mail came in while we searched: look again before going idle
                self.synced.set()
                # A health fact for /readyz and the stale-mailbox alarm: this mailbox was read just now.
                await self._store.set_checkpoint(mail_fetched_key(self.inbox), datetime.now(UTC).isoformat())
                if not await self._store.lease(self._lease_key(folder), self._holder, self._lease_ttl_s):
                    log.info("inbox %s folder %s: lease taken over; stepping back", self.inbox, folder)
                    return
                if use_idle:
                    await self._idle(client)
                else:
                    await asyncio.sleep(imap.poll_interval_s)
                    imap_ok(await client.noop(), "NOOP")
        finally:
            self._clients.pop(folder, None)
            try:
                with suppress(Exception):
                    await asyncio.wait_for(client.logout(), 2)
            finally:  # closed even when a cancel interrupts the logout
                with suppress(Exception):
                    transport = getattr(client.protocol, "transport", None)
                    if transport is not None:
                        transport.close()

    async def _idle(self, client: Any) -> None:
        """Wait for the server to push new mail (the heartbeat renews the lease meanwhile)."""
        wait_s = self._cfg.imap.idle_timeout_s
        idle = await client.idle_start(timeout=wait_s)
        try:
            while True:
                push = await client.wait_server_push(timeout=wait_s + 5)
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(b"EXISTS" in bytes(line) for line in push if isinstance(line, bytes | bytearray)):
                    break
        finally:
            client.idle_done()
            await asyncio.wait_for(idle, self._cfg.imap.timeout_s)

    async def _sync(self, client: Any, folder: str, uidvalidity: int) -> None:
        """Fetch every mail above the checkpoint; store each one, then move the checkpoint past it."""
        key = self._checkpoint_key(folder)
        checkpoint = Checkpoint.load(await self._store.get_checkpoint(key))
        if checkpoint is None or checkpoint.uidvalidity != uidvalidity:
            if checkpoint is not None:
                log.warning(
                    "inbox %s folder %s: UIDVALIDITY changed %d → %d; resyncing (the store drops repeats)",
                    self.inbox, folder, checkpoint.uidvalidity, uidvalidity,
                )  # fmt: skip
            checkpoint = Checkpoint(uidvalidity=uidvalidity, last_uid=0)
        found = imap_ok(await client.uid_search(f"UID {checkpoint.last_uid + 1}:*", charset=None), "UID SEARCH")
        uids = sorted(
            {
                int(tok)
                for line in found.lines
                if isinstance(line, bytes | bytearray)
                for tok in bytes(line).split()
                if tok.isdigit()
            }
        )
        for uid in (u for u in uids if u > checkpoint.last_uid):
            fetched = imap_ok(await client.uid("fetch", str(uid), "(BODY.PEEK[])"), f"UID FETCH {uid}")
            raw = fetched_bytes(fetched.lines)
            if raw is None:
                raise ImapError(f"UID FETCH {uid} returned no message body")
            try:
                await self.ingest(raw)
            except Exception as exc:
                if not await self._give_up_on(folder, uidvalidity, uid, raw, exc):
                    raise  # the session backs off and comes back to this mail
            if self.before_checkpoint is not None:
                await self.before_checkpoint(uid)
            checkpoint = Checkpoint(uidvalidity=uidvalidity, last_uid=uid)
            await self._store.set_checkpoint(key, checkpoint.dump())
            await self._after_processing(client, uid)

    async def _give_up_on(self, folder: str, uidvalidity: int, uid: int, raw: bytes, exc: Exception) -> bool:
        """True when a mail has failed ``POISON_TRIES`` times in a row: it is quarantined with the error, so
        the mailbox moves on instead of stopping at it for ever. A store outage fails the quarantine too, and
        then the mail is simply tried again later; nothing is lost either way."""
        key = (folder, uidvalidity, uid)
        tries = self._failures[key] = self._failures.get(key, 0) + 1
        if tries < POISON_TRIES:
            return False
        await self._quarantine(raw, f"taking it in failed {tries} times: {type(exc).__name__}: {exc}")
        log.error("inbox %s folder %s: UID %d quarantined after %d failures", self.inbox, folder, uid, tries)
        del self._failures[key]
        return True

    async def _after_processing(self, client: Any, uid: int) -> None:
        imap = self._cfg.imap
        if imap.move_to:
            moved = await client.uid("move", str(uid), imap.move_to)
            if moved.result != "OK":  # no MOVE extension: copy, flag deleted, expunge
                imap_ok(await client.uid("copy", str(uid), imap.move_to), "UID COPY")
                imap_ok(await client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
                await client.expunge()
        elif imap.mark_seen:
            imap_ok(await client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"), "UID STORE")

    async def ingest(
        self, raw: bytes, sink: InboundSink | None = None, *, quarantine: bool = True
    ) -> IntakeResult | None:
        """One raw mail → stored message (via intake) or quarantine. Never raises for bad input.

        None means it could not be parsed (and was quarantined, unless it is a replay of a quarantined item).
        Used by the IMAP loop and by ``huiliu quarantine replay``.
        """
        target = sink or self._sink
        if target is None:
            raise RuntimeError("email connector is not running")
        try:
            mail = await asyncio.to_thread(parse_mail, raw)
        except MailParseError as exc:
            if quarantine:
                await self._quarantine(raw, str(exc))
            return None
        except Exception as exc:  # a parser bug must not block the mailbox: keep the mail and move on
            log.exception("inbox %s: parsing a mail failed", self.inbox)
            if quarantine:
                await self._quarantine(raw, f"parser error: {type(exc).__name__}: {exc}")
            return None
        inbound = await self.to_inbound(mail, raw)
        return await target(inbound)

    async def replay(self, item: QuarantinedItem, sink: InboundSink) -> str | None:
        outcome = await self.ingest(item.raw, sink=sink, quarantine=False)
        return stored_as(outcome) if outcome is not None else None

    async def _quarantine(self, raw: bytes, reason: str) -> None:
        digest = hashlib.sha256(normalize_line_endings(raw)).hexdigest()[:32]
        item = QuarantinedItem(
            id=f"email:{self.inbox}:{digest}",
            channel=Channel.EMAIL,
            inbox=self.inbox,
            reason=reason,
            raw=raw,
            received_at=datetime.now(UTC),
        )
        if await self._store.quarantine(item):
            log.warning("inbox %s: quarantined mail %s: %s", self.inbox, item.id, reason)

    async def to_inbound(self, mail: ParsedMail, raw: bytes) -> InboundMessage:
        """Thread it, file its parts, and say whether it wants a ticket (people) or not (machines)."""
        now = datetime.now(UTC)
        sender = Identity(IdentityKind.EMAIL, mail.sender.email.lower())
        sender_name = mail.sender.name or None
        report = mail.auto
        automatic = report.kind is not AutoKind.NONE and report.kind is not AutoKind.BULK
        match: ThreadMatch | None = None
        reopen: ReopenRequest | None = None
        if report.kind in (AutoKind.BOUNCE, AutoKind.COMPLAINT):
            match = await self._bounce_thread(mail)
            if match is not None and match.conversation is not None:
                sender, sender_name = match.conversation.address, None
        results = _header_values(raw, "authentication-results")
        trusted = self._cfg.trusted_authserv_ids
        auth = sender_auth(results, trusted=trusted, from_domain=mail.sender.email.rpartition("@")[2])
        check = _sender_check(auth, checked=checked_by_trusted(results, trusted=trusted))
        if match is None:
            match = await find_thread(
                self._store,
                inbox=self.inbox,
                domain=self._cfg.domain,
                mail=mail,
                sender=sender,
                auth=auth,
                secret=await self._tag_secret(),
            )
        participant = (
            not automatic
            and match.via in ("chain", "tag")
            and match.conversation is not None
            and match.conversation.address != sender
        )
        if participant and match.conversation is not None:
            # Someone else on the thread (copied in, or forwarded to) answers in it: the mail belongs to that
            # customer's ticket, not to a new one. Its real sender stays in meta; no contacts are merged.
            sender, sender_name = match.conversation.address, None
        if (
            not automatic
            and match.via != "stored"
            and match.conversation is not None
            and match.conversation.status is ConversationStatus.RESOLVED
            and self._cfg.resolved_reply == "reopen"
        ):
            reopen = ReopenRequest(conversation_id=match.conversation.id)
        attachments, files_meta = await self._file_parts(mail, raw)
        full = mail.text
        text = strip_signature(full) if match.via == "new" else strip_signature(extract_reply(full))
        meta: dict[str, Any] = {
            "email": {
                "message_id": mail.message_id,
                "from": str(mail.sender),
                "to": [str(a) for a in mail.to],
                "cc": [str(a) for a in mail.cc],
                "reply_to": [str(a) for a in mail.reply_to],
                "in_reply_to": list(mail.in_reply_to),
                "references": list(mail.references)[-50:],
                "thread_via": match.via,
                "auth": auth.value,
                "sender_check": check.value,
                "participant": participant,
                **files_meta,
            },
            "full_text": full[:_FULL_TEXT_LIMIT],
        }
        if mail.html:
            meta["html"] = mail.html[:_FULL_TEXT_LIMIT]
        if report.kind is not AutoKind.NONE:
            meta["auto"] = {
                "kind": str(report.kind),
                "reason": report.reason,
                "original_message_id": report.original_message_id,
                "recipients": [dataclasses.asdict(r) for r in report.recipients],
            }
        ticket = None
        if not automatic:
            ticket = TicketRequest(
                reason=HandoffReason.EMAIL,
                subject=mail.subject or None,
                bot_first=self._cfg.bot_answer,
                follow_up=auth is SenderAuth.PASS,  # anyone can write From: <a customer>; only a proven one follows up
            )
        return InboundMessage(
            channel=Channel.EMAIL,
            inbox=self.inbox,
            external_id=mail.dedupe_key,
            sender=sender,
            text=text or (f"({len(attachments)} attachment(s))" if attachments else ""),
            kind=MessageKind.TEXT if text or not attachments else MessageKind.FILE,
            sent_at=mail.date,
            received_at=now,
            thread=match.thread,
            attachments=attachments,
            raw=raw.split(b"\n\n", 1)[0].replace(b"\r", b"").decode("utf-8", "replace")[:_RAW_HEADER_LIMIT],
            sender_name=sender_name,
            subject=mail.subject or None,
            ticket=ticket,
            bot=not automatic and report.kind is not AutoKind.BULK,
            sender_check=check,
            contact_flags=bounced_flags(mail),
            reopen=reopen,
            meta=meta,
        )

    async def _bounce_thread(self, mail: ParsedMail) -> ThreadMatch | None:
        """A bounce belongs to the conversation of the mail of ours it returns."""
        original = mail.auto.original_message_id
        if not original:
            return None
        ours = stored_message_id(original, self._cfg.domain)
        message = await self._store.get_message(ours) if ours else None
        if message is None or message.inbox != self.inbox:
            return None
        conversation = await self._store.get_conversation(message.conversation_id)
        if conversation is None:
            return None
        return ThreadMatch(thread=conversation.thread, via="bounce", conversation=conversation)

    async def _file_parts(self, mail: ParsedMail, raw: bytes) -> tuple[tuple[Attachment, ...], dict[str, Any]]:
        """Keep the raw .eml and the attachments (within the size limits) under data_dir, by content hash."""
        plan = plan_files(
            mail,
            raw,
            inbox=self.inbox,
            max_attachment_bytes=self._cfg.max_attachment_bytes,
            max_total_bytes=self._cfg.max_attachments_total_bytes,
        )
        await asyncio.to_thread(write_files, self._data_dir / plan.folder, plan.files)
        return plan.attachments, plan.meta

    # Outbound -------------------------------------------------------------------------------------------
    async def send(self, reply: OutboundReply) -> Delivery:
        message = reply.message
        address = reply.address.value
        contact = await self._store.get_contact(reply.conversation.contact_id)
        if contact is not None and bounced_flag(address) in contact.flags:
            return Delivery(
                status=DeliveryStatus.FAILED,
                error=f"{address} bounced permanently before; not mailing it again",
                reason="address_bounced",
            )
        answered = await self._answered(reply)
        ticket = await self._store.get_ticket(message.ticket_id) if message.ticket_id else None
        subject = (ticket.subject if ticket else "") or ((intake_facts(answered).subject if answered else None) or "")
        email_meta: Mapping[str, Any] = answered.meta.get("email", {}) if answered else {}
        automatic = message.author in (Author.BOT, Author.SYSTEM)
        outgoing = Outgoing(
            message_id=message.id,
            domain=self._cfg.domain,
            from_address=self._cfg.address,
            from_name=self._cfg.from_name,
            to=address,
            # Automatic mail answers the sender alone (RFC 3834); people reply to all.
            cc=await self._copies(reply, email_meta, address) if self._cfg.reply_all and not automatic else (),
            subject=subject,
            text=message.text,
            sent_at=message.created_at,
            ticket_tag=signed_tag(ticket.number, await self._tag_secret()) if ticket else None,
            in_reply_to=email_meta.get("message_id") or (answered.external_id if answered else None),
            references=tuple(email_meta.get("references") or ()),
            automatic=automatic,
        )
        return await self._smtp_send(compose(outgoing), message.id)

    async def _copies(self, reply: OutboundReply, email_meta: Mapping[str, Any], customer: str) -> tuple[str, ...]:
        """Reply all, but only to people already on the ticket: a forged mail must not get itself a copy."""
        on_it = participants(reply.conversation, await self._store.messages(reply.conversation.id))
        return tuple(
            entry for entry in self._everyone_else(email_meta, customer) if getaddresses([entry])[0][1].lower() in on_it
        )

    def _everyone_else(self, email_meta: Mapping[str, Any], customer: str) -> tuple[str, ...]:
        """The answered mail's sender and recipients, without the customer, this inbox, or anyone twice."""
        fields = [
            str(email_meta.get("from") or ""),
            *map(str, email_meta.get("to") or ()),
            *map(str, email_meta.get("cc") or ()),
        ]
        seen = {customer.lower(), self._cfg.address.lower()}
        out: list[str] = []
        for name, addr in getaddresses(fields):
            if "@" in addr and addr.lower() not in seen:
                seen.add(addr.lower())
                out.append(formataddr((name, addr)) if name else addr)
        return tuple(out)

    async def _answered(self, reply: OutboundReply) -> Message | None:
        """The customer mail this reply answers: the one named, else the latest one in the conversation."""
        if reply.in_reply_to:
            found = await self._store.get_message(reply.in_reply_to)
            if found is not None:
                return found
        history = await self._store.messages(reply.conversation.id)
        return next((m for m in reversed(history) if m.direction is Direction.INBOUND), None)

    async def _smtp_send(self, msg: Any, message_id: str) -> Delivery:
        smtp = self._cfg.smtp
        try:
            await aiosmtplib.send(
                msg,
                hostname=smtp.host,
                port=smtp.effective_port,
                username=smtp.user or None,
                password=smtp.password or None,
                use_tls=smtp.tls == "tls",
                start_tls=smtp.tls == "starttls",
                timeout=smtp.timeout_s,
                tls_context=await self._smtp_context() if smtp.tls != "none" else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            permanent = all(500 <= c < 600 for c in codes)
            return Delivery(
                status=DeliveryStatus.FAILED if permanent else DeliveryStatus.RETRYABLE,
                error=str(exc),
                reason="recipient_refused" if permanent else None,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                return Delivery(status=DeliveryStatus.FAILED, error=f"{exc.code} {exc.message}", reason="smtp_rejected")
            return Delivery(status=DeliveryStatus.RETRYABLE, error=f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Delivery(status=DeliveryStatus.RETRYABLE, error=f"{type(exc).__name__}: {exc}")
        log.info("inbox %s: sent %s", self.inbox, message_id)
        return Delivery(status=DeliveryStatus.SENT, external_id=f"{message_id}@{self._cfg.domain}")

    async def send_code(self, to: Identity, text: str) -> Delivery:
        """A one-time code for a customer linking this address: a mail of its own, in no thread, never copied."""
        if to.kind is not IdentityKind.EMAIL:
            return Delivery(
                status=DeliveryStatus.FAILED, error=f"not an email address: {to}", reason="invalid_recipient"
            )
        message_id = f"code_{uuid.uuid4().hex}"
        outgoing = Outgoing(
            message_id=message_id,
            domain=self._cfg.domain,
            from_address=self._cfg.address,
            from_name=self._cfg.from_name,
            to=to.value,
            subject="验证码 / Verification code",
            text=text,
            sent_at=datetime.now(UTC),
            automatic=True,
        )
        return await self._smtp_send(compose(outgoing), message_id)

    async def ticket_opened(self, ticket: Ticket, conversation: Conversation) -> OutboundReply | None:
        """Acknowledge the customer's mail with the ticket number, threaded, at most once per sender per interval.

        Only composed here: the gateway stores it once (external id ``ack:<ticket>``) and sends it with
        retries, so a greylisting or briefly unreachable SMTP server does not cost the customer their number.
        """
        if not self._cfg.acknowledge:
            return None
        history = await self._store.messages(conversation.id, ticket_id=ticket.id)
        inbound = [m for m in history if m.direction is Direction.INBOUND]
        if not inbound or inbound[-1].meta.get("auto") or not intake_facts(inbound[-1]).bot:
            return None  # never acknowledge a machine: that is how mail loops start
        address = conversation.address.value
        interval = self._cfg.ack_min_interval_s
        if interval > 0 and not await self._store.claim(f"email:{self.inbox}:ack:{address.lower()}", interval):
            return None
        text = self._cfg.ack_template.format(number=ticket.number, subject=ticket.subject)
        ack = outbound_message(
            conversation,
            author=Author.SYSTEM,
            text=text,
            at=datetime.now(UTC),
            external_id=f"ack:{ticket.id}",
            ticket_id=ticket.id,
            meta={"kind": "acknowledgement"},
        )
        return OutboundReply(
            message=ack, address=conversation.address, conversation=conversation, in_reply_to=inbound[-1].id
        )


def _sender_check(auth: SenderAuth, *, checked: bool) -> SenderCheck:
    """What the trusted servers' verdict makes of the From: address. Nothing configured, or a mail they never saw:
    the address as written, as before. Seen and not passed (or failed): only claimed."""
    if auth is SenderAuth.PASS:
        return SenderCheck.AUTHENTICATED
    if auth is SenderAuth.FAIL or checked:
        return SenderCheck.UNVERIFIED
    return SenderCheck.CHANNEL


def _header_values(raw: bytes, name: str) -> list[str]:
    """Every value of one header in the raw mail's header block, unfolded (the parser keeps only the first)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    msg = BytesHeaderParser(policy=compat32).parsebytes(head + b"\n\n")
    return [" ".join(str(v).split()) for v in msg.get_all(name) or ()]


def _file_secret(path: Path) -> bytes:
    """Read the secret in ``path``, or create it (owner-only) if it is not there yet; first writer wins."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret
