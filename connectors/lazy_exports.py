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


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: ``homes`` maps each public name to the module defining it (an
    empty module: the name is a submodule of ``package``); the value is kept on the package for the next lookup."""

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home or f"{package}.{name}")
        value = getattr(module, name) if home else module
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
