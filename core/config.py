"""config.yaml → typed, validated config; secrets come from ``${ENV}`` references."""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """A config problem, naming the key path and what was expected."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 1 << 20
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 10.0


class SqliteStoreConfig(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "huiliu.sqlite3"  # relative paths live under data_dir


StoreConfig = SqliteStoreConfig


class ApiConfig(_Model):
    tokens: tuple[Annotated[str, Field(min_length=8)], ...] = ()


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessHours(_Model):
    timezone: str = "Asia/Shanghai"
    days: tuple[Weekday, ...] = _WEEKDAYS[:5]
    start: time = time(9, 0)
    end: time = time(18, 0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHours:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def weekday_numbers(self) -> frozenset[int]:
        return frozenset(_WEEKDAYS.index(d) for d in self.days)


class BotMessages(_Model):
    handoff: str = "正在为您转接人工客服，请稍候。/ Connecting you to a human agent, please wait."
    handoff_off_hours: str = (
        "现在是非工作时间，人工客服上班后会第一时间回复您。/ "
        "Our agents are offline now; they will reply as soon as they are back."
    )
    suggest: str = "您是想问以下问题吗？/ Did you mean:"
    miss: str = (
        "抱歉，我没有理解您的问题，请换个说法，或输入“转人工”。/ Sorry, I didn't get that. Rephrase, or type 'human'."
    )
    welcome: str = ""


class BotConfig(_Model):
    kb: str = "kb/faq.yaml"
    answer_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    suggest_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    margin: Annotated[float, Field(ge=0, le=1)] | None = None
    max_suggestions: Annotated[int, Field(ge=1, le=10)] = 3
    max_misses: Annotated[int, Field(ge=1)] = 2
    human_phrases: tuple[str, ...] | None = None
    business_hours: BusinessHours | None = None
    messages: BotMessages = BotMessages()

    @model_validator(mode="after")
    def _ordered(self) -> BotConfig:
        if (
            self.answer_threshold is not None
            and self.suggest_threshold is not None
            and self.suggest_threshold > self.answer_threshold
        ):
            raise ValueError("suggest_threshold must not exceed answer_threshold")
        return self


class WebchatInbox(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    channel: Literal["webchat"]
    path: Annotated[str, Field(pattern=r"^/[a-z0-9/_-]*$")] = "/chat"
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: Annotated[int, Field(gt=0, le=1 << 20)] = 8192
    max_text_chars: Annotated[int, Field(gt=0)] = 4000
    heartbeat_s: Annotated[float, Field(gt=0)] = 30.0
    frames_per_minute: Annotated[int, Field(gt=0)] = 120

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"origin {origin!r} must look like scheme://host[:port] with no path, or be '*'")
        return value


_INBOX_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class WechatInbox(_Model):
    """One WeChat Official Account (公众号). Extended by the WeChat channel."""

    name: Annotated[str, Field(pattern=_INBOX_NAME)]
    channel: Literal["wechat"]
    token: Annotated[str, Field(min_length=3, max_length=32)]
    app_id: Annotated[str, Field(min_length=1)]
    app_secret: Annotated[str, Field(min_length=1)]
    encoding_aes_key: Annotated[str, Field(min_length=43, max_length=43)] | None = None
    mode: Literal["plain", "compatible", "safe"] = "plain"
    api_base: str = "https://api.weixin.qq.com"


class EmailInbox(_Model):
    """One mailbox: IMAP in, SMTP out. Extended by the email channel."""

    name: Annotated[str, Field(pattern=_INBOX_NAME)]
    channel: Literal["email"]
    address: Annotated[str, Field(min_length=3)]


class PhoneInbox(_Model):
    """One call centre: CTI events in, CDR files imported. Extended by the phone channel."""

    name: Annotated[str, Field(pattern=_INBOX_NAME)]
    channel: Literal["phone"]


InboxConfig = WebchatInbox | WechatInbox | EmailInbox | PhoneInbox


class Config(_Model):
    data_dir: str = "data"
    server: ServerConfig = ServerConfig()
    store: StoreConfig = SqliteStoreConfig()
    api: ApiConfig = ApiConfig()
    bot: BotConfig = BotConfig()
    inboxes: tuple[Annotated[InboxConfig, Field(discriminator="channel")], ...] = ()
    base_dir: Path = Path(".")  # the config file's folder: relative paths resolve against it

    @model_validator(mode="after")
    def _unique_inboxes(self) -> Config:
        seen: set[str] = set()
        for inbox in self.inboxes:
            if inbox.name in seen:
                raise ValueError(f"inbox name {inbox.name!r} is used twice")
            seen.add(inbox.name)
        paths = [i.path.rstrip("/") for i in self.inboxes if isinstance(i, WebchatInbox)]
        if len(paths) != len(set(paths)):
            raise ValueError("two web chat inboxes share one path")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)

    def inbox(self, name: str) -> InboxConfig | None:
        return next((i for i in self.inboxes if i.name == name), None)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _expand_env(node: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set (and no ${{{name}:-default}} given)")

        return _ENV_REF.sub(sub, node)
    return node


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-after"))
    loc = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", loc)
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"{loc or '<root>'}: {err['msg']}{shown}"


def parse_config(data: Any, *, base_dir: Path = Path("."), env: dict[str, str] | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("<root>: expected a mapping of settings")
    expanded = _expand_env(data, "", dict(os.environ) if env is None else env)
    try:
        return Config.model_validate({**expanded, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_describe(dict(e)) for e in exc.errors())) from None


def load_config(path: Path, env: dict[str, str] | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(data, base_dir=path.resolve().parent, env=env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
