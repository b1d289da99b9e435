"""``huiliu doctor -c config.yaml``: check the config and everything it names, one line per check with a fix."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bot.faq import KbError, read_kb
from core.config import Config, ConfigError, EmailInbox, PhoneInbox, RedisStoreConfig, WechatInbox, load_config
from core.store import open_store

_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # worth knowing, not a failure

    def line(self) -> str:
        mark = "ok  " if self.ok else ("warn" if self.warning else "FAIL")
        fix = f" — fix: {self.fix}" if self.fix and not self.ok else ""
        return f"{mark}  {self.name}: {self.detail}{fix}"

    @property
    def failed(self) -> bool:
        return not self.ok and not self.warning


async def diagnose(path: Path) -> list[Check]:
    try:
        config = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        return [Check(name="config", ok=False, detail=str(exc), fix="correct the key named above")]
    checks = [Check(name="config", ok=True, detail=f"{path} is valid")]
    checks.append(await _kb(config))
    checks.append(await _data_dir(config))
    checks.append(await _store(config))
    if not config.api.tokens:
        checks.append(Check(name="api tokens", ok=False, warning=True, detail="none configured: the REST API, "
                            "/metrics and the dashboard refuse every request", fix="add api.tokens"))  # fmt: skip
    for n, inbox in enumerate(config.inboxes):
        where = f"inboxes[{n}]"
        if isinstance(inbox, EmailInbox):
            checks.append(await _mail(f"imap {inbox.name}", inbox, "imap", f"check {where}.imap (host, port, tls, "
                                      "user, password) and that the server is reachable from here"))  # fmt: skip
            checks.append(await _mail(f"smtp {inbox.name}", inbox, "smtp", f"check {where}.smtp (host, port, tls, "
                                      "user, password) and that the server is reachable from here"))  # fmt: skip
        elif isinstance(inbox, WechatInbox):
            checks.append(await _wechat(inbox, where))
        elif isinstance(inbox, PhoneInbox) and inbox.cdr.watch_folder:
            checks.append(await _folder(config, inbox, where))
    for n, hook in enumerate(config.webhooks):
        checks.append(await _dns(f"webhook {hook.key}", hook.url, f"check webhooks[{n}].url and this host's DNS"))
    return checks


async def _guard(name: str, fix: str, probe: Callable[[], Awaitable[str]]) -> Check:
    try:
        return Check(name=name, ok=True, detail=await asyncio.wait_for(probe(), _TIMEOUT_S * 2))
    except Exception as exc:  # every failure is a line of the report, never a traceback
        return Check(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}".rstrip(": "), fix=fix)


async def _kb(config: Config) -> Check:
    path = config.resolve(config.bot.kb)
    try:
        kb = await asyncio.to_thread(read_kb, path)
    except KbError as exc:
        return Check(name="knowledge base", ok=False, detail=str(exc), fix="correct the file, or bot.kb")
    return Check(name="knowledge base", ok=True, detail=f"{len(kb.entries)} entries in {path}")


async def _data_dir(config: Config) -> Check:
    def probe() -> str:
        directory = config.data_path
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
        return f"{directory} is writable"

    return await _guard("data_dir", "create the folder and let the gateway's user write to it (data_dir)",
                        lambda: asyncio.to_thread(probe))  # fmt: skip


async def _store(config: Config) -> Check:
    async def probe() -> str:
        store = open_store(config)
        await store.open()
        try:
            if not await store.ping():
                raise ConnectionError("the store does not answer")
        finally:
            await store.close()
        if isinstance(config.store, RedisStoreConfig):
            return f"Redis at {_without_password(config.store.url)} answers"
        return "SQLite opens and answers"

    fix = "start Redis or correct store.url" if isinstance(config.store, RedisStoreConfig) else "check store.path"
    return await _guard("store", fix, probe)


async def _mail(name: str, inbox: EmailInbox, which: str, fix: str) -> Check:
    from connectors.email.probe import check_imap, check_smtp  # only a mail deployment imports the clients

    return await _guard(name, fix, lambda: check_imap(inbox) if which == "imap" else check_smtp(inbox))


async def _wechat(inbox: WechatInbox, where: str) -> Check:
    """The token endpoint answers; asked without credentials, so no token is fetched or rotated."""

    async def probe() -> str:
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            url = inbox.api_base.rstrip("/") + "/cgi-bin/token"
            async with http.get(url, params={"grant_type": "client_credential"}) as resp:
                body = await resp.text()
                if resp.status >= 500:
                    raise ConnectionError(f"HTTP {resp.status}")
        return f"{url} answers (HTTP {resp.status}, {len(body)} bytes)"

    return await _guard(f"wechat {inbox.name}", f"check {where}.api_base and outbound HTTPS from this host", probe)


async def _folder(config: Config, inbox: PhoneInbox, where: str) -> Check:
    folder = config.resolve(inbox.cdr.watch_folder or "")

    async def probe() -> str:
        readable = await asyncio.to_thread(lambda: folder.is_dir() and os.access(folder, os.R_OK | os.X_OK))
        if not readable:
            raise FileNotFoundError(f"{folder} is not a readable folder")
        return f"{folder} is readable"

    return await _guard(f"cdr folder {inbox.name}", f"create it or correct {where}.cdr.watch_folder", probe)


async def _dns(name: str, url: str, fix: str) -> Check:
    host = urlsplit(url).hostname or ""

    async def probe() -> str:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        addresses = sorted({str(info[4][0]) for info in found})
        return f"{host} resolves to {', '.join(addresses[:3])}"

    return await _guard(name, fix, probe)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def run(path: Path) -> int:
    checks = asyncio.run(diagnose(path))
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(c.failed for c in checks)
    print(f"{len(checks) - failed} of {len(checks)} checks passed" if failed else f"all {len(checks)} checks passed")
    return 1 if failed else 0
