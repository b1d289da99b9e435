"""``huiliu doctor``: against a real Dovecot and SMTP sink, one line per check, non-zero when one fails."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.doctor import diagnose
from tests.conftest import ROOT
from tests.email.conftest import PASSWORD, Dovecot, SmtpSink


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, *, password: str, **extra: Any) -> Path:
    data = {
        "data_dir": str(tmp_path / "data"),
        "api": {"tokens": ["doctor-token-0123456789"]},
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [
            {
                "name": "support",
                "channel": "email",
                "address": "support@example.test",
                "imap": {"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "user": dovecot.user(),
                         "password": password},
                "smtp": {"host": "127.0.0.1", "port": sink.port, "tls": "none"},
            },
            *extra.pop("inboxes", []),
        ],
        **extra,
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def test_doctor_passes_a_working_setup(tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink) -> None:
    # A loopback receiver: the subscription allows plain http to a private address explicitly.
    hook = {
        "url": "http://localhost:9/hook",
        "name": "desk",
        "secrets": ["s" * 16],
        "allow_http": True,
        "allow_private": True,
    }
    webhooks = [hook]
    path = await asyncio.to_thread(_write, tmp_path, dovecot, smtp_sink, password=PASSWORD, webhooks=webhooks)
    checks = await diagnose(path)
    assert [c.name for c in checks] == [
        "config", "knowledge base", "data_dir", "store", "imap support", "smtp support", "webhook desk"
    ]  # fmt: skip
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert "INBOX opens" in checks[4].detail


def test_doctor_names_each_failure_with_its_fix(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        dovecot,
        smtp_sink,
        password="wrong-password",
        webhooks=[{"url": "https://no-such-host.invalid/hook", "name": "desk", "secrets": ["s" * 16]}],
        inboxes=[{"name": "oa", "channel": "wechat", "token": "tok123", "app_id": "wx1", "app_secret": "very-secret",
                  "api_base": f"http://127.0.0.1:{_closed_port()}"}],
    )  # fmt: skip
    assert main(["doctor", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    lines = {line.split(":", 1)[0]: line for line in out.splitlines()}
    assert lines["ok    config"] and lines["ok    smtp support"]
    assert "fix: check inboxes[0].imap" in lines["FAIL  imap support"]
    assert "fix: check inboxes[1].api_base" in lines["FAIL  wechat oa"]
    assert "fix: check webhooks[0].url" in lines["FAIL  webhook desk"]
    assert "very-secret" not in out and "wrong-password" not in out
    assert out.rstrip().endswith("5 of 8 checks passed")


def test_doctor_reports_a_bad_config_by_its_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: nope\n", encoding="utf-8")
    assert main(["doctor", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  config:") and "server.port" in out
