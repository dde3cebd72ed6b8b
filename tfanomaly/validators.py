"""Field checks of the config dataclasses (a leaf module: the shared config
sections in :mod:`tfanomaly.config` and the family sections in
:mod:`tfanomaly.family_configs` both use them, so neither imports the other's
layer). A check returns None when the value is fine, else the expectation text;
:func:`checked` attaches one to a dataclass field with its help string."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Callable


def positive(v):
    return None if v > 0 else "> 0"


def non_negative(v):
    return None if v >= 0 else ">= 0"


def unit_interval(v):
    return None if 0.0 <= v <= 1.0 else "in [0, 1]"


def below_half(v):
    return None if 0.0 <= v < 0.5 else "in [0, 0.5)"


def one_of(*choices):
    def check(v):
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def each(check):
    def inner(v):
        for item in v:
            msg = check(item)
            if msg:
                return f"every item {msg}"
        return None

    return inner


def length(n):
    def check(v):
        return None if len(v) == n else f"exactly {n} items"

    return check


def all_of(*checks):
    def check(v):
        for c in checks:
            msg = c(v)
            if msg:
                return msg
        return None

    return check


def range_pair(v):
    """A [low, high] pair with low <= high."""
    if len(v) != 2:
        return "a [low, high] pair"
    return None if v[0] <= v[1] else "a [low, high] pair with low <= high"


def checked(default=dataclasses.MISSING, check: Callable | None = None, factory=None, help: str = ""):
    """A dataclass field with a validation check and a help string."""
    meta = {"check": check, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
