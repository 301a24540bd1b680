"""ehrsync sandbox: a local SMART on FHIR R4 EHR with synthetic patients (imports no other ehrsync package)."""

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
