"""Forward a config dataclass's field (default and help string) to another config that exposes it.

A setting has one home: the dataclass of the library that uses it. A config that only passes the setting
on (a command line's flat config, a Dagster resource) takes the default and the help from there, so the two
never drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def _field(cls: type, name: str) -> dataclasses.Field:
    try:
        return {f.name: f for f in dataclasses.fields(cls)}[name]
    except KeyError:
        raise KeyError(f"{cls.__name__} has no field {name!r}") from None


def field_default(cls: type, name: str) -> Any:
    """The default of `cls.name` (a fresh one for a default factory)."""
    f = _field(cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default to forward")


def field_help(cls: type, name: str) -> str | None:
    return _field(cls, name).metadata.get("help")


def forwarded(cls: type, name: str) -> Any:
    """A dataclass field with the default and help string of `cls.name`."""
    f = _field(cls, name)
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=dict(f.metadata))
    return dataclasses.field(default=f.default, metadata=dict(f.metadata))
