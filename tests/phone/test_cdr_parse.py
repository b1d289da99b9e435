"""CDR parsing, pure: the documented layouts, every disposition, mappings, mangled input, bad rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.phone.call import Disposition
from connectors.phone.cdr import CdrFormat, CdrOptions, ParsedCdr, json_row, parse_cdr, parse_time
from tests.conftest import need
from tests.phone.conftest import CORPUS
from tests.phone.rows import asterisk, freeswitch, fs_json

SHANGHAI = ZoneInfo("Asia/Shanghai")
OPTIONS = CdrOptions(timezone=SHANGHAI)


def parse(text: str, fmt: CdrFormat = CdrFormat.ASTERISK_CSV, options: CdrOptions = OPTIONS) -> ParsedCdr:
    return parse_cdr(text, fmt, options)


@pytest.mark.parametrize(
    ("disposition", "answered", "expected", "missed"),
    [
        ("ANSWERED", True, Disposition.ANSWERED, False),
        ("NO ANSWER", False, Disposition.NO_ANSWER, True),
        ("BUSY", False, Disposition.BUSY, True),
        ("FAILED", False, Disposition.FAILED, True),
        ("CONGESTION", False, Disposition.CONGESTION, True),
    ],
)
def test_every_asterisk_disposition_and_empty_answer_time(
    disposition: str, answered: bool, expected: Disposition, missed: bool
) -> None:
    values = {} if answered else {"answer": "", "billsec": "0", "end": "2024-03-01 09:00:32", "duration": "32"}
    (line, record), *_ = parse(asterisk(disposition=disposition, **values)).records
    assert line == 1 and record.disposition is expected and record.missed is missed
    assert record.direction == "in" and record.external_id == "1709254800.1"
    assert record.started_at == datetime(2024, 3, 1, 1, 0, tzinfo=UTC)  # local Shanghai time → UTC
    if answered:
        assert (record.wait_s, record.talk_s, record.agent) == (12, 300, "SIP/201")
        assert record.caller_name == "Li Lei"
    else:
        assert record.answered_at is None and record.talk_s is None and record.wait_s == 32 and record.agent is None


@pytest.mark.parametrize(
    ("extra", "external_id", "linked"),
    [
        ((), None, None),
        (("uniqueid",), "1709254800.1", None),
        (("uniqueid", "userfield"), "1709254800.1", None),
        (("peeraccount", "linkedid", "sequence"), "1709254800.9", "1709254800.9"),
        (("uniqueid", "peeraccount", "linkedid", "sequence"), "1709254800.1", "1709254800.9"),
        (("uniqueid", "userfield", "peeraccount", "linkedid", "sequence"), "1709254800.1", "1709254800.9"),
    ],
)
def test_master_csv_with_and_without_the_optional_columns(
    extra: tuple[str, ...], external_id: str | None, linked: str | None
) -> None:
    text = asterisk(extra=extra, linkedid="1709254800.9", userfield="https://rec.example.com/1.wav")
    ((_, record),) = parse(text).records
    if external_id is None:
        assert record.external_id.startswith("cdr-")  # no id column: a digest that is the same on re-import
        assert parse(text).records[0][1].external_id == record.external_id
    else:
        assert record.external_id == external_id
    assert record.linked_id == linked


def test_voicemail_queue_outbound_and_internal_calls() -> None:
    text = "\n".join(
        [
            asterisk(uniqueid="1", lastapp="VoiceMail", lastdata="800@default"),
            asterisk(uniqueid="2", lastapp="Queue", lastdata="sales,t,,,300"),
            asterisk(uniqueid="3", src="201", dst="13800138000", clid='"Wang" <201>'),
            asterisk(uniqueid="4", src="201", dst="202"),
        ]
    )
    parsed = parse(text)
    records = {r.external_id: r for _, r in parsed.records}
    assert records["1"].disposition is Disposition.VOICEMAIL and records["1"].missed
    assert records["2"].queue == "sales"
    assert records["3"].direction == "out" and records["3"].customer_number == "13800138000"
    assert [(s.line, s.reason) for s in parsed.skipped] == [(4, "internal call (no customer number)")]


@pytest.mark.parametrize(
    ("cause", "answer", "expected"),
    [
        ("NORMAL_CLEARING", "2024-03-01 10:00:05", Disposition.ANSWERED),
        ("NO_USER_RESPONSE", "", Disposition.NO_ANSWER),
        ("NO_ANSWER", "", Disposition.NO_ANSWER),
        ("USER_BUSY", "", Disposition.BUSY),
        ("ORIGINATOR_CANCEL", "", Disposition.CANCEL),
        ("UNALLOCATED_NUMBER", "", Disposition.NOT_FOUND),
        ("RECOVERY_ON_TIMER_EXPIRE", "", Disposition.FAILED),
        ("NORMAL_CLEARING", "", Disposition.NO_ANSWER),
        ("MEDIA_TIMEOUT", "2024-03-01 10:00:05", Disposition.ANSWERED),
    ],
)
def test_freeswitch_example_template_hangup_causes(cause: str, answer: str, expected: Disposition) -> None:
    billsec = "60" if answer else "0"
    text = freeswitch(hangup_cause=cause, answer_stamp=answer, billsec=billsec)
    ((_, record),) = parse(text, CdrFormat.FREESWITCH_CSV).records
    assert record.disposition is expected and record.cause == cause
    assert record.external_id == "6b0b2a7e-0c8b-4d9b-9a43-0f4f0d9b0001"
    assert record.caller_name == "Han Meimei" and record.caller == "13900139000"


def test_freeswitch_template_by_name_or_text() -> None:
    line = freeswitch("asterisk", caller_id="13900139000", channel_name="sofia/external/13900139000")
    ((_, record),) = parse(line, CdrFormat.FREESWITCH_CSV, CdrOptions(timezone=SHANGHAI, template="asterisk")).records
    assert record.external_id == "6b0b2a7e-0c8b-4d9b-9a43-0f4f0d9b0001"
    template = (
        '"${uuid}","${caller_id_number}","${destination_number}","${start_stamp}","${end_stamp}","${hangup_cause}"'
    )
    options = CdrOptions(timezone=SHANGHAI, template=template)
    text = '"u-1","13900139000","4008001234","2024-03-01 10:00:00","2024-03-01 10:00:30","USER_BUSY"'
    ((_, record),) = parse(text, CdrFormat.FREESWITCH_CSV, options).records
    assert (record.external_id, record.disposition, record.wait_s) == ("u-1", Disposition.BUSY, 30)


def test_custom_column_mapping_for_cdr_custom_layouts() -> None:
    # The cdr_custom.conf sample's mapping: clid first, every value quoted, sequence last and bare.
    columns = ("clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp", "lastdata", "start", "answer",
               "end", "duration", "billsec", "disposition", "amaflags", "accountcode", "uniqueid", "userfield",
               "sequence")  # fmt: skip
    options = CdrOptions(timezone=SHANGHAI, columns=columns)
    text = (
        '"""Li Lei"" <13800138000>","13800138000","4008001234","from-trunk","PJSIP/trunk-01","","Queue",'
        '"support","2024-03-01 09:00:00","","2024-03-01 09:00:45","45","0","NO ANSWER","DOCUMENTATION","",'
        '"1709254800.5","",12'
    )
    ((_, record),) = parse(text, options=options).records
    assert record.external_id == "1709254800.5" and record.disposition is Disposition.NO_ANSWER
    assert record.queue == "support" and record.caller_name == "Li Lei" and record.wait_s == 45
    with pytest.raises(ValueError, match="unknown column names"):
        parse(text, options=CdrOptions(columns=("src", "dst", "start", "colour")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01 09:05:07", datetime(2024, 3, 1, 1, 5, 7, tzinfo=UTC)),
        ("2024/3/1 9:05", datetime(2024, 3, 1, 1, 5, tzinfo=UTC)),  # re-saved by a spreadsheet
        ("2024/3/1 9:05:07", datetime(2024, 3, 1, 1, 5, 7, tzinfo=UTC)),
        ("25/3/2024 9:05", datetime(2024, 3, 25, 1, 5, tzinfo=UTC)),  # day above 12: unambiguous
        ("3/25/2024 9:05 PM", datetime(2024, 3, 25, 13, 5, tzinfo=UTC)),
        ("45352.37847222222", datetime(2024, 3, 1, 1, 5, tzinfo=UTC)),  # an Excel serial date
        ("1709255107", datetime(2024, 3, 1, 1, 5, 7, tzinfo=UTC)),  # epoch seconds are UTC
        ("2024-03-01T01:05:07Z", datetime(2024, 3, 1, 1, 5, 7, tzinfo=UTC)),
        ('"2024-03-01 09:05:07"', datetime(2024, 3, 1, 1, 5, 7, tzinfo=UTC)),
        ("", None),
        ("0000-00-00 00:00:00", None),
    ],
)
def test_times_in_the_configured_zone_and_spreadsheet_forms(text: str, expected: datetime | None) -> None:
    parsed = parse_time(text, SHANGHAI)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None and abs((parsed - expected).total_seconds()) < 0.01


def test_stray_quotes_are_tolerated_when_the_row_is_still_unambiguous() -> None:
    good = asterisk(uniqueid="q1", disposition="NO ANSWER", answer="", billsec="0")
    doubled = good.replace('"NO ANSWER"', '"NO ANSWER""')
    unbalanced = good.replace('"from-trunk"', '"from-trunk')
    parsed = parse("\n".join([doubled, unbalanced.replace("q1", "q2")]))
    assert parsed.bad == []
    assert [(r.external_id, r.disposition) for _, r in parsed.records] == [
        ("q1", Disposition.NO_ANSWER),
        ("q2", Disposition.NO_ANSWER),
    ]


def test_bad_rows_are_reported_with_line_and_reason_while_good_rows_parse() -> None:
    lines = [
        '"accountcode","src","dst","dcontext","clid","channel","dstchannel","lastapp","lastdata","start"',
        asterisk(uniqueid="ok-1"),
        '"only","five","columns","here","x"',
        asterisk(uniqueid="bad-date", start="yesterday"),
        asterisk(uniqueid="ambiguous", start="03/04/2024 10:00", answer="", end="03/04/2024 10:01"),
        "",
        asterisk(uniqueid="backwards", end="2024-03-01 08:00:00"),
        asterisk(uniqueid="no-disposition", disposition=""),
        asterisk(uniqueid="text-billsec", billsec="lots"),
        asterisk(uniqueid="odd-word", disposition="went fine"),
        asterisk(uniqueid="no-dst", dst=""),
        asterisk(uniqueid="ok-2", disposition="BUSY", answer="", billsec="0"),
    ]
    parsed = parse("\n".join(lines) + "\n")
    assert [r.external_id for _, r in parsed.records] == ["ok-1", "ok-2"]
    assert [line for line, _ in parsed.records] == [2, 12]
    assert [(s.line, s.reason) for s in parsed.skipped] == [(1, "header")]
    assert [(b.line, b.reason) for b in parsed.bad] == [
        (3, "expected 16 to 21 columns, got 5"),
        (4, "time 'yesterday' is not a date and time we can read"),
        (5, "time '03/04/2024 10:00' is ambiguous (day/month or month/day?)"),
        (7, "end '2024-03-01 08:00:00' is before start '2024-03-01 09:00:00'"),
        (8, "disposition is empty"),
        (9, "billsec 'lots' is not a number"),
        (10, "disposition 'went fine' is neither an Asterisk disposition nor a hangup cause"),
        (11, "dst (the called number) is empty"),
    ]
    assert parsed.bad[0].text == lines[2]


def test_mod_json_cdr_records_plain_url_encoded_array_and_lines() -> None:
    plain = fs_json()
    encoded = fs_json(encode=True, uuid="9f1c1f4e-2", hangup_cause="USER_BUSY", answer_epoch="0", billsec="0")
    ((_, record),) = parse(plain, CdrFormat.FREESWITCH_JSON).records
    assert record.started_at == datetime(2024, 3, 1, 2, 0, tzinfo=UTC)  # from the epoch, not the local stamp
    assert (record.disposition, record.wait_s, record.talk_s) == (Disposition.ANSWERED, 5, 60)
    assert record.caller == "13900139000" and record.callee == "4008001234"
    array = parse(f"[{plain},\n{encoded}]", CdrFormat.FREESWITCH_JSON)
    assert [(r.external_id, r.disposition) for _, r in array.records] == [
        ("9f1c1f4e-1111-4c6b-8a5e-000000000001", Disposition.ANSWERED),
        ("9f1c1f4e-2", Disposition.BUSY),
    ]
    lines = parse("\n".join([plain, '{"variables": {"uuid": "x"', encoded, '{"no": "variables"}']),
                  CdrFormat.FREESWITCH_JSON)  # fmt: skip
    assert [line for line, _ in lines.records] == [1, 3]
    assert [(b.line, b.reason.split(":")[0]) for b in lines.bad] == [
        (2, "not valid JSON"),
        (4, "no variables object (not a mod_json_cdr record)"),
    ]


def test_the_corpus_mod_json_cdr_record_reads_as_an_answered_call() -> None:
    path = CORPUS / "freeswitch" / "cgrates_fs_json_cdr_engine_fscdr_test.json"
    need(path.exists(), f"{path} is missing")
    import json

    row = json_row(json.loads(Path(path).read_text()))
    assert row["uniqueid"] == "3da8bf84-c133-4959-9e24-e72875cb33a1"
    assert (row["src"], row["dst"], row["billsec"], row["disposition"]) == ("1001", "1002", "68", "NORMAL_CLEARING")
    assert row["answer"] == datetime.fromtimestamp(1515666347, UTC).isoformat()
    # 1001 calling 1002 is two extensions talking: no customer, so no call record.
    parsed = parse(Path(path).read_text(), CdrFormat.FREESWITCH_JSON)
    assert parsed.records == [] and [s.reason for s in parsed.skipped] == ["internal call (no customer number)"]


def test_bare_carriage_returns_end_lines_and_a_stray_one_only_spoils_its_row() -> None:
    rows = [asterisk(uniqueid=f"1709254800.{n}", linkedid=f"1709254800.{n}") for n in range(3)]
    mac = parse("\r".join(rows))  # a file saved with old Mac line endings
    assert len(mac.records) == 3 and not mac.bad
    stray = parse("\n".join([rows[0], rows[1][:40] + "\r" + rows[1][40:], rows[2]]))
    assert len(stray.records) == 2
    assert [b.line for b in stray.bad] == [2, 3]  # the broken row's two halves, reported with their lines


def test_an_epoch_out_of_range_makes_its_row_bad_not_the_file() -> None:
    good, absurd = fs_json(), fs_json(end_epoch="1701709258465000")
    parsed = parse("\n".join([good, absurd]), CdrFormat.FREESWITCH_JSON)
    assert len(parsed.records) == 1
    [bad] = parsed.bad
    assert bad.line == 2 and "1701709258465000" in bad.reason
