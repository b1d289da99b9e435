"""A CDR file's lines are read through one CSV reader, each exactly as a reader of that line alone reads it."""

from __future__ import annotations

import csv

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.phone.cdr import CdrFormat, CdrOptions, _StrictLines, parse_cdr

# Quotes (stray, doubled, unbalanced), delimiters, blanks, a NUL and a backslash: what breaks a line's quoting.
_PIECES = st.sampled_from(['"', ",", ";", "a", " ", "\t", '""', "\x00", 'b"', "\\", "中", "'"])
_LINE = st.lists(_PIECES, max_size=14).map("".join)


def alone(line: str, delimiter: str) -> list[str] | None:
    """The line read by a strict reader of its own (what the parse did for every line)."""
    try:
        return next(csv.reader((line,), delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration):
        return None


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=25), delimiter=st.sampled_from([",", ";"]), data=st.data())
def test_each_line_reads_as_it_reads_alone_in_any_order(lines: list[str], delimiter: str, data: st.DataObject) -> None:
    """A quoted field left open at a line's end fails that line only (the next line is never read into it), an
    error leaves the reader usable, and a line may be read again or out of order."""
    strict = _StrictLines(lines, delimiter)
    order = data.draw(st.lists(st.integers(0, len(lines) - 1), max_size=40))
    for index in [*range(len(lines)), *order]:
        assert strict.fields(index) == alone(lines[index], delimiter)


def test_a_broken_line_between_good_rows_spoils_neither() -> None:
    """An Asterisk row whose quote never closes is bad on its own line; the rows around it import."""
    good = (
        '"","13800138000","4008001234","from-trunk","""C"" <13800138000>","SIP/trunk-1","SIP/201-1","Queue",'
        '"sales,t","2024-03-01 09:00:00","2024-03-01 09:00:10","2024-03-01 09:01:00",60,50,"ANSWERED",'
        '"DOCUMENTATION","{id}",""'
    )
    broken = good.format(id="2.1").replace('"sales,t"', '"sales,t').replace(',""', ',"')
    text = "\n".join([good.format(id="1.1"), broken, good.format(id="3.1")]) + "\n"
    parsed = parse_cdr(text, CdrFormat.ASTERISK_CSV, CdrOptions())
    assert [(line, record.external_id) for line, record in parsed.records] == [(1, "1.1"), (3, "3.1")]
    assert [bad.line for bad in parsed.bad] == [2]
