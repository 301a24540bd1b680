"""How every call to an EHR travels, apart from what it means: an ``httpx.Auth`` flow for the bearer token
(refresh once on 401), a retrying transport (Retry-After, backoff, deadlines, unreachable hosts) over the
vendor rate budget, and the factory that builds clients with them. The FHIR and Bulk clients keep only the
protocol: building requests, the URL guard, redirects and mapping answers to typed errors."""

from connectors.transport.attempt import AttemptTransport
from connectors.transport.auth import BearerAuth
from connectors.transport.bounded_client import BoundedClient, bounds_of
from connectors.transport.bounds import BodyBounds, LowSpeedLimit, read_capped
from connectors.transport.client import DEFAULT_TIMEOUT, EhrClient, ehr_client, ehr_transport
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
