"""ehrsync sandbox: a local SMART on FHIR R4 EHR with synthetic patients (imports no other ehrsync package)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.admin_client import SandboxAdmin
    from sandbox.app import create_app
    from sandbox.config import SandboxConfig
    from sandbox.errors import ResourceGone, ResourceNotFound, SandboxAdminError, SandboxError
    from sandbox.server import SandboxServer

__all__ = [
    "ResourceGone",
    "ResourceNotFound",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxConfig",
    "SandboxError",
    "SandboxServer",
    "create_app",
]

# Each public name's module, imported on first use (PEP 562): ``ehrsync sandbox mutate`` and the demo's error
# types need no FastAPI app. (The same as ``connectors.lazy_exports``: this package imports no other.)
_HOMES = {
    "SandboxAdmin": "sandbox.admin_client",
    "create_app": "sandbox.app",
    "SandboxConfig": "sandbox.config",
    "ResourceGone": "sandbox.errors",
    "ResourceNotFound": "sandbox.errors",
    "SandboxAdminError": "sandbox.errors",
    "SandboxError": "sandbox.errors",
    "SandboxServer": "sandbox.server",
}


def __getattr__(name: str) -> object:
    """``from sandbox import X`` imports ``X``'s own module only (and keeps it here for the next lookup); an
    ``AttributeError`` while that module loads comes out as an ``ImportError`` ("cannot import name" would drop it)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_HOMES[name])
    except AttributeError as exc:
        raise ImportError(f"{_HOMES[name]} failed to load: {exc}", name=_HOMES[name]) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names before their first use too (``help()``, completion), as eager imports listed them."""
    return sorted({*globals(), *_HOMES})
