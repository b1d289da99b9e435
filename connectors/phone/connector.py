"""The phone inbox's I/O: the CTI webhook, call state in the store, CDR import and the watched folder."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from aiohttp import web

from connectors.base import ConnectorDeps, InboundSink, IntakeResult, LogLinesSink, Rejected
from connectors.phone.call import CallOptions, CallRecord, to_inbound
from connectors.phone.cdr import (
    BadRow,
    CdrFormat,
    CdrOptions,
    ParsedCdr,
    check_columns,
    decode,
    parse_cdr,
    template_columns,
)
from connectors.phone.cti import (
    CallerIdRoute,
    CtiError,
    CtiEvent,
    CtiPolicy,
    EventType,
    Seen,
    call_record,
    form_params,
    multipart_pairs,
    parse_params,
    respond,
)
from core.config import ConfigError, PhoneInbox
from core.jsonweb import json_response
from core.model import (
    Channel,
    Delivery,
    DeliveryStatus,
    Direction,
    InboundMessage,
    OutboundReply,
    QuarantinedItem,
)
from core.progress import Progress
from core.store.base import ChannelStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
NOT_CONFIGURED = "Feature not configured, please contact your admin!"
BAD_TOKEN = "Invalid token, please contact your admin!"
SIGNATURE_HEADER = "X-Huiliu-Signature"
TIMESTAMP_HEADER = "X-Huiliu-Timestamp"  # Unix seconds, signed together with the body
TOKEN_HEADER = "X-Huiliu-Token"
_IMPORT_LANES = 32  # customers imported at once
_KNOWN_BATCH = 5000  # rows whose earlier import one store read looks up
_LOG_BATCH = 2000  # rows offered to intake's bulk write at once


def _utcnow() -> datetime:
    return datetime.now(UTC)


def cdr_options(cfg: PhoneInbox) -> CdrOptions:
    """The inbox's CDR settings for the pure parser (this reads the zone's tzdata file)."""
    return CdrOptions(
        timezone=ZoneInfo(cfg.timezone),
        region=cfg.default_region,
        columns=cfg.cdr.columns,
        template=cfg.cdr.template,
        delimiter=cfg.cdr.delimiter,
        extension_max_digits=cfg.cdr.extension_max_digits,
    )


def _check_layout(cfg: PhoneInbox) -> None:
    try:
        if cfg.cdr.columns is not None:
            check_columns(cfg.cdr.columns)
        elif cfg.cdr.template is not None:
            template_columns(cfg.cdr.template)
    except ValueError as exc:
        key = "columns" if cfg.cdr.columns is not None else "template"
        raise ConfigError(f"inboxes[{cfg.name}].cdr.{key}: {exc}") from None


@dataclass(slots=True)
class ImportReport:
    """What one CDR import did: every row is exactly one of imported, duplicate, skipped or bad."""

    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    bad: list[BadRow] = field(default_factory=list)
    in_bulk: int = 0  # of the imported and duplicate rows, those that intake took many per store write

    def add(self, other: ImportReport) -> None:
        self.in_bulk += other.in_bulk
        self.imported += other.imported
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        self.bad.extend(other.bad)

    def lines(self) -> list[str]:
        head = (
            f"imported {self.imported}, skipped {self.duplicates + self.skipped}"
            f" ({self.duplicates} already imported, {self.skipped} not calls with a customer), bad {len(self.bad)}"
        )
        return [head, *(f"  line {b.line}: {b.reason}" for b in self.bad)]


async def import_parsed(
    parsed: ParsedCdr,
    sink: InboundSink,
    *,
    inbox: str,
    options: CallOptions,
    clock: Clock = _utcnow,
    store: ChannelStore | None = None,
    progress: Progress | None = None,
    log_lines: LogLinesSink | None = None,
    ticket_lines: LogLinesSink | None = None,
) -> ImportReport:
    """Hand each parsed call to intake; a call imported before (same external id) is a duplicate.

    With ``store``, the calls stored by an earlier import are found with one read per batch of rows and
    skipped before they are built (intake's unique key would skip them too, one store job each). The calls of
    one customer stay in file order, since the first missed call opens the callback ticket and later ones raise
    its priority. With ``log_lines``, the calls intake has nothing to do for (answered calls) go in batches of
    ``_LOG_BATCH`` rows, one store write each; the others go one at a time through ``sink``, each customer's next
    batch waiting for its call's handling. Without it, every call goes through ``sink``, customers in parallel.
    With ``ticket_lines`` as well, those others (a missed call) are offered to it first, in batches of
    ``_LOG_BATCH``, one store write each; what it leaves goes through ``sink``.
    """
    report = ImportReport(skipped=len(parsed.skipped), bad=list(parsed.bad))
    records = parsed.records
    if store is not None and records:
        stored: set[str] = set()
        for start in range(0, len(records), _KNOWN_BATCH):
            ids = [record.external_id for _, record in records[start : start + _KNOWN_BATCH]]
            stored |= await store.stored_external_ids(
                channel=Channel.PHONE, inbox=inbox, direction=Direction.INBOUND, external_ids=ids
            )
        if stored:
            records = [(line, record) for line, record in records if record.external_id not in stored]
            report.duplicates += len(parsed.records) - len(records)

    total, done = len(parsed.records), len(parsed.records) - len(records)  # rows found stored count as done
    if progress is not None:
        progress(0, total)

    def count(result: IntakeResult) -> None:
        nonlocal done
        if result.duplicate:
            report.duplicates += 1
        else:
            report.imported += 1
        done += 1
        if progress is not None:
            progress(done, total)

    async def one(line: int, inbound: InboundMessage) -> None:
        try:
            result = await sink(inbound)
        except Rejected as exc:
            nonlocal done
            report.bad.append(BadRow(line=line, reason=str(exc), text=""))
            done += 1
            if progress is not None:
                progress(done, total)
            return
        count(result)
        if result.handled is not None:
            await result.handled  # this customer's next call sees this one's ticket

    def bulk(result: IntakeResult) -> None:
        report.in_bulk += 1
        count(result)

    calls = [(line, record.customer_number, record) for line, record in records]
    if log_lines is None:
        await _in_lanes(calls, one, lambda r: to_inbound(r, inbox=inbox, options=options, received_at=clock()))
    else:
        inbounds = [(line, customer, to_inbound(r, inbox=inbox, options=options, received_at=clock()))
                    for line, customer, r in calls]  # fmt: skip
        await _in_batches(inbounds, one, log_lines, bulk, ticket_lines)
    report.bad.sort(key=lambda b: b.line)
    return report


async def _in_lanes(
    calls: list[tuple[int, str, CallRecord]],
    one: Callable[[int, InboundMessage], Awaitable[None]],
    message: Callable[[CallRecord], InboundMessage],
) -> None:
    """Every call through intake alone: customers spread over ``_IMPORT_LANES`` lanes, each in file order."""
    lanes: list[list[tuple[int, CallRecord]]] = [[] for _ in range(_IMPORT_LANES)]
    for line, customer, record in calls:
        lanes[zlib.crc32(customer.encode()) % _IMPORT_LANES].append((line, record))

    async def run(lane: list[tuple[int, CallRecord]]) -> None:
        for line, record in lane:
            await one(line, message(record))

    await asyncio.gather(*(run(lane) for lane in lanes if lane))


async def _in_batches(
    calls: list[tuple[int, str, InboundMessage]],
    one: Callable[[int, InboundMessage], Awaitable[None]],
    log_lines: LogLinesSink,
    count: Callable[[IntakeResult], None],
    ticket_lines: LogLinesSink | None = None,
) -> None:
    """Rounds: every pending call in file order through ``log_lines``, in batches; each customer's first call
    that it leaves (a missed call, or one whose ticket's rules must see it) goes through intake alone, customers
    in parallel (``ticket_lines`` first, in batches, when given); then the next round takes the calls after it.
    A customer holds back only its own calls."""
    pending = calls
    gate = asyncio.Semaphore(_IMPORT_LANES)

    async def alone(line: int, inbound: InboundMessage) -> None:
        async with gate:
            await one(line, inbound)

    while pending:
        held: dict[str, tuple[int, InboundMessage]] = {}  # customer -> its call left for intake alone
        rest: list[tuple[int, str, InboundMessage]] = []
        for start in range(0, len(pending), _LOG_BATCH):
            batch: list[tuple[int, str, InboundMessage]] = []
            for row in pending[start : start + _LOG_BATCH]:
                (rest if row[1] in held else batch).append(row)
            results = await log_lines([inbound for _, _, inbound in batch]) if batch else []
            for row, result in zip(batch, results, strict=True):
                if result is not None:
                    count(result)
                    continue
                held.setdefault(row[1], (row[0], row[2]))
                rest.append(row)
        left = list(held.values())
        if ticket_lines is not None:
            offered, left = left, []
            for start in range(0, len(offered), _LOG_BATCH):
                batch_of = offered[start : start + _LOG_BATCH]
                taken_in_bulk = await ticket_lines([inbound for _, inbound in batch_of])
                for (line, inbound), result in zip(batch_of, taken_in_bulk, strict=True):
                    if result is None:
                        left.append((line, inbound))
                    else:
                        count(result)
        await asyncio.gather(*(alone(line, inbound) for line, inbound in left))
        taken = {line for line, _ in held.values()}
        pending = sorted((row for row in rest if row[0] not in taken), key=lambda row: row[0])


class PhoneConnector:
    """One call centre. Call state lives in the store (one checkpoint per call and event), so any
    instance may take any event of a call, in any order, any number of times."""

    channel: ClassVar[Channel] = Channel.PHONE

    def __init__(self, cfg: PhoneInbox, deps: ConnectorDeps, *, clock: Clock = _utcnow) -> None:
        self.inbox = cfg.name
        self._cfg = cfg
        self._store = deps.store
        self._tasks = deps.tasks
        self._data_dir = deps.data_dir
        self._clock = clock
        self._policy = CtiPolicy(
            region=cfg.default_region,
            blocked=cfg.blocked_callers,
            routes=tuple(CallerIdRoute(dest=r.dest, caller_id=r.caller_id) for r in cfg.caller_id_routes),
            default_caller_id=cfg.default_caller_id,
        )
        if cfg.cdr.columns is not None or cfg.cdr.template is not None:
            _check_layout(cfg)  # a bad mapping fails at start-up, not at the first file
        self._options: CdrOptions | None = None  # loading the zone reads tzdata: done off the loop, once
        self._voicemail_users = frozenset(u.lower() for u in cfg.voicemail_users)
        self._call_options = CallOptions(
            region=cfg.default_region,
            other_regions=cfg.other_regions,
            voicemail_faq=cfg.voicemail_faq if cfg.voicemail_faq.enabled else None,
        )
        self._sink: InboundSink | None = None
        self._running = False
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- Connector ------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"/cti/{self.inbox}", self._cti),
            web.post(f"/cti/{self.inbox}/{{token}}", self._cti),  # Zammad-style: the token in the URL
        ]

    @contextlib.asynccontextmanager
    async def running(self, sink: InboundSink) -> AsyncIterator[None]:
        self._sink = sink
        self._running = True
        watcher = None
        if self._cfg.cdr.watch_folder:
            watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"phone:{self.inbox}:watch")
        try:
            yield
        finally:
            self._running = False
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            # Hangups still waiting for their newCall are logged now with what we have, not dropped.
            for call_id, task in list(self._settling.items()):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await self._settle(call_id, force=True)
            await self._store.release(self._lease_key, self._holder)

    async def send(self, reply: OutboundReply) -> Delivery:
        # A call cannot carry a written reply: the helpdesk should answer on another channel.
        return Delivery(
            status=DeliveryStatus.FAILED,
            error="a phone inbox cannot deliver written replies; call the customer back or use another channel",
            reason="channel_cannot_reply",
        )

    def is_running(self) -> bool:
        return self._running

    # -- CTI webhook ----------------------------------------------------------------
    async def _cti(self, request: web.Request) -> web.StreamResponse:
        if not self._cfg.cti_enabled:
            return json_response({"error": NOT_CONFIGURED}, status=422)
        if self._sink is None:
            return json_response({"error": "the phone inbox is not running"}, status=503)
        # The whole body is read under the cap before anything looks at it: a chunked body has no
        # Content-Length to check, and a multipart parser reading the socket raised on a truncated body (a 500).
        body = await self._read_capped(request)
        if body is None:
            return json_response({"error": f"body larger than {self._cfg.max_body_bytes} bytes"}, status=413)
        if not self._authentic(request, body):
            return json_response({"error": BAD_TOKEN}, status=401)
        try:
            if request.content_type.startswith("multipart/"):
                params = form_params(multipart_pairs(request.headers.get("Content-Type", ""), body))
            else:
                params = self._decode(request.content_type, body)
            event = parse_params(params)
        except CtiError as exc:
            await self._quarantine(body, str(exc))
            return json_response({"error": str(exc)}, status=400)
        answer = respond(event, self._policy)
        await self._record(event, blocked=answer.get("action") == "reject")
        return json_response(answer)

    async def _read_capped(self, request: web.Request) -> bytes | None:
        """The body, or None once it passes ``max_body_bytes`` (declared or, when chunked, as it streams in)."""
        limit = self._cfg.max_body_bytes
        if (request.content_length or 0) > limit:
            return None
        chunks, size = [], 0
        while chunk := await request.content.read(1 << 16):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _authentic(self, request: web.Request, body: bytes) -> bool:
        cfg = self._cfg
        if cfg.token is not None:
            bearer = request.headers.get("Authorization", "")
            offered = (
                request.match_info.get("token")
                or request.query.get("token")
                or request.headers.get(TOKEN_HEADER)
                or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
            )
            if offered and hmac.compare_digest(offered.encode(), cfg.token.encode()):
                return True
        if cfg.hmac_secret is not None:
            signature = request.headers.get(SIGNATURE_HEADER, "").strip()
            signature = signature.removeprefix("sha256=")
            signed = body
            if cfg.hmac_scheme == "timestamped":
                stamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
                try:
                    fresh = abs(self._clock().timestamp() - int(stamp)) <= cfg.hmac_window_s
                except ValueError:
                    fresh = False
                if not fresh:
                    return False  # missing, malformed or too old: a captured request replayed later
                signed = stamp.encode() + b"." + body
            expected = hmac.new(cfg.hmac_secret.encode(), signed, hashlib.sha256).hexdigest()
            if signature and hmac.compare_digest(signature.lower().encode(), expected.encode()):
                return True
        return False

    @staticmethod
    def _decode(content_type: str, body: bytes) -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CtiError("body: not UTF-8") from None
        if content_type == "application/json" or (not content_type.endswith("urlencoded") and text.lstrip()[:1] == "{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise CtiError(f"body: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise CtiError("body: expected a JSON object")
            return data
        return form_params(parse_qsl(text, keep_blank_values=True))

    def _key(self, call_id: str, event: EventType) -> str:
        return f"phone:{self.inbox}:call:{call_id}:{event}"

    async def _record(self, event: CtiEvent, *, blocked: bool) -> None:
        """Keep the event once per (callId, event), then log the call if it is complete."""
        key = self._key(event.call_id, event.event)
        if await self._store.get_checkpoint(key) is None:
            seen = {"event": event.to_json(), "at": self._clock().isoformat(), "blocked": blocked}
            # Call state expires (call_state_ttl_s): kept for every call, it would otherwise grow for ever.
            await self._store.set_checkpoint(
                key, json.dumps(seen, ensure_ascii=False), ttl_s=self._cfg.call_state_ttl_s
            )
        # A repeat still tries to finish the call: the first delivery may have died before it did.
        await self._settle(event.call_id)

    async def _load(self, call_id: str, event: EventType) -> Seen | None:
        raw = await self._store.get_checkpoint(self._key(call_id, event))
        if raw is None:
            return None
        data = json.loads(raw)
        return Seen(
            event=CtiEvent.from_json(data["event"]),
            at=datetime.fromisoformat(data["at"]),
            blocked=bool(data.get("blocked")),
        )

    async def _settle(self, call_id: str, *, force: bool = False) -> None:
        """Log the call once it has hung up and we know how it began (or waited ``settle_s`` for that)."""
        hangup = await self._load(call_id, EventType.HANGUP)
        if hangup is None:
            return
        new_call = await self._load(call_id, EventType.NEW_CALL)
        if new_call is None and not force and self._cfg.settle_s > 0:
            if call_id not in self._settling:
                self._settling[call_id] = self._tasks.spawn(
                    self._settle_later(call_id), name=f"phone:{self.inbox}:settle:{call_id}"
                )
            return
        answer = await self._load(call_id, EventType.ANSWER)
        first = new_call or hangup
        caller_id = self._policy.caller_id_for(first.event.to) if first.event.direction == "out" else None
        record = call_record(new_call, answer, hangup, voicemail_users=self._voicemail_users, caller_id=caller_id)
        sink = self._sink
        if sink is None:
            return
        await sink(to_inbound(record, inbox=self.inbox, options=self._call_options, received_at=self._clock()))

    async def _settle_later(self, call_id: str) -> None:
        try:
            await asyncio.sleep(self._cfg.settle_s)
        finally:
            self._settling.pop(call_id, None)
        await self._settle(call_id, force=True)

    async def _quarantine(self, body: bytes, reason: str) -> None:
        digest = hashlib.sha256(body).hexdigest()[:32]
        await self._store.quarantine(
            QuarantinedItem(
                id=f"cti:{self.inbox}:{digest}",
                channel=Channel.PHONE,
                inbox=self.inbox,
                reason=reason,
                raw=body,
                received_at=self._clock(),
            )
        )

    # -- CDR import -----------------------------------------------------------------
    async def replay(self, item: QuarantinedItem, sink: InboundSink) -> str | None:
        """A CDR row quarantined by the watched folder, imported again (after a fix to the parser or the
        inbox's column mapping). CTI events are not replayed: their moment has passed, and the CDR has them."""
        if not item.id.startswith("cdr:"):
            return None
        report = await self.import_cdr(item.raw, CdrFormat(self._cfg.cdr.format), sink)
        if report.bad:
            return None
        return f"imported {report.imported} call(s), {report.duplicates} already there"

    async def import_cdr(
        self,
        data: bytes,
        fmt: CdrFormat,
        sink: InboundSink,
        *,
        first_line: int = 1,
        progress: Progress | None = None,
        log_lines: LogLinesSink | None = None,
        ticket_lines: LogLinesSink | None = None,
    ) -> ImportReport:
        """Parse (off the loop: 100,000 rows take a while) and import one file's rows (``log_lines``: the answered
        calls in bulk writes, ``ticket_lines``: the missed calls, see ``import_parsed``)."""
        if self._options is None:
            self._options = await asyncio.to_thread(cdr_options, self._cfg)
        options = self._options
        parsed = await asyncio.to_thread(lambda: parse_cdr(decode(data), fmt, options, first_line=first_line))
        return await import_parsed(
            parsed,
            sink,
            inbox=self.inbox,
            options=self._call_options,
            clock=self._clock,
            store=self._store,
            progress=progress,
            log_lines=log_lines,
            ticket_lines=ticket_lines,
        )

    @property
    def _lease_key(self) -> str:
        return f"phone:{self.inbox}:cdr-watch"

    def _watch_dir(self) -> Path:
        folder = Path(self._cfg.cdr.watch_folder or ".")
        return folder if folder.is_absolute() else self._data_dir / folder

    async def _watch(self) -> None:
        """Poll the CDR folder; one instance at a time holds the lease and imports what is new."""
        poll = self._cfg.cdr.watch_poll_s
        sizes: dict[str, int] = {}
        while True:
            try:
                if await self._store.lease(self._lease_key, self._holder, ttl_s=max(poll * 3, 30.0)):
                    await self.scan(sizes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("phone inbox %s: CDR folder scan failed; retrying", self.inbox)
            await asyncio.sleep(poll)

    async def scan(self, sizes: dict[str, int] | None = None) -> ImportReport:
        """Import what is new in the watched folder: appended lines of CSV files, finished JSON files."""
        sink = self._sink
        report = ImportReport()
        if sink is None:
            return report
        folder = self._watch_dir()
        pattern = self._cfg.cdr.watch_pattern

        def listing() -> list[tuple[str, int, int]]:
            if not folder.is_dir():
                return []
            found = []
            for entry in os.scandir(folder):
                if entry.is_file() and fnmatch.fnmatch(entry.name, pattern) and not entry.name.startswith("."):
                    st = entry.stat()
                    found.append((entry.name, st.st_ino, st.st_size))
            return sorted(found)

        fmt = CdrFormat(self._cfg.cdr.format)
        for name, inode, size in await asyncio.to_thread(listing):
            key = f"phone:{self.inbox}:cdr-file:{name}"
            state = json.loads(await self._store.get_checkpoint(key) or "{}")
            offset, line = int(state.get("offset", 0)), int(state.get("line", 1))
            if state.get("inode") != inode or size < offset:
                offset, line = 0, 1  # rotated or truncated: start over, dedupe keeps it exactly-once
            if size == offset:
                continue
            if fmt is CdrFormat.FREESWITCH_JSON:
                if sizes is not None and sizes.get(name) != size:
                    sizes[name] = size  # still being written: take it when its size holds for one poll
                    continue
                offset, line = 0, 1
            path = folder / name

            def read(path: Path = path, offset: int = offset, size: int = size) -> bytes:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    return fh.read(size - offset)

            chunk = await asyncio.to_thread(read)
            if fmt is not CdrFormat.FREESWITCH_JSON:
                cut = chunk.rfind(b"\n") + 1
                chunk = chunk[:cut]  # only whole lines; the rest is still being written
                if not chunk:
                    continue
            result = await self.import_cdr(chunk, fmt, sink, first_line=line)
            for bad in result.bad:
                log.warning("phone inbox %s: %s line %d: %s", self.inbox, name, bad.line, bad.reason)
                await self._store.quarantine(
                    QuarantinedItem(
                        id=f"cdr:{self.inbox}:{name}:{inode}:{bad.line}",
                        channel=Channel.PHONE,
                        inbox=self.inbox,
                        reason=f"{name} line {bad.line}: {bad.reason}",
                        raw=bad.text.encode(),
                        received_at=self._clock(),
                    )
                )
            report.add(result)
            new_state = {"inode": inode, "offset": offset + len(chunk), "line": line + chunk.count(b"\n")}
            await self._store.set_checkpoint(key, json.dumps(new_state))
        return report
