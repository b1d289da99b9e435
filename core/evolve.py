"""``dataclasses.replace`` for the model's frozen dataclasses, at a third to a half of its cost.

``replace`` walks ``fields()`` on every call, checks each one, builds a dict of every field and calls
``__init__`` with it as keywords, which sets each field again through ``object.__setattr__``. A bulk write
copies a conversation four times and a ticket once or twice per missed call (a new status, a number, a
version), and those copies were a twentieth of a CDR import's CPU. ``evolve`` compiles, once per class, a
function that takes the changes as keyword-only arguments (an unknown name raises ``TypeError`` as
``replace`` does) and sets each field of a new object to its change or to the old value.

Only for dataclasses whose ``__init__`` does nothing but set its fields: a class with ``__post_init__``, an
``InitVar`` or a field left out of ``__init__`` goes to ``dataclasses.replace``, which runs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["evolve"]

T = TypeVar("T")

_UNSET: Any = object()  # "not given": None is a value a field may be set to
_COPIERS: dict[type, Callable[..., Any]] = {}


def _evolve(obj: T, /, **changes: Any) -> T:
    """``dataclasses.replace(obj, **changes)``: the same new object, made without calling ``__init__`` when
    ``__init__`` only sets fields."""
    copier = _COPIERS.get(type(obj))
    if copier is None:
        copier = _COPIERS[type(obj)] = _compile(type(obj))
    result: T = copier(obj, **changes)
    return result


def _compile(cls: type) -> Callable[..., Any]:
    fields = dataclasses.fields(cls)
    plain = (
        not hasattr(cls, "__post_init__")
        and all(f.init for f in fields)
        # an InitVar is no field, but __init__ takes it: the fields then are not all __init__ does
        and len(fields) == len([k for k in getattr(cls, "__dataclass_fields__", {}).values() if k.init])
    )
    if not plain:
        return lambda obj, **changes: dataclasses.replace(obj, **changes)
    names = [f.name for f in fields]
    for name in names:  # names come from the class body: identifiers, but say so before they become code
        if not name.isidentifier():
            return lambda obj, **changes: dataclasses.replace(obj, **changes)
    params = ", ".join(f"{n}=_UNSET" for n in names)
    body = "".join(f"    _set(new, {n!r}, obj.{n} if {n} is _UNSET else {n})\n" for n in names)
    source = f"def copier(obj, /, *, {params}):\n    new = _new(_cls)\n{body}    return new\n"
    namespace: dict[str, Any] = {"_UNSET": _UNSET, "_new": object.__new__, "_cls": cls, "_set": object.__setattr__}
    exec(compile(source, f"<evolve {cls.__qualname__}>", "exec"), namespace)  # our own field names
    copier: Callable[..., Any] = namespace["copier"]
    return copier


if TYPE_CHECKING:
    # To mypy, ``evolve`` is ``replace``: its dataclass plugin checks each call's field names and value types,
    # which ``**changes: Any`` would not.
    from dataclasses import replace as evolve
else:
    evolve = _evolve
