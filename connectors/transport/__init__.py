"""How every call to an EHR travels, apart from what it means: an ``httpx.Auth`` flow for the bearer token
(refresh once on 401), a retrying transport (Retry-After, backoff, deadlines, unreachable hosts) over the
vendor rate budget, and the factory that builds clients with them. The FHIR and Bulk clients keep only the
protocol: building requests, the URL guard, redirects and mapping answers to typed errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from connectors.transport.attempt import AttemptTransport
    from connectors.transport.auth import BearerAuth
    from connectors.transport.bounded_client import BoundedClient, bounds_of
    from connectors.transport.bounds import BodyBounds, read_capped
    from connectors.transport.client import DEFAULT_TIMEOUT, EhrClient, ehr_client, ehr_transport
    from connectors.transport.low_speed import LowSpeedLimit
    from connectors.transport.plan import RequestPlan
    from connectors.transport.retrying import RetryTransport
    from connectors.transport.transfer import TransferDeadline

__all__ = [
    "DEFAULT_TIMEOUT",
    "AttemptTransport",
    "BearerAuth",
    "BodyBounds",
    "BoundedClient",
    "EhrClient",
    "LowSpeedLimit",
    "RequestPlan",
    "RetryTransport",
    "TransferDeadline",
    "bounds_of",
    "ehr_client",
    "ehr_transport",
    "read_capped",
]

# Each public name's module, imported on first use (``connectors.lazy_exports``).
_HOMES = {
    "AttemptTransport": "connectors.transport.attempt",
    "BearerAuth": "connectors.transport.auth",
    "BoundedClient": "connectors.transport.bounded_client",
    "bounds_of": "connectors.transport.bounded_client",
    "BodyBounds": "connectors.transport.bounds",
    "LowSpeedLimit": "connectors.transport.low_speed",
    "read_capped": "connectors.transport.bounds",
    "DEFAULT_TIMEOUT": "connectors.transport.client",
    "EhrClient": "connectors.transport.client",
    "ehr_client": "connectors.transport.client",
    "ehr_transport": "connectors.transport.client",
    "RequestPlan": "connectors.transport.plan",
    "RetryTransport": "connectors.transport.retrying",
    "TransferDeadline": "connectors.transport.transfer",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
