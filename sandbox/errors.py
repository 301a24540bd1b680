"""Typed errors of the sandbox (it imports no other ehrsync package, so it has its own small hierarchy)."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class for sandbox failures."""


class ResourceNotFound(SandboxError):
    """No resource with that type and id ever existed."""


class ResourceGone(SandboxError):
    """The resource existed and was deleted (FHIR answers 410)."""


class SandboxAdminError(SandboxError):
    """The admin API refused a request; ``status`` and ``detail`` say why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"sandbox admin API answered {status}: {detail}")
        self.status = status
        self.detail = detail
