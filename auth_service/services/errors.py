"""The errors the auth service's services raise: typed, HTTP-free, each with a documented ``code``.

Every code has a row in docs/TROUBLESHOOTING.md (cause, action); only ``auth_service/api`` turns a code into an
HTTP status and a response body, so a service can be called from a CLI or a job as well as from a route.
``details`` are the extra fields the caller is told; like messages they never carry tokens, codes, secrets or
PHI (connector messages are already safe to show, OAuth descriptions are sanitized first).

    ServiceError (connectors.errors.EhrSyncError)
    ├── InvalidInputError, StateRefusedError, IssuerRefusedError    the request cannot be served as asked
    ├── NotFoundError                                               it names nothing this tenant has
    ├── ProviderUnusableError, ConfigValidationError                an admin must fix the provider config
    ├── ClientGrantRefusedError                                     the EHR refused a new backend connection's client
    ├── RefreshNotDoneError                                         an admin's refresh not made; the token was kept
    ├── ConnectionUnusableError, ConnectionInactiveError            a person must act on the connection
    ├── NotSyncableError                                            the connection never syncs, by design
    ├── SyncInProgressError, SyncRefusedError                       a sync cannot start now
    ├── PurgeRefusedError                                           a connection's data cannot be purged now
    ├── WarehouseReadError                                          synced data cannot be read now (retry)
    ├── AuthorizationRefusedError                                   the EHR answered the authorize step with an error
    ├── SignInInterruptedError                                      the callback stopped on an unexpected error
    └── EhrCallError, WriteRefusedError                             a connector error, under its documented code
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from auth_service.services.callback_errors import CALLBACK_ERROR_CODES, sanitize_description
from connectors import errors as ce
from store.errors import NoRefreshTokenError, RefreshDeferredError
from store.models import ConnectionStatus

__all__ = [
    "AuthorizationRefusedError",
    "ClientGrantRefusedError",
    "ConfigValidationError",
    "ConnectionInactiveError",
    "ConnectionUnusableError",
    "EhrCallError",
    "InvalidInputError",
    "IssuerRefusedError",
    "NotFoundError",
    "NotSyncableError",
    "PatientContextMissingError",
    "ProviderUnusableError",
    "PurgeRefusedError",
    "RefreshNotDoneError",
    "ServiceError",
    "SignInInterruptedError",
    "StateRefusedError",
    "SyncInProgressError",
    "SyncRefusedError",
    "WarehouseReadError",
    "WriteRefusedError",
    "service_error_from",
]

#: Connector error -> documented code; the order matters (subclasses before their bases).
_EHR_CODES: tuple[tuple[type[ce.EhrSyncError] | tuple[type[ce.EhrSyncError], ...], str], ...] = (
    (ce.SecurityPolicyError, "invalid_issuer"),
    (ce.DiscoveryError, "discovery_failed"),
    (ce.NeedsReauthError, "needs_reauth"),
    (ce.AccessDeniedError, "access_denied"),
    (ce.InvalidClientError, "invalid_client"),
    (ce.InvalidScopeError, "scope_denied"),
    (ce.InvalidGrantError, "invalid_grant"),
    ((ce.TemporarilyUnavailableError, ce.TransportError), "ehr_unavailable"),
    (ce.OAuthError, "token_exchange_failed"),
    (ce.FhirForbiddenError, "scope_denied"),
    (ce.FhirUnauthorizedError, "needs_reauth"),
)
#: Connector codes that are documented codes too: a refused id_token, and NeedsReauthError kinds an admin must fix.
_OWN_CODES = ("invalid_id_token", "client_rejected", "token_undecryptable")


class ServiceError(ce.EhrSyncError):
    """A request the service refuses. A subclass names its ``codes`` (the first is its default): an instance
    carries one of them, so the API's table of statuses covers every error a service can raise."""

    code = "service_error"
    codes: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, *, codes: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if codes:
            cls.code, cls.codes = codes[0], frozenset(codes)

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None and code not in self.all_codes():
            raise ValueError(f"{type(self).__name__} cannot carry the code {code!r}")
        self.code = code or self.code
        self.details = details

    @classmethod
    def all_codes(cls) -> frozenset[str]:
        return cls.codes | {cls.code}


class InvalidInputError(ServiceError, codes=("invalid_request",)):
    """The request lacks what the service needs to act on it (a parameter, a callback's ``code``)."""


class StateRefusedError(ServiceError, codes=("invalid_state",)):
    """The callback's ``state`` is unknown, used, expired or bound to another browser (SAL-13): nothing of
    the callback is trusted, not even its error."""


class IssuerRefusedError(ServiceError, codes=("invalid_issuer", "ambiguous_issuer")):
    """An issuer or FHIR base that is not allow-listed or not configured (SAL-06, SAL-41): no call is made to it.
    ``ambiguous_issuer``: an EHR launch whose issuer more than one tenant (or provider) has, through a launch URL
    that does not say which; it is refused, never guessed."""


class NotFoundError(ServiceError, codes=("not_found", "not_connected")):
    """It names nothing this tenant has (another tenant's row is not found either); ``not_connected`` when
    what is missing is a connection, so the host app knows to send its user through the connect link."""


class ProviderUnusableError(ServiceError, codes=("provider_disabled", "configuration_error")):
    """The provider is configured but cannot serve a flow: disabled for the tenant, or its config lacks what
    the flow needs (FHIR base, client id, an auth method that fits). An admin must act."""


class ConfigValidationError(ServiceError, codes=("validation_error",)):
    """A provider config the plugin's schema refuses; ``fields`` lists what is wrong."""

    def __init__(self, message: str, fields: list[Any]) -> None:
        super().__init__(message, fields=fields)


class ClientGrantRefusedError(ServiceError, codes=("client_grant_refused",)):
    """The EHR's token endpoint refused the client_credentials grant of a backend connection being created: an OAuth
    refusal (``invalid_client``, ``unauthorized_client``, ``invalid_scope``...), not an outage. The registration,
    client id, key/JWKS or scopes must be fixed; nothing was stored. ``ehr_error`` is the EHR's OAuth code,
    ``ehr_error_description`` its own words, sanitized; ``checks`` says what to check (never a secret)."""

    def __init__(self, exc: ce.OAuthError, checks: str) -> None:
        ehr_error = sanitize_description(exc.error, 64) or "unknown"
        said = sanitize_description(exc.error_description)
        super().__init__(
            f"the EHR refused the client_credentials grant ({ehr_error}{f': {said}' if said else ''}): "
            f"{ce.client_credentials_refusal(ehr_error)}; no connection was stored. {checks}",
            ehr_error=ehr_error,
            ehr_error_description=said,
        )


class RefreshNotDoneError(ServiceError, codes=("ehr_unavailable", "no_refresh_token")):
    """An admin's refresh that was not made, the current token kept (``token_expires_at``): the EHR failed or was
    throttled transiently, or its call budget (eCW) had no free call (``ehr_unavailable``; ``retryAfterSeconds`` when
    known), or the connection has no refresh token to refresh with (``no_refresh_token``)."""

    def __init__(self, exc: RefreshDeferredError | NoRefreshTokenError) -> None:
        details: dict[str, Any] = {"token_expires_at": exc.valid_until.isoformat()}
        if isinstance(exc, RefreshDeferredError) and exc.retry_after is not None:
            details["retryAfterSeconds"] = retry_after_seconds(exc.retry_after)
        code = "no_refresh_token" if isinstance(exc, NoRefreshTokenError) else "ehr_unavailable"
        super().__init__(str(exc), code=code, **details)


#: The longest ``Retry-After`` passed on: an EHR asking for more (or a date far ahead) is told to come back in an hour.
MAX_RETRY_AFTER_S = 3600


def retry_after_seconds(seconds: float) -> int:
    """A ``Retry-After`` in whole seconds, at least 1 (0 would invite an immediate retry into the same wait) and at
    most ``MAX_RETRY_AFTER_S``."""
    return min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds)))


_UNUSABLE_CODES = {
    ConnectionStatus.CLIENT_REJECTED: "client_rejected",
    ConnectionStatus.TOKEN_UNDECRYPTABLE: "token_undecryptable",
}


class ConnectionUnusableError(ServiceError, codes=("needs_reauth", *_UNUSABLE_CODES.values())):
    """No EHR call through this connection until a person acts: the code says who (patient or admin)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"connection is {status}", code=_UNUSABLE_CODES.get(status, self.code))


#: Who must act on an inactive connection, as the sync API's message says it (the host app shows it to a person).
_INACTIVE_HINTS = {
    ConnectionStatus.NEEDS_REAUTH: " (the patient must authorize again)",
    ConnectionStatus.CLIENT_REJECTED: (
        " (the EHR refused the practice's app: an admin must fix its registration or credentials and retry it; "
        "the patient need not authorize again)"
    ),
}


class ConnectionInactiveError(ServiceError, codes=("connection_inactive",)):
    """Only an active connection syncs; ``connectionStatus`` tells the host app which state it is in."""

    def __init__(self, status: str) -> None:
        hint = _INACTIVE_HINTS.get(status, "")
        super().__init__(f"connection is {status}; it must be active to sync{hint}", connectionStatus=status)


class NotSyncableError(ServiceError, codes=("connection_not_syncable",)):
    """A connection that never syncs by design: a patient-kind one without a patient (SAL-15: a clinician's
    EHR launch with no patient in context) files notes, but a sync searches one patient's record. ``reason``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, reason=reason)


class SyncInProgressError(ServiceError, codes=("sync_in_progress",)):
    """One run per connection at a time: a second one would race the first over the same cursors."""

    def __init__(self, sync_id: str) -> None:
        super().__init__("a sync of this connection is already queued or running", syncId=sync_id)


class SyncRefusedError(ServiceError, codes=("bulk_not_enabled", "orchestrator_rejected", "orchestrator_unavailable")):
    """The run cannot be started: Bulk export is off for this connection or tenant, or Dagster refused the
    run (``orchestrator_rejected``) or cannot be reached (``orchestrator_unavailable``: retry later)."""


class WarehouseReadError(ServiceError, codes=("warehouse_busy", "warehouse_unavailable")):
    """The warehouse is held by a writer past the short wait (``warehouse_busy``) or cannot be opened
    (``warehouse_unavailable``); ``retryAfterSeconds`` tells the caller when to ask again."""

    def __init__(self, message: str, *, code: str, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, code=code, retryAfterSeconds=retry_after_s, **details)


class PurgeRefusedError(ServiceError, codes=("connection_not_disconnected", "connection_busy")):
    """Only a disconnected connection is purged (an active one would be refilled by its next sync), and not
    while a sync of it holds its lock (``connection_busy``: try again when it has finished)."""


class AuthorizationRefusedError(
    ServiceError, codes=("authorize_failed", *(code for code, _ in CALLBACK_ERROR_CODES.values()))
):
    """The EHR redirected back with an OAuth error (SAL-36); ``ehr_error*`` are its sanitized words."""


class PatientContextMissingError(ServiceError, codes=("no_patient_context",)):
    """A patient sign-in's token answer names no patient (no ``patient``, no verified patient ``fhirUser``): the
    connection could never sync, so it is not kept (SAL-15)."""


class SignInInterruptedError(ServiceError, codes=("sign_in_interrupted", "interrupted_after_connecting")):
    """The callback stopped on an unexpected error (a bug) before it finished: before any connection was stored
    (``sign_in_interrupted``: nothing was shared), or after its connection and tokens were (the patient is
    connected; ``connectionId`` names the connection)."""


class EhrCallError(
    ServiceError, codes=("fhir_error", *_OWN_CODES, "configuration_error", *(code for _, code in _EHR_CODES))
):
    """A connector error under the documented code the caller is told (``service_error_from``)."""


class WriteRefusedError(ServiceError, codes=("write_not_supported",)):
    """A closed write gate (DWB-42): ``code`` ``WRITE_NOT_SUPPORTED`` and the reason sit next to ours."""

    def __init__(self, exc: ce.WriteNotSupportedError, *, tenant: str | None, vendor: str | None) -> None:
        super().__init__(str(exc), reason=exc.reason, tenant=tenant, vendor=vendor)
        self.details["code"] = "WRITE_NOT_SUPPORTED"


def _ehr_code(exc: ce.EhrSyncError) -> str:
    """One documented code per troubleshooting row."""
    if exc.code in _OWN_CODES:
        return exc.code
    for kind, code in _EHR_CODES:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, ce.FhirError):
        return "ehr_unavailable" if exc.is_transient else "fhir_error"
    return "configuration_error" if isinstance(exc, ce.ConfigurationError) else "fhir_error"


def service_error_from(exc: ce.EhrSyncError, *, tenant: str | None = None, vendor: str | None = None) -> ServiceError:
    """What a failed EHR call means for the caller: the connector error under its documented code."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, ce.WriteNotSupportedError):
        return WriteRefusedError(exc, tenant=tenant, vendor=vendor)
    if isinstance(exc, (RefreshDeferredError, NoRefreshTokenError)):
        return RefreshNotDoneError(exc)
    code = _ehr_code(exc)
    if code == "access_denied":
        return EhrCallError("access not granted at the EHR", code=code)
    if code == "fhir_error" and isinstance(exc, ce.FhirError):
        return EhrCallError(str(exc), upstream_status=exc.status)
    if code == "ehr_unavailable" and exc.retry_after is not None:  # the EHR's Retry-After, or the budget's
        return EhrCallError(str(exc), code=code, retryAfterSeconds=retry_after_seconds(exc.retry_after))
    return EhrCallError(str(exc), code=code)
