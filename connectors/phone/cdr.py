"""Call-detail records (Asterisk Master.csv, FreeSWITCH cdr_csv and mod_json_cdr) → call records, pure."""

from __future__ import annotations

import csv
import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, cast
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from connectors.phone.call import CallRecord, Disposition, durations
from normalizer.phone import clean, to_e164


class CdrFormat(enum.StrEnum):
    ASTERISK_CSV = "asterisk-csv"
    FREESWITCH_CSV = "freeswitch-csv"
    FREESWITCH_JSON = "freeswitch-json"


# The fields a column may be mapped to (cdr_custom layouts, FreeSWITCH templates). "-" ignores a column.
FIELDS = frozenset(
    {
        "accountcode", "src", "dst", "dcontext", "clid", "caller_name", "channel", "dstchannel", "lastapp",
        "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid",
        "userfield", "peeraccount", "linkedid", "sequence", "direction", "queue", "agent", "recording_url",
        "transcript", "wait",
    }
)  # fmt: skip

# cdr_csv's Master.csv (cdr/cdr_csv.c): 16 columns, then uniqueid and userfield if logged, then the
# post-1.8 columns with newcdrcolumns=yes. The count tells which were logged; 17 and 20 are read as
# carrying uniqueid (loguniqueid is the usual choice); set explicit columns when they carry userfield.
ASTERISK_BASE = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
    "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
)  # fmt: skip
_NEW = ("peeraccount", "linkedid", "sequence")
ASTERISK_BY_COUNT: dict[int, tuple[str, ...]] = {
    16: ASTERISK_BASE,
    17: (*ASTERISK_BASE, "uniqueid"),
    18: (*ASTERISK_BASE, "uniqueid", "userfield"),
    19: (*ASTERISK_BASE, *_NEW),
    20: (*ASTERISK_BASE, "uniqueid", *_NEW),
    21: (*ASTERISK_BASE, "uniqueid", "userfield", *_NEW),
}

# FreeSWITCH channel variables → our fields, for cdr_csv templates and JSON variables.
FS_VARIABLES: dict[str, str] = {
    "caller_id_name": "caller_name",
    "caller_id_number": "src",
    "ani": "src",
    "destination_number": "dst",
    "context": "dcontext",
    "caller_id": "clid",
    "channel_name": "channel",
    "bridge_channel": "dstchannel",
    "last_app": "lastapp",
    "last_arg": "lastdata",
    "start_stamp": "start",
    "answer_stamp": "answer",
    "end_stamp": "end",
    "duration": "duration",
    "billsec": "billsec",
    "hangup_cause": "disposition",
    "amaflags": "amaflags",
    "uuid": "uniqueid",
    "accountcode": "accountcode",
    "userfield": "userfield",
    "direction": "direction",
    "cc_queue": "queue",
    "cc_agent": "agent",
    "record_file": "recording_url",
    "sofia_record_file": "recording_url",
    "waitsec": "wait",
}

FS_TEMPLATES: dict[str, str] = {
    # The stock templates of cdr_csv.conf.xml, by name (the variable order is what matters).
    "example": "caller_id_name caller_id_number destination_number context start_stamp answer_stamp end_stamp"
    " duration billsec hangup_cause uuid bleg_uuid accountcode read_codec write_codec",
    "snom": "caller_id_name caller_id_number destination_number context start_stamp answer_stamp end_stamp"
    " duration billsec hangup_cause uuid bleg_uuid accountcode read_codec write_codec sip_user_agent"
    " call_clientcode sip_rtp_rxstat sip_rtp_txstat sofia_record_file",
    "linksys": "caller_id_name caller_id_number destination_number context start_stamp answer_stamp end_stamp"
    " duration billsec hangup_cause uuid bleg_uuid accountcode read_codec write_codec sip_user_agent"
    " sip_p_rtp_stat",
    "asterisk": "accountcode caller_id_number destination_number context caller_id channel_name bridge_channel"
    " last_app last_arg start_stamp answer_stamp end_stamp duration billsec hangup_cause amaflags uuid"
    " userfield",
    "opencdrrate": "uuid signal_bond direction ani destination_number answer_stamp end_stamp billsec"
    " accountcode userfield network_addr original_caller_id_name sip_gateway_name",
}

_ASTERISK_DISPOSITIONS: dict[str, Disposition] = {
    "ANSWERED": Disposition.ANSWERED,
    "NO ANSWER": Disposition.NO_ANSWER,
    "NOANSWER": Disposition.NO_ANSWER,
    "BUSY": Disposition.BUSY,
    "FAILED": Disposition.FAILED,
    "CONGESTION": Disposition.CONGESTION,
}
# Q.850 hangup causes as FreeSWITCH names them; any other cause of an unanswered call is a failure.
_FS_CAUSES: dict[str, Disposition] = {
    "NO_ANSWER": Disposition.NO_ANSWER,
    "NO_USER_RESPONSE": Disposition.NO_ANSWER,
    "CALL_REJECTED": Disposition.NO_ANSWER,
    "ALLOTTED_TIMEOUT": Disposition.NO_ANSWER,
    "USER_BUSY": Disposition.BUSY,
    "ORIGINATOR_CANCEL": Disposition.CANCEL,
    "LOSE_RACE": Disposition.CANCEL,
    "UNALLOCATED_NUMBER": Disposition.NOT_FOUND,
    "NO_ROUTE_DESTINATION": Disposition.NOT_FOUND,
    "USER_NOT_REGISTERED": Disposition.NOT_FOUND,
    "SUBSCRIBER_ABSENT": Disposition.NOT_FOUND,
    "NORMAL_CIRCUIT_CONGESTION": Disposition.CONGESTION,
    "SWITCH_CONGESTION": Disposition.CONGESTION,
    "DEFLECTION": Disposition.FORWARDED,
}
_CAUSE_WORD = re.compile(r"^[A-Z][A-Z0-9_]+$")


class RowError(ValueError):
    """Why one row cannot be imported; the reader adds the line number."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrOptions:
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    region: str = "CN"
    columns: tuple[str, ...] | None = None  # an explicit mapping (cdr_custom); None: the format's own
    template: str | None = None  # FreeSWITCH: a stock template's name or the template text itself
    delimiter: str = ","
    extension_max_digits: int = 6  # numbers this short are the call centre's own extensions
    voicemail_apps: frozenset[str] = frozenset({"voicemail"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BadRow:
    line: int
    reason: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedRow:
    line: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedCdr:
    records: list[tuple[int, CallRecord]] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)

    def keep(self, line: int, record: CallRecord | None) -> None:
        """A good row: a call with a customer, or an internal call (extension to extension) we skip."""
        if record is None:
            self.skipped.append(SkippedRow(line=line, reason="internal call (no customer number)"))
        else:
            self.records.append((line, record))


def template_columns(template: str) -> tuple[str, ...]:
    """A cdr_csv template's variables in order, mapped to our fields ("-" where we have no use)."""
    text = FS_TEMPLATES.get(template.strip())
    names = text.split() if text is not None else re.findall(r"\$\{([A-Za-z0-9_]+)", template)
    if not names:
        raise ValueError(f"template {template!r} is neither a stock template name nor a ${{var}} template")
    return tuple(FS_VARIABLES.get(name, "-") for name in names)


def check_columns(columns: Sequence[str]) -> tuple[str, ...]:
    unknown = [c for c in columns if c not in FIELDS and c != "-"]
    if unknown:
        raise ValueError(f"unknown column names {unknown}; use {sorted(FIELDS)} or '-' to ignore a column")
    if not {"src", "dst"} <= set(columns) or not ({"start", "end"} & set(columns)):
        raise ValueError("a column mapping needs src, dst and start or end")
    return tuple(columns)


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM); GB18030 for files re-saved by a Chinese spreadsheet."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")


def parse_cdr(text: str, fmt: CdrFormat, options: CdrOptions, *, first_line: int = 1) -> ParsedCdr:
    if fmt is CdrFormat.FREESWITCH_JSON:
        return _parse_json(text, options, first_line)
    if options.columns is not None:
        fixed: tuple[str, ...] | None = check_columns(options.columns)
    elif fmt is CdrFormat.FREESWITCH_CSV:
        fixed = template_columns(options.template or "example")
    else:
        fixed = None  # Asterisk: the column count tells the layout
    return _parse_csv(text, fixed, options, first_line, source=str(fmt))


# ---------------------------------------------------------------------------- CSV


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _StrictLines:
    """Each line of a file read on its own as strict CSV (None where that fails), through one reader.

    A reader made for every line cost a dialect built from keywords each time (a tenth of the parse). The one
    reader here reads a list of the lines with a None after each, its iterator set to the line wanted before each
    read: a record that ends with its line is read exactly as a reader of that line alone reads it, an error in
    it is the same error, and a quoted field still open at the line's end, where a reader of the line alone fails
    ("unexpected end of data"), makes this one read the None after it and fail too, never the next line."""

    def __init__(self, lines: list[str], delimiter: str) -> None:
        feed: list[str | None] = [None] * (2 * len(lines))
        feed[::2] = lines
        at = iter(feed)  # a list iterator: its __setstate__ moves it to an index
        self._move: Callable[[int], None] = at.__setstate__  # type: ignore[attr-defined]  # not in typeshed
        # The reader takes a None as an error: a line's record that runs on past its end fails there.
        self._reader = csv.reader(cast("Iterator[str]", at), delimiter=delimiter, strict=True)

    def fields(self, index: int) -> list[str] | None:
        self._move(2 * index)
        try:
            return next(self._reader)
        except (csv.Error, StopIteration):
            return None


def _repairs(line: str, delimiter: str) -> list[list[str]]:
    """Readings of a line whose quoting is broken (stray or unbalanced quotes), most careful first.

    A quoted field that really holds the delimiter closes in a later piece that does not itself open a
    quote (``"SIP/201`` + ``30"``); an opening quote that never closes that way is a stray one.
    """
    pieces = line.split(delimiter)
    glued: list[str] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i].strip()
        j = i
        if piece.startswith('"') and not (len(piece) > 1 and piece.endswith('"')):
            acc = piece
            while j + 1 < len(pieces) and not pieces[j + 1].strip().startswith('"'):
                j += 1
                acc += delimiter + pieces[j]
                if acc.rstrip().endswith('"'):
                    break
            if acc.rstrip().endswith('"'):
                piece = acc
            else:
                j = i
        glued.append(piece)
        i = j + 1

    def unquote_field(value: str) -> str:
        return value.strip().strip('"').replace('""', '"')

    try:
        lenient = next(csv.reader((line,), delimiter=delimiter), [])
    except csv.Error:  # a NUL or a line break inside a field: no lenient reading either
        lenient = []
    return [[unquote_field(f) for f in glued], [unquote_field(f) for f in pieces], lenient]


def _is_header(fields: Sequence[str]) -> bool:
    names = {f.strip().strip('"').lower() for f in fields}
    return bool(names & {"src", "dst", "disposition", "caller_id_number", "destination_number", "uuid", "start"})


def _read_row(
    fields: Sequence[str], fixed: tuple[str, ...] | None, options: CdrOptions, source: str
) -> CallRecord | None:
    columns = fixed if fixed is not None else ASTERISK_BY_COUNT[len(fields)]
    row = {name: value.strip() for name, value in zip(columns, fields, strict=True) if name != "-" and value}
    return _stripped_record(row, options, source)


def _reads(fields: Sequence[str], fixed: tuple[str, ...] | None, options: CdrOptions) -> bool:
    width = len(fixed) if fixed is not None else len(fields)
    if len(fields) != width or width not in (ASTERISK_BY_COUNT if fixed is None else {width: ()}):
        return False
    try:
        _read_row(fields, fixed, options, "header-check")
    except RowError:
        return False
    return True


def _parse_csv(
    text: str, fixed: tuple[str, ...] | None, options: CdrOptions, first_line: int, *, source: str
) -> ParsedCdr:
    result = ParsedCdr()
    width = {len(fixed)} if fixed is not None else set(ASTERISK_BY_COUNT)
    want = f"{len(fixed)}" if fixed is not None else "16 to 21"
    # A bare CR ends a line too (files saved on old Macs, or a stray one), as csv would read it.
    lines = _LINE_BREAK.split(text)
    strict = _StrictLines(lines, options.delimiter)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        number = first_line + index
        fields = strict.fields(index)
        if number == first_line and fields is not None and _is_header(fields) and not _reads(fields, fixed, options):
            result.skipped.append(SkippedRow(line=number, reason="header"))
            continue
        try:
            if fields is not None and len(fields) in width:
                record = _read_row(fields, fixed, options, source)
            else:
                record = _repaired(line, fixed, options, source, width, want, got=len(fields or ()))
        except RowError as exc:
            result.bad.append(BadRow(line=number, reason=str(exc), text=line))
            continue
        result.keep(number, record)
    return result


def _repaired(
    line: str,
    fixed: tuple[str, ...] | None,
    options: CdrOptions,
    source: str,
    width: set[int],
    want: str,
    *,
    got: int,
) -> CallRecord | None:
    """Read a broken line only when exactly one repair of its quotes gives a valid row."""
    found: dict[tuple[object, ...], CallRecord | None] = {}
    first_error: RowError | None = None
    widths = []
    for fields in _repairs(line, options.delimiter):
        widths.append(len(fields))
        if len(fields) not in width:
            continue
        try:
            record = _read_row(fields, fixed, options, source)
        except RowError as exc:
            first_error = first_error or exc
            continue
        key = (None,) if record is None else (record.external_id, record.started_at, record.disposition)
        found.setdefault(key, record)
    if len(found) == 1:
        return next(iter(found.values()))
    if len(found) > 1:
        raise RowError("quotes are broken and the row reads more than one way")
    if first_error is not None:
        raise first_error
    raise RowError(f"expected {want} columns, got {got or min(widths, default=0)}")


# ---------------------------------------------------------------------------- times


_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M")
_SLASHED = re.compile(
    r"^(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?\s*(AM|PM)?$",
    re.IGNORECASE,
)
_EMPTY_TIMES = frozenset({"", "0", "0000-00-00 00:00:00", "0000-00-00", "null", "none"})


def parse_time(text: str, tz: tzinfo) -> datetime | None:
    """A CDR time as an aware datetime; None for "no time" (an unanswered call's answer column).

    Local times take ``tz``. Spreadsheet re-saves are read when unambiguous: ``2016/9/5 9:03``,
    ``5/9/2016`` only if one of day and month is above 12, Excel serial days, epoch seconds.
    Raises RowError otherwise.
    """
    value = text.strip().strip('"').strip("'").strip()
    if value.lower() in _EMPTY_TIMES:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if parsed is None and (match := _SLASHED.match(value)):
        parsed = _slashed(match, value)
    if parsed is None and re.fullmatch(r"\d{9,10}(\.\d+)?", value):
        return datetime.fromtimestamp(float(value), UTC)  # epoch seconds are UTC whatever the zone
    if parsed is None and re.fullmatch(r"\d{5}(\.\d+)?", value):
        parsed = datetime(1899, 12, 30) + timedelta(days=float(value))  # an Excel serial date
    if parsed is None:
        raise RowError(f"time {value!r} is not a date and time we can read")
    if parsed.tzinfo is None:
        # replace(tzinfo=) parses its keywords each call: a sixth of the parse of a row's three times
        parsed = datetime.combine(parsed, parsed.time(), tz)
    return parsed


def _slashed(match: re.Match[str], value: str) -> datetime:
    a, b, c, hh, mm, ss, frac, ampm = match.groups()
    if len(a) == 4:
        year, month, day = int(a), int(b), int(c)
    elif len(c) == 4:
        first, second = int(a), int(b)
        if first > 12 >= second:
            day, month = first, second
        elif second > 12 >= first:
            month, day = first, second
        elif first == second:
            month = day = first
        else:
            raise RowError(f"time {value!r} is ambiguous (day/month or month/day?)")
        year = int(c)
    else:
        raise RowError(f"time {value!r} has no four-digit year")
    hour = int(hh or 0)
    if ampm:
        hour = hour % 12 + (12 if ampm.upper() == "PM" else 0)
    try:
        return datetime(year, month, day, hour, int(mm or 0), int(ss or 0), int((frac or "0").ljust(6, "0")))
    except ValueError as exc:
        raise RowError(f"time {value!r} is not a date and time we can read ({exc})") from None


# ---------------------------------------------------------------------------- rows


def _number(row: Mapping[str, str], key: str) -> float | None:
    value = row.get(key, "").strip().strip('"')
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise RowError(f"{key} {value!r} is not a number") from None
    if number < 0:
        raise RowError(f"{key} {value!r} is negative")
    return number


_CLID = re.compile(r'^\s*"?([^"<]*)"?\s*<([^>]*)>\s*$')


def _is_external(number: str, options: CdrOptions) -> bool:
    if len(number) <= options.extension_max_digits:  # cheap first: most CDR rows have an extension in them
        return False
    return _external(number, options.extension_max_digits, options.region)


@lru_cache(maxsize=65536)  # pure, and a file repeats its numbers: the hotline on every row, each caller's calls
def _external(number: str, extension_max_digits: int, region: str) -> bool:
    digits = clean(number).lstrip("+")
    return len(digits) > extension_max_digits and to_e164(number, region) is not None


def _direction(row: Mapping[str, str], src: str, dst: str, options: CdrOptions) -> str | None:
    """in/out from an explicit column or from who is an extension; None for an internal call."""
    src_out, dst_out = _is_external(src, options), _is_external(dst, options)
    given = row.get("direction", "").strip().lower()
    if given in ("in", "inbound", "incoming") and src_out:
        return "in"
    if given in ("out", "outbound", "outgoing") and dst_out:
        return "out"
    if src_out:
        return "in"
    if dst_out:
        return "out"
    if not src.strip() or clean(src).lower() in ("anonymous", "unknown", "private"):
        return "in"  # a withheld caller is a customer too
    return None


_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]+(;\d+)?$")


def _agent(channel: str) -> str | None:
    """``SIP/201-0000001a`` → ``SIP/201``: the peer that took the call."""
    channel = channel.strip()
    if not channel:
        return None
    return _CHANNEL_SUFFIX.sub("", channel)


def row_record(row: Mapping[str, str], options: CdrOptions, *, source: str) -> CallRecord | None:
    """One CDR row (our field names → text) → a call record; None for an internal call; RowError if bad."""
    return _stripped_record({k: v.strip() for k, v in row.items()}, options, source)


def _stripped_record(row: dict[str, str], options: CdrOptions, source: str) -> CallRecord | None:
    """``row_record`` of a row whose values are stripped already, and which the record keeps as its raw."""
    src, dst = row.get("src", ""), row.get("dst", "")
    caller_name = row.get("caller_name") or None
    if (match := _CLID.match(row.get("clid", ""))) is not None:
        caller_name = caller_name or match.group(1).strip() or None
        src = src or match.group(2).strip()
    if not dst:
        raise RowError("dst (the called number) is empty")
    start = parse_time(row.get("start", ""), options.timezone)
    answer = parse_time(row.get("answer", ""), options.timezone)
    end = parse_time(row.get("end", ""), options.timezone)
    if start is None and end is None:
        raise RowError("both start and end times are empty")
    duration, billsec = _number(row, "duration"), _number(row, "billsec")
    if end is None and start is not None and duration is not None:
        end = start + timedelta(seconds=duration)
    if start is not None and end is not None and end < start:
        raise RowError(f"end {row.get('end')!r} is before start {row.get('start')!r}")
    disposition_text = row.get("disposition", "").strip('"')
    answered = answer is not None or bool(billsec)
    disposition = _disposition(disposition_text, answered)
    direction = _direction(row, src, dst, options)
    if direction is None:
        return None
    lastapp = row.get("lastapp", "")
    if direction == "in" and lastapp.lower() in options.voicemail_apps and disposition is Disposition.ANSWERED:
        disposition = Disposition.VOICEMAIL
    wait, talk = durations(start, answer, end)
    if billsec is not None and disposition in (Disposition.ANSWERED, Disposition.FORWARDED, Disposition.VOICEMAIL):
        talk = billsec
    if (explicit_wait := _number(row, "wait")) is not None:
        wait = explicit_wait
    elif wait is None and duration is not None and billsec is not None:
        wait = max(duration - billsec, 0.0)
    queue = row.get("queue") or (row.get("lastdata", "").split(",")[0] if lastapp.lower() == "queue" else None)
    agent = row.get("agent") or (_agent(row.get("dstchannel", "")) if disposition is Disposition.ANSWERED else None)
    external_id = row.get("uniqueid") or row.get("linkedid") or _synthetic_id(row)
    extra = {k: row[k] for k in ("accountcode", "dcontext", "userfield", "amaflags") if row.get(k)}
    return CallRecord(
        external_id=external_id,
        direction=direction,
        caller=src,
        callee=dst,
        disposition=disposition,
        cause=disposition_text,
        source=source,
        caller_name=caller_name,
        queue=queue or None,
        agent=agent,
        started_at=start,
        answered_at=answer,
        ended_at=end,
        wait_s=wait,
        talk_s=talk,
        recording_url=row.get("recording_url") or None,
        transcript=row.get("transcript") or None,
        linked_id=row.get("linkedid") or None,
        raw=row,  # made for this record by the caller, never changed after
        extra=extra,
    )


def _disposition(text: str, answered: bool) -> Disposition:
    word = text.upper()
    if word in _ASTERISK_DISPOSITIONS:
        return _ASTERISK_DISPOSITIONS[word]
    if not word:
        raise RowError("disposition is empty")
    if not _CAUSE_WORD.match(word):
        raise RowError(f"disposition {text!r} is neither an Asterisk disposition nor a hangup cause")
    if word in _FS_CAUSES and (not answered or _FS_CAUSES[word] is Disposition.FORWARDED):
        return _FS_CAUSES[word]
    if answered:
        return Disposition.ANSWERED  # the cause says how an established call ended
    return Disposition.NO_ANSWER if word == "NORMAL_CLEARING" else Disposition.FAILED


def _synthetic_id(row: Mapping[str, str]) -> str:
    """Rows without uniqueid still dedupe on re-import: a digest of what identifies the call."""
    key = "\x1f".join(row.get(k, "") for k in ("start", "src", "dst", "channel", "dstchannel", "end"))
    return "cdr-" + hashlib.sha1(key.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------- mod_json_cdr


def _json_objects(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line, object, error) for a file of one object, an array of them, or JSON lines."""
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    in_array = False
    while pos < end:
        while pos < end and (text[pos].isspace() or (in_array and text[pos] == ",")):
            pos += 1
        if pos >= end:
            return
        if text[pos] == "[" and not in_array:
            in_array, pos = True, pos + 1
            continue
        if in_array and text[pos] == "]":
            in_array, pos = False, pos + 1
            continue
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield line, None, f"not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
            nxt = text.find("\n{", pos + 1)
            pos = end if nxt < 0 else nxt + 1
            continue
        yield line, obj, None


def _fs_value(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = str(value)
    return unquote(text) if "%" in text else text  # encode-values=true URL-encodes every value


def _epoch(value: str) -> datetime | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not seconds > 0:  # 0 (and NaN) mean "never", as for an unanswered call
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise RowError(f"epoch {value!r} is not a time we can read") from None


def json_row(obj: Mapping[str, Any]) -> dict[str, str]:
    """A mod_json_cdr record as our fields: variables first, the caller profile where they are missing."""
    variables = obj.get("variables")
    if not isinstance(variables, Mapping):
        raise RowError("no variables object (not a mod_json_cdr record)")
    row: dict[str, str] = {}
    for name, key in FS_VARIABLES.items():
        value = _fs_value(variables.get(name))
        if value and key not in row:
            row[key] = value
    callflow = obj.get("callflow")
    flow = callflow[0] if isinstance(callflow, list) and callflow else callflow
    profile = flow.get("caller_profile") if isinstance(flow, Mapping) else None
    if isinstance(profile, Mapping):
        for name, key in (("caller_id_number", "src"), ("destination_number", "dst"), ("caller_id_name", "caller_name"),
                          ("uuid", "uniqueid"), ("context", "dcontext")):  # fmt: skip
            value = _fs_value(profile.get(name))
            if value and key not in row:
                row[key] = value
    for key, fallback in (("src", "sip_from_user"), ("dst", "sip_to_user"), ("uniqueid", "call_uuid")):
        if key not in row and (value := _fs_value(variables.get(fallback))):
            row[key] = value
    for key, var in (("start", "start_epoch"), ("answer", "answer_epoch"), ("end", "end_epoch")):
        value = _fs_value(variables.get(var))
        if value:
            at = _epoch(value)  # epochs are exact and zone-free: prefer them to the local stamps
            if at is not None:
                row[key] = at.isoformat()
            elif key == "answer":
                row.pop("answer", None)
    if transcript := _fs_value(variables.get("voicemail_transcription") or variables.get("transcript")):
        row["transcript"] = transcript
    return row


def _parse_json(text: str, options: CdrOptions, first_line: int) -> ParsedCdr:
    result = ParsedCdr()
    for line, obj, error in _json_objects(text):
        number = line + first_line - 1
        if error is not None:
            result.bad.append(BadRow(line=number, reason=error, text=""))
            continue
        if not isinstance(obj, Mapping):
            result.bad.append(BadRow(line=number, reason="expected a JSON object", text=str(obj)[:200]))
            continue
        try:
            record = row_record(json_row(obj), options, source="freeswitch-json")
        except RowError as exc:
            result.bad.append(BadRow(line=number, reason=str(exc), text=""))
            continue
        result.keep(number, record)
    return result
