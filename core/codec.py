"""JSON encoding of the model, shared by the store backends and the REST API.

Decoders are built once per type from its annotations: the store decodes a conversation on every
message, so the per-call work is just the calls, not type inspection.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from core.model import Identity

T = TypeVar("T")
Decoder = Callable[[Any], Any]


def to_jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, Identity):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: to_jsonable(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def from_jsonable(cls: type[T], data: Mapping[str, Any]) -> T:
    result: T = decoder_for(cls)(data)
    return result


_DECODERS: dict[Any, Decoder] = {}


def decoder_for(tp: Any) -> Decoder:
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _build(tp)
    return found


def _keep(value: Any) -> Any:
    return value


def _build(tp: Any) -> Decoder:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = decoder_for(next(a for a in typing.get_args(tp) if a is not type(None)))
        return lambda v: None if v is None else inner(v)
    if origin is tuple:
        item = decoder_for(typing.get_args(tp)[0])
        if item is _keep:
            return tuple
        return lambda v: tuple(item(x) for x in v)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return dict
    if tp is Identity:
        return Identity.parse
    if tp is datetime:
        return datetime.fromisoformat
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    return _keep


def _dataclass_decoder(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls)
    fields: dict[str, Decoder] = {}

    def decode(data: Mapping[str, Any]) -> Any:
        if not fields:  # filled on first use, so self-referencing types do not recurse at build time
            fields.update({f.name: decoder_for(hints[f.name]) for f in dataclasses.fields(cls)})
        return cls(**{name: fields[name](value) for name, value in data.items() if name in fields})

    return decode
