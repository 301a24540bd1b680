"""Package ``__init__`` exports imported on first use (PEP 562), so one submodule's import does not load the rest.

``ehrsync connections list`` reads one engine module; eager package ``__init__``s used to load pyarrow, DuckDB,
httpx and every vendor plugin for it (issue 14). Each package lists its names under ``TYPE_CHECKING`` (for mypy)
and maps them to their modules here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: ``homes`` maps each public name to the module
    defining it (an empty module: the name is a submodule of ``package``); a value is kept on the package for the
    next lookup. ``dir()`` (so ``help()``, completion) lists the names before their first use, as eager imports did.

    An ``AttributeError`` raised while a name's module loads (a library without an attribute the module reads at
    load) comes out as an ``ImportError`` naming it: ``from package import name`` turns an ``AttributeError`` of
    ``__getattr__`` into "cannot import name" and drops the real one, which the eager imports showed.
    """

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name = home or f"{package}.{name}"
        try:
            module = importlib.import_module(module_name)
        except AttributeError as exc:  # ``from package import name`` would say "cannot import name", dropping it
            raise ImportError(f"{module_name} failed to load: {exc}", name=module_name) from exc
        value = getattr(module, name) if home else module
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__
