"""Raw MIME bytes → ParsedMail: addresses, subject, text, sanitised HTML and attachments, whatever the charset."""

from __future__ import annotations

import codecs
import functools
import hashlib
import mimetypes
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import charset_normalizer
import html2text
import nh3

from connectors.email.auto import AutoReport, classify

# Labels that mailers use for a superset encoding: decode with the superset, or characters go missing.
CHARSET_ALIASES: Mapping[str, str] = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "gb_2312-80": "gb18030",
    "csgb2312": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "unicode-1-1-utf-7": "utf-7",
    "us-ascii": "ascii",
}

_TEXTUAL = frozenset({"text/enriched", "text/richtext", "text/x-unknown"})
_GENERIC_STEMS: Mapping[str, str] = {"image": "image", "video": "video", "audio": "audio", "text": "file"}
_HTML_URL_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
_MSGID = re.compile(r"<([^<>\s]+)>")
_BARE_EMAIL = re.compile(r"[\w.+'=-]+@[\w-]+(?:\.[\w-]+)+")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?")
# Caps on what a mail puts into a ticket (a 130,000-character Subject became a ticket's subject). The longest
# subject in our corpora is 1,119 characters (a spam, folded over many lines). A body past MAX_TEXT_CHARS is cut
# in the text and kept whole as an attachment.
MAX_SUBJECT_CHARS = 2000
MAX_HEADER_CHARS = 16_000
MAX_TEXT_CHARS = 200_000
# A "text" part is binary when it holds NUL bytes or this share of its characters could not be decoded or are
# control characters (an Outlook .msg sent as text/plain decoded to 122,000 U+FFFD).
_BINARY_SHARE = 0.05
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")


class MailParseError(ValueError):
    """The bytes are not a mail we can turn into a message (no sender, no headers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True, slots=True, kw_only=True)
class MailPart:
    """An attachment or inline image, decoded."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedMail:
    message_id: str | None
    dedupe_key: str  # the Message-ID, or a hash of the mail's content (not its trace headers) when there is none
    raw_sha256: str
    sender: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    date: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    text: str = ""
    html: str | None = None
    attachments: tuple[MailPart, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    auto: AutoReport = field(default_factory=AutoReport)
    defects: tuple[str, ...] = ()

    @property
    def chain(self) -> tuple[str, ...]:
        """Every Message-ID this mail answers, nearest first (In-Reply-To, then References newest first)."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            seen.setdefault(mid, None)
        return tuple(seen)


# charsets ---------------------------------------------------------------------------------------------------
def codec_for(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, widened to its superset; None if unknown."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):  # ValueError: a NUL in a mangled label
        return None


# Undeclared 8-bit text whose every non-ASCII byte pair is one of GB2312's 3,755 common hanzi (lead byte
# 0xB0-0xD7, trail 0xA1-0xFE) is GBK: Big5 and Shift_JIS text almost never fits that. Statistical detection
# cannot tell from a few bytes (a bare 8-bit name in From: "武兰成" came out as Big5 "挕擘傖").
_COMMON_HANZI = re.compile(rb"(?:[\x00-\x7f]|[\xb0-\xd7][\xa1-\xfe])+")


def _all_common_hanzi(data: bytes) -> bool:
    return _COMMON_HANZI.fullmatch(data) is not None


_JIS_ESCAPE = re.compile(rb"\x1b(\$[@B]|\([BJI])")


def _iso2022jp_microsoft(data: bytes) -> str | None:
    """ISO-2022-JP as Microsoft writes it (CP50221: NEC and IBM extensions such as ①), which Python's codecs
    refuse: each JIS pair is moved to Shift_JIS and the whole decoded as cp932."""
    out = bytearray()
    mode = b"(B"
    for n, chunk in enumerate(_JIS_ESCAPE.split(data)):
        if n % 2:
            mode = chunk
            continue
        if mode in (b"$B", b"$@"):
            if len(chunk) % 2:
                return None
            for j1, j2 in zip(chunk[::2], chunk[1::2], strict=True):
                s1 = ((j1 - 0x21) >> 1) + 0x81
                s1 += 0x40 if s1 > 0x9F else 0
                odd_row = (j1 - 0x21) % 2 == 0  # JIS rows 1, 3, 5...: the first half of a Shift_JIS lead byte
                s2 = (j2 + 0x1F + (j2 + 0x1F >= 0x7F)) if odd_row else j2 + 0x7E
                out += bytes((s1 & 0xFF, s2 & 0xFF))
        elif mode == b"(I":
            out += bytes(b | 0x80 for b in chunk)  # half-width katakana
        else:
            out += chunk
    try:
        return bytes(out).decode("cp932")
    except UnicodeDecodeError:
        return None


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """Decode with the declared charset if it fits, else detect; never raises."""
    codec = codec_for(label)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        if codec.startswith("iso2022_jp") and (text := _iso2022jp_microsoft(data)) is not None:
            return text
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if _all_common_hanzi(data):
        return data.decode("gb18030")
    best = charset_normalizer.from_bytes(data).best()
    if best is not None and best.encoding:
        detected = codec_for(best.encoding) or best.encoding
        try:
            return data.decode(detected)
        except (UnicodeDecodeError, LookupError):
            pass
    return data.decode(codec or "utf-8", errors="replace")


def decode_header_value(raw: str) -> str:
    """RFC 2047 (and raw 8-bit, RFC 6532) header text → str, unfolded."""
    raw = re.sub(r"\r?\n[ \t]", " ", raw).replace("\r", "").replace("\n", "")
    if not _ENCODED_WORD.search(raw):
        return _from_surrogates(raw).strip()
    try:
        chunks = decode_header(raw)
    except (ValueError, IndexError, AssertionError, HeaderParseError):  # a broken encoded word stays as written
        return _from_surrogates(raw).strip()
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(_from_surrogates(chunk))
        else:
            out.append(decode_bytes(chunk, charset))
    return "".join(out).strip()


def _from_surrogates(text: str) -> str:
    """8-bit header bytes arrive as surrogate escapes: decode them as what they most likely are."""
    if text.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return decode_bytes(text.encode("utf-8", "surrogateescape"))


# headers ----------------------------------------------------------------------------------------------------
def _raw_values(msg: Message, name: str) -> list[str]:
    lname = name.lower()
    return [str(v) for k, v in msg.raw_items() if k.lower() == lname]


def _field_index(msg: Message) -> dict[str, list[str]]:
    """Every header's raw values by lower-case name: the mail's own headers are asked for a dozen times, and
    _raw_values scans them all on each ask."""
    index: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        index.setdefault(name.lower(), []).append(str(value))
    return index


def _addresses(raw_values: Iterable[str]) -> tuple[Address, ...]:
    values = [re.sub(r"\r?\n[ \t]", " ", v) for v in raw_values]
    if not values:
        return ()
    pairs = getaddresses(values)
    if not any("@" in addr for _, addr in pairs):
        # Some mailers encode the whole "name <addr>" as one encoded word: decode first, then split.
        pairs = getaddresses([decode_header_value(v) for v in values])
    out: list[Address] = []
    for name, addr in pairs:
        addr = _from_surrogates(addr).strip().strip("<>").strip()
        if "@" not in addr:
            continue
        out.append(Address(email=addr, name=_display_name(decode_header_value(name))))
    if not out:
        # Old style "Name (user@host)" and other oddities: take any address that is there.
        for value in values:
            decoded = decode_header_value(value)
            for found in _BARE_EMAIL.findall(decoded):
                out.append(Address(email=found, name=""))
    return tuple(out)


def _display_name(name: str) -> str:
    name = name.strip().strip("\"'").strip()
    without_comments = re.sub(r"\s*\([^)]*\)", "", name).strip()
    return without_comments or name.strip("()").strip()


def _message_ids(raw_values: Iterable[str]) -> tuple[str, ...]:
    text = " ".join(raw_values)
    ids = _MSGID.findall(text)
    if not ids:
        ids = [t for t in text.split() if "@" in t]
    return tuple(dict.fromkeys(i.strip() for i in ids if i.strip()))


def normalize_message_id(value: str) -> str:
    ids = _message_ids([value])
    return ids[0] if ids else value.strip().strip("<>")


def _date(fields: Mapping[str, list[str]]) -> datetime | None:
    values = fields.get("date", [])
    if not values:
        return None
    try:
        when = parsedate_to_datetime(decode_header_value(values[0]))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# bodies -----------------------------------------------------------------------------------------------------
def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        clean_content_tags={"script", "style", "head", "title"},
        url_schemes=_HTML_URL_SCHEMES,
        strip_comments=True,
    )


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    text = converter.handle(html)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _part_charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except (ValueError, LookupError):
        return None


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError, LookupError):
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _part_text(part: Message) -> str:
    return _normalize_newlines(decode_bytes(_payload_bytes(part), _part_charset(part)))


def _readable_text(data: bytes, label: str | None) -> str | None:
    """The part's text, or None when it is binary that no charset turns into text."""
    if b"\x00" in data:
        return None
    text = decode_bytes(data, label)
    if text and len(_CONTROL.findall(text)) > _BINARY_SHARE * len(text):
        return None
    return _normalize_newlines(text)


def cap(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, TypeError, LookupError, IndexError):
        name = None
    if not name:
        # Old mailers put the name only on Content-Type; get_filename already looks there, this catches odd cases.
        ctype = _raw_values(part, "content-type")
        m = re.search(r'name\s*=\s*"?([^";]+)"?', ctype[0]) if ctype else None
        name = m.group(1) if m else None
    if not name:
        return None
    name = decode_header_value(str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or None


class _Collector:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[MailPart] = []
        self.defects: list[str] = []

    def visit(self, part: Message, depth: int = 0) -> None:
        self.defects.extend(type(d).__name__ for d in part.defects)
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        if depth > 50:
            return
        if ctype in ("message/rfc822", "message/global") and (depth > 0 or disposition == "attachment"):
            self._attach_message(part)
            return
        if ctype == "message/delivery-status" or ctype.startswith("message/"):
            name = _described_name(part, ctype) or ctype.split("/")[1] + ".txt"
            self._attach(part, ctype, default_name=name, data=_flatten_payload(part))
            return
        if ctype.startswith("multipart/") and isinstance(part.get_payload(), str):
            # Its boundary never appears (a broken or hand-made mail): the body is all there is, read it as text.
            self._text_or_attachment(part, self.texts)
            return
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                for child in children:
                    if isinstance(child, Message):
                        self.visit(child, depth + 1)
            return
        filename = _filename(part)
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            self._text_or_attachment(part, self.texts if ctype == "text/plain" else self.htmls)
            return
        # text/enriched and the like as the only body: show it as text rather than lose it.
        if ctype in _TEXTUAL and not filename and disposition != "attachment" and not self.texts:
            self._text_or_attachment(part, self.texts)
            return
        self._attach(part, ctype, default_name=None, data=_payload_bytes(part), filename=filename)

    def _text_or_attachment(self, part: Message, into: list[str]) -> None:
        """A body part's text; binary posing as text is kept as an attachment instead, bytes untouched."""
        data = _payload_bytes(part)
        text = _readable_text(data, _part_charset(part))
        if text is None:
            self.defects.append("UndecodableTextPart")
            self._attach(part, "application/octet-stream", default_name="body.bin", data=data)
            return
        into.append(text)

    def _attach_message(self, part: Message) -> None:
        """An attached mail is named by its file name, else its subject, else its description."""
        inner = part.get_payload()
        subject = ""
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            values = _raw_values(inner[0], "subject")
            subject = decode_header_value(values[0]).strip() if values else ""
        name = _filename(part) or (f"{subject}.eml" if subject else None) or _described_name(part, "message/rfc822")
        data = _flatten_payload(part)
        self._attach(part, "message/rfc822", default_name=name or "message.eml", data=data, filename=name)

    def _attach(
        self, part: Message, ctype: str, *, default_name: str | None, data: bytes, filename: str | None = None
    ) -> None:
        cid_values = _raw_values(part, "content-id")
        cid = normalize_message_id(cid_values[0]) if cid_values else None
        name = filename or default_name or _described_name(part, ctype) or self._generic_name(ctype, cid)
        inline = part.get_content_disposition() == "inline" or (
            cid is not None and part.get_content_disposition() is None
        )
        self.attachments.append(MailPart(filename=name, content_type=ctype, data=data, content_id=cid, inline=inline))

    def _generic_name(self, ctype: str, cid: str | None) -> str:
        """A name for a part that has none: the Content-ID if it looks like a file name, else image.jpg & co."""
        local = cid.split("@")[0] if cid else ""
        if local and re.search(r"\.\w{1,5}$", local):
            return local
        ext = mimetypes.guess_extension(ctype) or ""
        stem = _GENERIC_STEMS.get(ctype.split("/")[0], "file") if ctype != "text/html" else "document"
        taken = {a.filename for a in self.attachments}
        name, n = f"{stem}{ext}", 0
        while name in taken:
            n += 1
            name = f"{stem}{n}{ext}"
        return name


def _described_name(part: Message, ctype: str) -> str | None:
    """Bounces name their parts only in Content-Description ("Delivery report", "Undelivered Message")."""
    values = _raw_values(part, "content-description")
    if not values:
        return None
    text = decode_header_value(values[0]).strip()
    if not text or len(text) > 100:
        return None
    ext = ".eml" if ctype == "message/rfc822" else (mimetypes.guess_extension(ctype) or ".txt")
    return text if text.lower().endswith(ext) else text + ext


def _flatten_payload(part: Message) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, list):
        chunks: list[bytes] = []
        for sub in payload:
            if isinstance(sub, Message):
                try:
                    # _POLICY has policy.SMTP's settings with "\n" line ends (policy.default's), so the bytes are
                    # the same; the generator puts its policy on every part while it writes, and with ours the
                    # Content-Type of each part it reads is the parse the collector already made, not a fresh one.
                    chunks.append(sub.as_bytes(policy=_POLICY))
                except (ValueError, TypeError, LookupError, UnicodeError, AttributeError):
                    chunks.append(str(sub.get_payload()).encode("utf-8", "surrogateescape"))
        return b"\n".join(chunks)
    return _payload_bytes(part)


# "Name: value", or "Name:value" (RFC 5322 needs no space after the colon: Verizon's bounces write
# "From:MMSC NDR Administrator <...>") where the name is a word and the value is not a URL's "//".
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:[ \t]|^[A-Za-z][A-Za-z0-9-]*:(?!//)")
_DAEMON = re.compile(r"(mailer-daemon|postmaster)", re.IGNORECASE)


def _sender(fields: Mapping[str, list[str]]) -> Address | None:
    """From, else Sender, Reply-To, Return-Path; a bounce's bare "MAILER-DAEMON" counts as an address."""
    for name in ("from", "sender", "reply-to", "return-path"):
        found = _addresses(fields.get(name, []))
        if found:
            return found[0]
    if any(v.strip() == "<>" for name in ("from", "return-path") for v in fields.get(name, [])):
        # The null reverse-path (RFC 5321 4.5.5): only the mail system itself sends from it, e.g. a bounce.
        return Address(email="mailer-daemon", name="Mail Delivery System")
    for value in fields.get("from", []):
        m = _DAEMON.search(value)
        if m:
            comment = re.search(r"\(([^)]*)\)", value)
            name = decode_header_value(comment.group(1)) if comment else m.group(1)
            return Address(email=m.group(1).lower(), name=name.strip())
    return None


# The headers its author's mailer wrote. Servers on the way add Received, Delivered-To, Authentication-Results
# and the like, and differ per delivery: a mail redelivered after its mailbox was recreated must hash the same.
_CONTENT_HEADERS = (
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding",
)  # fmt: skip


def content_digest(msg: Message, clean: bytes) -> str:
    """A hash of what the author sent: the author's headers, in order, and the body."""
    digest = hashlib.sha256()
    for name, value in msg.raw_items():
        if name.lower() in _CONTENT_HEADERS:
            digest.update(
                name.lower().encode()
                + b":"
                + re.sub(r"\s+", " ", str(value)).strip().encode("utf-8", "surrogateescape")
                + b"\n"
            )
    _, _, body = clean.partition(b"\n\n")
    digest.update(b"\n" + body)
    return digest.hexdigest()


# entry points -----------------------------------------------------------------------------------------------
def normalize_line_endings(raw: bytes) -> bytes:
    """CRLF and CR-only mail → LF, so every transport's copy parses (and hashes) the same."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def repair_headers(raw: bytes) -> bytes:
    """A header line that is neither "Name: value" nor indented is a broken fold: indent it.

    Otherwise the parser ends the header block there and From, To and Subject below it are lost.
    """
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        return raw
    lines = head.split(b"\n")
    fixed = [
        line if i == 0 or not line or line[:1] in b" \t" or _HEADER_LINE.match(line) else b" " + line
        for i, line in enumerate(lines)
    ]
    return b"\n".join(fixed) + sep + body


class _MemoPolicy(EmailPolicy):
    """policy.default, but a header value is parsed once, not on every ``get``.

    The parser asks each part for its Content-Type several times, and so do we (type, disposition, charset,
    file name); each ask ran the full RFC 5322 header parser again, over half of a mail's parse time. The parse
    depends only on the header's name and value and the result is immutable, so a shared bounded cache gives
    the very same objects back.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        return _parsed_header(name, value)


_POLICY = _MemoPolicy()


@functools.lru_cache(maxsize=4096)
def _parsed_header(name: str, value: str) -> Any:
    return super(_MemoPolicy, _POLICY).header_fetch_parse(name, value)


def read_message(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=_POLICY).parsebytes(repair_headers(normalize_line_endings(raw)))
    assert isinstance(msg, EmailMessage)
    return msg


def _header_map(msg: Message) -> dict[str, str]:
    """Each header's first value, decoded, in the order of each name's last occurrence, newest first.

    Only the first value of a repeated header (Received, a dozen times in a relayed mail) is decoded: the others
    would be overwritten anyway.
    """
    items = list(msg.raw_items())
    first: dict[str, str] = {}
    for name, value in items:
        first.setdefault(name.lower(), value)
    order = dict.fromkeys(name.lower() for name, _ in reversed(items))
    return {name: cap(decode_header_value(str(first[name])), MAX_HEADER_CHARS) for name in order}


def parse_mail(raw: bytes) -> ParsedMail:
    """Pure: bytes in, ParsedMail out. Raises MailParseError for mail that has no usable sender or headers."""
    clean = normalize_line_endings(raw)
    if not clean.strip():
        raise MailParseError("empty mail")
    digest = hashlib.sha256(clean).hexdigest()
    msg = read_message(clean)
    if not list(msg.raw_items()):
        # A forwarded mail saved with a banner line above its headers ("---- Original message ----").
        lines = clean.split(b"\n", 10)
        start = next((i for i, line in enumerate(lines[:10]) if _HEADER_LINE.match(line)), None)
        if start:
            clean = b"\n".join(lines[start:])
            msg = read_message(clean)
    if not list(msg.raw_items()):
        raise MailParseError("no headers")
    fields = _field_index(msg)
    sender = _sender(fields)
    if sender is None:
        raise MailParseError("no sender address in From, Sender, Reply-To or Return-Path")
    collector = _Collector()
    collector.visit(msg)
    html_raw = "\n".join(collector.htmls) if collector.htmls else None
    text = "\n\n".join(t.strip("\n") for t in collector.texts if t.strip())
    if not text and html_raw:
        text = html_to_text(html_raw)
    if len(text) > MAX_TEXT_CHARS:
        # The whole text stays with the message as a file; the ticket shows its start.
        full = MailPart(filename="body.txt", content_type="text/plain", data=text.encode())
        collector.attachments.append(full)
        collector.defects.append("TextTooLong")
        text = cap(text, MAX_TEXT_CHARS)
    ids = _message_ids(fields.get("message-id", []))
    message_id = ids[0] if ids else None
    headers = _header_map(msg)
    subject_values = fields.get("subject", [])
    subject = cap(decode_header_value(subject_values[0]), MAX_SUBJECT_CHARS) if subject_values else ""
    report = classify(msg, headers=headers, sender=sender.email, subject=subject, text=text)
    return ParsedMail(
        message_id=message_id,
        dedupe_key=message_id or f"sha256:{content_digest(msg, clean)}",
        raw_sha256=digest,
        sender=sender,
        to=_addresses(fields.get("to", [])),
        cc=_addresses(fields.get("cc", [])),
        reply_to=_addresses(fields.get("reply-to", [])),
        subject=subject,
        date=_date(fields),
        in_reply_to=_message_ids(fields.get("in-reply-to", [])),
        references=_message_ids(fields.get("references", [])),
        text=text,
        html=sanitize_html(html_raw) if html_raw else None,
        attachments=tuple(collector.attachments),
        headers=headers,
        auto=report,
        defects=tuple(dict.fromkeys(collector.defects)),
    )
