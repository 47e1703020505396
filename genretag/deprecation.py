"""Names genretag 0.1 used, kept working for a while: each one warns where it lives now and when it goes.

A retired name is served by its old module's `__getattr__` (PEP 562), so the module keeps no
attribute of that name and every use of it, `from ... import` included, passes through here. The
warning is a `DeprecationWarning` naming the release that removes the name (librosa's
``version_removed`` habit), so a user's test suite sees it one release ahead.

Imports nothing from genretag: any module can retire a name.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from types import FunctionType, ModuleType
from typing import Any

#: The release that removes every name retired here.
REMOVED_IN = "0.4.0"


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` (a dotted name) is deprecated for `new`; the warning points at the line that used it
    (the default `stacklevel` 3: this function, the module's `__getattr__` or the deprecated function, then
    that line)."""
    warnings.warn(f"{old} is deprecated and will be removed in genretag {REMOVED_IN}; use {new}",
                  DeprecationWarning, stacklevel=stacklevel)


def no_attribute(module: str, name: str) -> AttributeError:
    """The AttributeError a module's `__getattr__` raises for a name it never had."""
    return AttributeError(f"module {module!r} has no attribute {name!r}")


def moved_module(old: str, name: str, homes: Sequence[ModuleType], renamed: Mapping[str, str] | None = None) -> Any:
    """`old.name` for a module that moved as a whole: the object from the first of `homes` that holds it
    (under its new name where `renamed` gives one), with a warning naming the module that defines it.

    Only what a home holds in its own namespace counts, so a home's own retired names are never followed.
    """
    if name.startswith("__"):  # __path__, __wrapped__, ...: what import machinery and tools probe for
        raise no_attribute(old, name)
    new = (renamed or {}).get(name, name)
    for home in homes:
        if new in vars(home):
            obj = vars(home)[new]
            where = obj.__module__ if isinstance(obj, (type, FunctionType)) else home.__name__
            deprecated(f"{old}.{name}", f"{where}.{new}", stacklevel=4)
            return obj
    raise no_attribute(old, name)
