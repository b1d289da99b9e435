"""Logging an operator and a log shipper can read: text or JSON lines, a request id, an access log."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from core.ids import random_hex
from core.redact import ScrubbingFormatter, scrub
from gateway.access import REQUEST_ID, Handler

LogFormat = Literal["text", "json"]
REQUEST_ID_HEADER = "X-Request-Id"
ACCESS_LOGGER = "huiliu.access"

# The id of the request being handled, for every log line written while handling it (the task's context).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("huiliu_request_id", default=None)
# A caller's own id is kept (a proxy's, a helpdesk's) when it is short and plain; anything else gets ours.
_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# LogRecord attributes every record has: what is left over came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and whatever ``extra`` carried;
    scrubbed of credentials like the text format."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                plain = isinstance(value, (int, float, bool)) or value is None
                entry[key] = value if plain else scrub(str(value))
        if record.exc_info:
            entry["exc_info"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(ScrubbingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [{rid}]" if rid else text


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Root logging to stderr in the chosen format; every record gets the current request id."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id (the caller's ``X-Request-Id`` when it is plain, else a new one), for its logs."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _GOOD_ID.match(given) else random_hex()
    request[REQUEST_ID] = rid  # the same id in the audit log and the API's answers
    token = request_id.set(rid)
    try:
        response = await handler(request)
    finally:
        request_id.reset(token)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """A WebSocket's answer is prepared inside the handler, before the middleware could add the header."""
    rid = request_id.get()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


def install_request_ids(app: web.Application) -> None:
    """The id goes into the handler's log lines and back to the caller as ``X-Request-Id`` (WebSockets too)."""
    app.middlewares.insert(0, request_ids)
    app.on_response_prepare.append(_echo_request_id)


class AccessLogger(AbstractAccessLogger):
    """One line per request on ``huiliu.access``: method, path, status, time, size, remote, request id."""

    @property
    def enabled(self) -> bool:
        """Whether the line would be written: aiohttp asks once per connection, and when it would not (the log
        level is above INFO) skips the call and the line's arguments for each of the connection's requests."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = response.headers.get(REQUEST_ID_HEADER)
        self.logger.info(
            '%s "%s %s" %d %.1fms %dB',
            request.remote or "-",
            request.method,
            request.path,
            response.status,
            time * 1000,
            response.body_length,
            extra={
                "request_id": rid,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 1),
                "remote": request.remote,
            },
        )
