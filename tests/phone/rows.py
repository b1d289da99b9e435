"""CDR rows built from the documented layouts (cdr_csv.c's Master.csv order, cdr_csv.conf.xml templates)."""

from __future__ import annotations

import json
from typing import Any

from connectors.phone.cdr import ASTERISK_BASE, FS_TEMPLATES

_NUMERIC = {"duration", "billsec", "sequence"}


def asterisk(extra: tuple[str, ...] = ("uniqueid",), **values: str) -> str:
    """One Master.csv line: strings double-quoted, numbers bare, as cdr_csv writes them."""
    row: dict[str, str] = {
        "accountcode": "", "src": "13800138000", "dst": "4008001234", "dcontext": "from-trunk",
        "clid": '"Li Lei" <13800138000>', "channel": "SIP/trunk-00000001", "dstchannel": "SIP/201-00000002",
        "lastapp": "Dial", "lastdata": "SIP/201,30", "start": "2024-03-01 09:00:00",
        "answer": "2024-03-01 09:00:12", "end": "2024-03-01 09:05:12", "duration": "312", "billsec": "300",
        "disposition": "ANSWERED", "amaflags": "DOCUMENTATION", "uniqueid": "1709254800.1", "userfield": "",
        "peeraccount": "", "linkedid": "1709254800.1", "sequence": "7",
    }  # fmt: skip
    row.update(values)
    out = []
    for name in (*ASTERISK_BASE, *extra):
        value = row[name]
        out.append(value if name in _NUMERIC else '"' + value.replace('"', '""') + '"')
    return ",".join(out)


def freeswitch(template: str = "example", **values: str) -> str:
    """One cdr_csv line of a stock template (every variable quoted, as the templates write them)."""
    row: dict[str, str] = {
        "caller_id_name": "Han Meimei", "caller_id_number": "13900139000", "destination_number": "4008001234",
        "context": "public", "start_stamp": "2024-03-01 10:00:00", "answer_stamp": "2024-03-01 10:00:05",
        "end_stamp": "2024-03-01 10:01:05", "duration": "65", "billsec": "60", "hangup_cause": "NORMAL_CLEARING",
        "uuid": "6b0b2a7e-0c8b-4d9b-9a43-0f4f0d9b0001", "bleg_uuid": "", "accountcode": "", "read_codec": "PCMA",
        "write_codec": "PCMA",
    }  # fmt: skip
    row.update(values)
    return ",".join('"' + row.get(name, "") + '"' for name in FS_TEMPLATES[template].split())


def fs_json(encode: bool = False, **variables: Any) -> str:
    """A mod_json_cdr record: variables (URL-encoded with encode-values=true) and a caller profile."""
    base: dict[str, Any] = {
        "uuid": "9f1c1f4e-1111-4c6b-8a5e-000000000001", "direction": "inbound",
        "start_epoch": "1709258400", "answer_epoch": "1709258405", "end_epoch": "1709258465",
        "start_stamp": "2024-03-01 10:00:00", "hangup_cause": "NORMAL_CLEARING", "duration": "65", "billsec": "60",
        "waitsec": "5",
    }  # fmt: skip
    base.update(variables)
    if encode:
        from urllib.parse import quote

        base = {k: quote(str(v)) for k, v in base.items()}
    record = {
        "core-uuid": "c0e1",
        "channel_data": {"state": "CS_REPORTING", "direction": "inbound"},
        "variables": base,
        "callflow": [
            {
                "caller_profile": {
                    "caller_id_name": "Han Meimei",
                    "caller_id_number": "13900139000",
                    "destination_number": "4008001234",
                    "uuid": base["uuid"],
                    "context": "public",
                }
            }
        ],
    }
    return json.dumps(record)
