"""JSON encoding of the model, shared by the store backends, the events and the REST API.

Both directions are compiled once per dataclass, from its type hints, into one generated function:
the store encodes and decodes a conversation (with its last FAQ tries and their hits, some eighty
objects) on every message, and walking them generically with ``isinstance`` chains cost more than
everything else the store did (465 µs to encode and 329 µs to decode such a conversation; compiled,
about a tenth of that). The generated code is what a hand-written codec would be, so the generic
path survives only for ``Mapping``/``Any`` fields such as ``meta``.

A decoder accepts what older versions wrote: a missing field takes its default and an unknown one
is ignored, so a record stored before a field was added or after one was dropped still loads.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import orjson

from core.model import Conversation, Identity

T = TypeVar("T")
Decoder = Callable[[Any], Any]
Encoder = Callable[[Any], Any]


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for any model value (dataclasses through their compiled encoder)."""
    # Exact types first: a channel's ``meta`` is mostly plain dicts, strings and numbers, and the ABC
    # checks below (Mapping) cost more than the rest of the walk.
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return _plain_dict(value)
    if kind is list or kind is tuple:
        return [to_jsonable(v) for v in value]
    encode = _DIRECT.get(kind)  # a model dataclass seen before: straight to its compiled encoder
    if encode is not None:
        return encode(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, Identity):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encoder_for(type(value))(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})
_STR_KEYS = frozenset({str})


def _plain_dict(value: dict[Any, Any]) -> dict[str, Any]:
    """``{str(k): to_jsonable(v)}``, with strings, numbers and None taken as they are without a call: a
    message's ``meta`` is a flat dict of them, encoded with every message (a call per value cost more than
    the rest of the message's encoding). One made of nothing else (string keys, such values) is copied as it
    is, the types checked in C: half the time of the loop below, which a CDR import ran for every row."""
    if _PLAIN_VALUES.issuperset(map(type, value.values())) and _STR_KEYS.issuperset(map(type, value)):
        return dict(value)
    out: dict[str, Any] = {}
    for k, v in value.items():
        kind = type(v)
        out[k if type(k) is str else str(k)] = (
            v if kind is str or kind is int or kind is float or kind is bool or v is None else to_jsonable(v)
        )
    return out


# orjson walks dicts, lists, strings and numbers itself (an event's data is already such a tree) and hands
# each model object to to_jsonable, so an Identity stays "kind:value" and a datetime its isoformat().
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class Encoded(dict[str, Any]):
    """A dict of plain JSON values made together with its ``dumps`` text, which ``dumps`` returns as it is: an
    event's data whose text was made with its message's row (``events.message_created``), so it is not encoded a
    second time. Like every event's data it is never changed once made; a copy (``dict(...)``) is a plain dict."""

    __slots__ = ("text",)

    def __init__(self, value: dict[str, Any], text: str) -> None:
        super().__init__(value)
        self.text = text


def dumps(value: Any) -> str:
    """The one JSON text form the stores keep: compact UTF-8, Chinese left readable (what
    ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` writes, at a tenth of its cost)."""
    if type(value) is Encoded:
        return value.text
    encode = _DIRECT.get(type(value))  # what orjson's ``default`` would call, without the detour
    text = orjson.dumps(value if encode is None else encode(value), default=to_jsonable, option=_OPTIONS).decode()
    memo = _MEMOS.get(type(value))
    if memo is not None:
        memo.keep(text, value)
    return text


def loads(cls: type[T], text: str | bytes) -> T:
    memo = _MEMOS.get(cls)
    if memo is None or not isinstance(text, str):
        return from_jsonable(cls, orjson.loads(text))
    found: T | None = memo.get(text)
    if found is None:
        found = from_jsonable(cls, orjson.loads(text))
        memo.keep(text, found)
    return found


class _TextMemo:
    """The values of the last few texts written or read, keyed by the whole text.

    Frozen values decoded from equal texts are equal, so handing back the one decoded before is the
    same as decoding again; the store is still read every time, only the decoding is saved. Used for
    the conversation, which every message reads and writes back (the bot's tries make it the biggest
    record), so a text written by one message is usually the next one read.
    """

    __slots__ = ("_size", "_values")

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: dict[str, Any] = {}

    def get(self, text: str) -> Any:
        return self._values.get(text)

    def keep(self, text: str, value: Any) -> None:
        if len(self._values) >= self._size:
            self._values.clear()  # cheaper than LRU bookkeeping, and a miss only costs one decode
        self._values[text] = value


def from_jsonable(cls: type[T], data: Mapping[str, Any]) -> T:
    result: T = decoder_for(cls)(data)
    return result


_MEMOS: dict[type, _TextMemo] = {Conversation: _TextMemo(4096)}


# compilation ------------------------------------------------------------------------------------------
_ENCODERS: dict[type, Encoder] = {}
_DECODERS: dict[Any, Decoder] = {}
_names = itertools.count()


_DIRECT: dict[type, Encoder] = {}  # the dataclasses ``to_jsonable`` encodes with their compiled encoder
_NOT_DIRECT = (Identity, datetime, enum.Enum, str, int, float)  # ``to_jsonable`` takes these first


def encoder_for(cls: type) -> Encoder:
    found = _ENCODERS.get(cls)
    if found is None:
        found = _ENCODERS[cls] = _Lazy(lambda: _compile_encoder(cls))
        if not issubclass(cls, _NOT_DIRECT):
            _DIRECT[cls] = found
    return found


def decoder_for(tp: Any) -> Decoder:
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _build_decoder(tp)
    return found


class _Lazy:
    """Compiles on first call, so types that refer to themselves (or each other) never recurse at build."""

    __slots__ = ("_build", "_fn")

    def __init__(self, build: Callable[[], Callable[[Any], Any]]) -> None:
        self._build = build
        self._fn: Callable[[Any], Any] | None = None

    def __call__(self, value: Any) -> Any:
        fn = self._fn
        if fn is None:
            fn = self._fn = self._build()
        return fn(value)


def _optional_inner(tp: Any) -> Any | None:
    """X for ``X | None``; None when ``tp`` is not an optional."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _encode_expr(tp: Any, expr: str, env: dict[str, Any]) -> str:
    """Python source that turns ``expr`` (a value of type ``tp``) into plain JSON types."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"(None if {expr} is None else {_encode_expr(inner, expr, env)})"
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            var = f"_x{next(_names)}"
            item = _encode_expr(args[0], var, env)
            return f"list({expr})" if item == var else f"[{item} for {var} in {expr}]"
    if tp in (str, int, float, bool):
        return expr
    if tp is datetime:
        return f"{expr}.isoformat()"
    if tp is Identity:
        return f"str({expr})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if issubclass(tp, str) and all(str.__str__(m) == m.value for m in tp):
            # A StrEnum's value is its text: copied out in C, where ``.value`` is a Python descriptor call (a
            # message has four, a ticket five, and a CDR import encodes several of each per row).
            env["_text"] = str.__str__
            return f"_text({expr})"
        return f"{expr}.value"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = f"_enc{next(_names)}"
        env[name] = encoder_for(tp)
        return f"{name}({expr})"
    env["_generic"] = to_jsonable
    return f"_generic({expr})"


def _compile_encoder(cls: type) -> Encoder:
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {}
    items = ", ".join(f"{f.name!r}: {_encode_expr(hints[f.name], f'v.{f.name}', env)}" for f in dataclasses.fields(cls))
    source = f"def encode(v):\n    return {{{items}}}\n"
    exec(compile(source, f"<encoder {cls.__qualname__}>", "exec"), env)
    encode: Encoder = env["encode"]
    return encode


def _keep(value: Any) -> Any:
    return value


def _build_decoder(tp: Any) -> Decoder:
    inner = _optional_inner(tp)
    if inner is not None:
        item = decoder_for(inner)
        return lambda v: None if v is None else item(v)
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = decoder_for(typing.get_args(tp)[0])
        if item is _keep:
            return tuple
        return lambda v: tuple([item(x) for x in v])
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return dict
    if tp is Identity:
        return Identity.parse
    if tp is datetime:
        return datetime.fromisoformat
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.value: m for m in tp}
        return lambda v: members[v] if v in members else tp(v)  # tp(v) raises the usual ValueError
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _Lazy(lambda: _compile_decoder(tp))
    return _keep


def _compile_decoder(cls: type) -> Decoder:
    """A fast path that reads every field by name, and the tolerant path when a field is missing."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    env: dict[str, Any] = {"cls": cls}
    args = []
    for f in fields:
        decode = decoder_for(hints[f.name])
        if decode is _keep:
            args.append(f"{f.name}=d[{f.name!r}]")
        else:
            env[f"_d_{f.name}"] = decode
            args.append(f"{f.name}=_d_{f.name}(d[{f.name!r}])")
    env["_tolerant"] = _tolerant_decoder(cls, {f.name: decoder_for(hints[f.name]) for f in fields})
    source = (
        "def decode(d):\n"
        f"    if len(d) != {len(fields)}:\n"
        "        return _tolerant(d)\n"
        "    try:\n"
        f"        return cls({', '.join(args)})\n"
        "    except KeyError:\n"
        "        return _tolerant(d)\n"
    )
    exec(compile(source, f"<decoder {cls.__qualname__}>", "exec"), env)
    decode_fn: Decoder = env["decode"]
    return decode_fn


def _tolerant_decoder(cls: type, fields: dict[str, Decoder]) -> Decoder:
    def decode(data: Mapping[str, Any]) -> Any:
        return cls(**{name: fields[name](value) for name, value in data.items() if name in fields})

    return decode
