"""Secrets out of error texts: URL query strings and credentials, and key=value pairs that name a secret."""

from __future__ import annotations

import logging
import re

# A URL's credentials (user:pass@) and its query string, where tokens and secrets ride
# (WeChat's /cgi-bin/token?appid=...&secret=... reached the API and the database through an error text).
_URL = re.compile(r"""\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/@'"<>]*@)?([^\s?#'"<>]*)(\?[^\s#'"<>]*)?""")
_SECRET_PAIR = re.compile(
    r"""\b(secret|app_?secret|password|passwd|token|access_token|api_key|apikey|signature)=([^&\s'"<>]+)""",
    re.IGNORECASE,
)


def _url(match: re.Match[str]) -> str:
    scheme, userinfo, rest, query = match.groups()
    return scheme + ("***@" if userinfo else "") + rest + ("?…" if query else "")


def scrub(text: str) -> str:
    """``text`` with URL credentials and query strings and secret-named values replaced."""
    return _SECRET_PAIR.sub(r"\1=***", _URL.sub(_url, text))


class ScrubbingFormatter(logging.Formatter):
    """Every log line, traceback included, goes out scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
