"""Every error message the README quotes is the one the program prints: each is produced here and found there.

Both ways: each message below must be in README.md verbatim, and every ``huiliu: ...`` line or CDR report line
in README.md must be one of them. Paths and ports that vary from run to run read as in the README.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import ROOT
from tests.phone.test_cdr_import import master_csv
from tests.phone.test_cdr_import import write_config as phone_config

SHOWN_DIR = "/srv/huiliu"  # where the README's examples live

CONFIGS = {
    "bad value": "server:\n  port: eighty\n",
    "typo": "inboxes:\n  - name: web\n    channel: webchat\n    alowed_origins: []\n",
    "yaml": "server:\n  port: 8080\n  host: [127.0.0.1\nbot:\n  kb: kb/faq.yaml\n",
    "missing kb": "bot:\n  kb: kb/faqs.yaml\n",
}


def readme_lines() -> list[str]:
    return [line.strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()]


def contains_run(lines: list[str], run: list[str]) -> bool:
    return any(lines[i : i + len(run)] == run for i in range(len(lines) - len(run) + 1))


def serve_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, *extra: str) -> list[str]:
    (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
    assert main(["serve", "-c", "config.yaml", *extra]) == 2
    return [line.strip() for line in capsys.readouterr().err.replace(str(tmp_path), SHOWN_DIR).splitlines()]


@pytest.fixture
def messages(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUILIU_KB", str(ROOT / "kb" / "faq.yaml"))
    out = [serve_error(tmp_path, capsys, text) for text in CONFIGS.values()]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sample = (ROOT / "config.yaml").read_text(encoding="utf-8")
        lines = serve_error(tmp_path, capsys, sample, "--port", str(port))
        out.append([line.replace(f"127.0.0.1:{port}", "127.0.0.1:8080") for line in lines])
    csv = tmp_path / "Master.csv"
    csv.write_text(master_csv(), encoding="utf-8")
    assert main(["calls", "import", str(csv), "--format", "asterisk-csv", "-c", str(phone_config(tmp_path))]) == 1
    out.append(["# " + line.strip() if not line.startswith("  ") else "#   " + line.strip()
                for line in capsys.readouterr().out.splitlines()])  # fmt: skip
    return out


def test_every_message_the_readme_quotes_is_the_real_one(messages: list[list[str]]) -> None:
    lines = readme_lines()
    for message in messages:
        assert contains_run(lines, message), "README.md does not quote:\n" + "\n".join(message)
    real = {line for message in messages for line in message}
    quoted = [line for line in lines if line.startswith(("huiliu: ", "# imported ", "#   line "))]
    assert quoted and all(line in real for line in quoted), set(quoted) - real
