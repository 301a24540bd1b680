"""The admin's retry of every ``client_rejected`` connection of one provider config at once, after fixing the app's
credentials (``POST /api/integrations/admin/providers/{provider}/reactivate``).

One refusal of the app's client authentication pauses all of its connections (``store._same_client``); retrying
them one by one would cost the operator N requests, and the EHR N failed authentications while the fix is not in
place yet. So one connection is tried first: the EHR still refusing the client stops there (one failed request in
all, 409 ``client_rejected`` naming the refusal); once it is accepted, the rest are retried, each through
``TokenVault.reactivate`` (a patient connection refreshes with its own kept refresh token, a backend one mints; each
active again only if that works) within the vendor's shared call budget (eCW), as a single admin refresh is. A
connection whose refresh token the EHR now refuses ends ``needs_reauth`` (the client was accepted: the next one
is tried first then); a retry that fails transiently stops the run, the rest ``not_tried`` (call again later): a
busy call budget (nothing sent), the EHR throttling, out of quota, unreachable or failing (each of the rest would
send one more request to it, or wait out one more timeout).

"The client" is what each connection really authenticates as (``_credentials``): the client id it stored (its
grant's, which its refresh authenticates as in every process, even after the operator rotated the config's client
id) at its token endpoint, as ``store._same_client`` groups a refusal's pauses. A provider config whose connections
hold several client ids (an old one kept by connections authorized before a rotation) has a first try per client
id: a refusal stops only the connections using those same credentials (``not_tried``), the next client id is still
tried; 409 ``client_rejected`` only when the EHR accepted none of them.

A provider disabled for the tenant (``provider_disabled``: its config disabled, or not in ``enabledProviders``;
``smart``: the tenant's ``smartFhir`` off, or its row disabled) is refused before anything is selected, sent or
spent, as a sign-in is: its connections stay ``client_rejected`` until it is enabled again.

At most ``limit`` connections per call (``DEFAULT_LIMIT``, at most ``MAX_LIMIT``), oldest change first: a retry
refused again or failed moves a connection to the back, so calling again until ``remaining`` is 0 reaches them all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from auth_service.services.audit import audit_event
from auth_service.services.context import ServiceContext
from auth_service.services.errors import EhrCallError, ProviderUnusableError, ServiceError, service_error_from
from auth_service.services.profiles import SMART_PROVIDER_ID, check_provider_enabled
from connectors import errors as ce
from store.errors import ClientRejectedError, RefreshDeferredError
from store.models import Connection, ConnectionStatus
from store.rate_windows import CallBudgetBusyError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "reactivate_provider"]

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: ``skipped``: no longer client_rejected when its turn came; ``not_tried``: its client id and token endpoint were
#: refused in this run already, or the run stopped (a busy call budget) before its turn
_OUTCOMES = ("reactivated", "still_refused", "needs_reauth", "failed", "skipped", "not_tried")


@dataclass
class _Run:
    """Connection ids by outcome; ``refused``: the (client id, token endpoint) pairs the EHR refused in this run."""

    ids: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in _OUTCOMES})
    refused: set[tuple[str, str]] = field(default_factory=set)
    accepted: bool = False  # the EHR accepted the client for one connection: the rest are worth a request
    refusal: tuple[str, str] | None = None  # the first connection refused in this run, and what the EHR said
    stopped: str | None = None  # why the run stopped before its last connection


def _credentials(conn: Connection) -> tuple[str, str]:
    """What the EHR authenticates: the client id at its token endpoint (see ``store._same_client``)."""
    return conn.client_id, conn.token_endpoint or conn.fhir_base


def _check_enabled(ctx: ServiceContext, tenant_id: str, provider_id: str, actor: str) -> None:
    """Refuse (``provider_disabled``, 409; ``not_found`` without a config) a provider no flow may use now: no
    connection is retried, no call budget spent, nothing sent; one ``provider.reactivate`` row, ``refused``."""
    try:
        with ctx.db.session() as session:
            check_provider_enabled(session, tenant_id, provider_id)
    except ServiceError as exc:
        left = _left(ctx, tenant_id, provider_id)
        detail: dict[str, Any] = {"provider": provider_id, "error_code": exc.code, "remaining": left}
        audit_event(ctx, "provider.reactivate", "refused", tenant_id, actor, detail=detail)
        if not isinstance(exc, ProviderUnusableError) or exc.code != "provider_disabled":
            raise
        how = f"POST /api/integrations/admin/providers/{provider_id}/enable"
        if provider_id == SMART_PROVIDER_ID:
            how = f"the tenant's practice settings smartFhir.enabled, and {how} for a disabled smart provider config"
        raise ProviderUnusableError(
            f"{exc} ({left} connection(s) still client_rejected): enable it ({how}) before retrying its "
            "connections; nothing was tried",
            remaining=left,
        ) from None


def _rejected(ctx: ServiceContext, tenant_id: str, provider_id: str, limit: int | None) -> Sequence[Connection]:
    stmt = (
        select(Connection)
        .where(
            Connection.tenant_id == tenant_id,
            Connection.provider_id == provider_id,
            Connection.status == ConnectionStatus.CLIENT_REJECTED,
        )
        .order_by(Connection.updated_at, Connection.id)
        .limit(limit)
    )
    with ctx.db.session() as session:
        rows = session.scalars(stmt).all()
        session.expunge_all()
        return rows


def _left(ctx: ServiceContext, tenant_id: str, provider_id: str) -> int:
    stmt = select(func.count(Connection.id)).where(
        Connection.tenant_id == tenant_id,
        Connection.provider_id == provider_id,
        Connection.status == ConnectionStatus.CLIENT_REJECTED,
    )
    with ctx.db.session() as session:
        return int(session.scalar(stmt) or 0)


def _retry(ctx: ServiceContext, conn: Connection, run: _Run, actor: str) -> None:
    """Retry one connection (``TokenVault.reactivate``) in the call budget; file its outcome (audited as an admin
    refresh is). Before any connection was accepted, a failure other than a refusal of its client is raised: the
    run stops at its first try."""
    outcome, code = "reactivated", None
    try:
        with ctx.call_budget(conn.provider_id, conn.fhir_base):
            ctx.vault.reactivate(conn.id)
    except ValueError:  # no longer client_rejected (reactivated or disconnected meanwhile)
        run.ids["skipped"].append(conn.id)
        return
    except ce.EhrSyncError as exc:
        outcome, code = _outcome(exc), service_error_from(exc).code
        _audit_retry(ctx, conn, actor, code)
        if outcome == "still_refused":  # no second failed authentication with these credentials in this run
            run.refused.add(_credentials(conn))
            run.refusal = run.refusal or (conn.id, str(exc))
        elif not run.accepted and outcome != "needs_reauth":
            raise
        if _transient(exc):  # the next ones would meet the same busy budget, throttle or outage
            run.stopped = f"{code} at connection {conn.id}"
    else:
        _audit_retry(ctx, conn, actor, None)
    run.ids[outcome].append(conn.id)
    run.accepted = run.accepted or outcome in ("reactivated", "needs_reauth")


def _transient(exc: ce.EhrSyncError) -> bool:
    """A failure of the EHR or the budget, not of this connection: a refresh not done (``RefreshDeferredError``
    wraps the transient cause), a busy call budget, a throttle or quota, the EHR unreachable or failing."""
    if isinstance(exc, (RefreshDeferredError, CallBudgetBusyError, ce.TransportError, ce.TemporarilyUnavailableError)):
        return True
    return isinstance(exc, ce.FhirError) and (exc.is_transient or isinstance(exc, ce.RateLimitedError))


def _outcome(exc: ce.EhrSyncError) -> str:
    if isinstance(exc, ClientRejectedError):  # the EHR refused the client again (subclass of NeedsReauthError)
        return "still_refused"
    if isinstance(exc, ce.NeedsReauthError):  # the patient's refresh token refused: the client itself was accepted
        return "needs_reauth"
    return "failed"


def _audit_retry(ctx: ServiceContext, conn: Connection, actor: str, code: str | None) -> None:
    detail: dict[str, Any] = {"bulk": True}  # one of a provider's retry (``provider.reactivate``)
    if code is not None:
        detail["error_code"] = code
    outcome = "success" if code is None else "failure"
    audit_event(ctx, "token.refresh", outcome, conn.tenant_id, actor, connection_id=conn.id, detail=detail)


def _audit_run(
    ctx: ServiceContext, tenant_id: str, provider_id: str, actor: str, run: _Run, left: int, stopped_at: str | None
) -> None:
    """One ``provider.reactivate`` row per call: the counts, and the connection whose first try stopped it."""
    detail: dict[str, Any] = {"provider": provider_id, **_counts(run), "remaining": left}
    if stopped_at is not None:
        detail["stopped_at_connection_id"] = stopped_at
    outcome = "stopped" if stopped_at is not None else "success"
    audit_event(ctx, "provider.reactivate", outcome, tenant_id, actor, detail=detail)


def _counts(run: _Run) -> dict[str, int]:
    return {name: len(ids) for name, ids in run.ids.items()}


def reactivate_provider(
    ctx: ServiceContext, tenant_id: str, provider_id: str, actor: str, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """Retry up to ``limit`` ``client_rejected`` connections of the tenant's ``provider_id`` (module docstring).

    Raises ``ProviderUnusableError`` ``provider_disabled`` (409) when the provider is disabled (nothing tried),
    ``EhrCallError`` ``client_rejected`` (409) when the EHR still refuses the client on the first try of each
    client id and accepted none, and the first try's own error when it failed otherwise (the EHR down, the call
    budget busy): nothing else is tried.
    Answers the counts and ids by outcome, and ``remaining``: the provider's connections still ``client_rejected``
    (call again while some were not tried)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    _check_enabled(ctx, tenant_id, provider_id, actor)
    run = _Run()
    candidates = _rejected(ctx, tenant_id, provider_id, limit)
    for conn in candidates:
        if run.stopped is not None or _credentials(conn) in run.refused:  # no second failed authentication
            run.ids["not_tried"].append(conn.id)
            continue
        try:
            _retry(ctx, conn, run, actor)
        except ce.EhrSyncError:  # the first try failed otherwise (the EHR down, the budget busy): nothing else tried
            _audit_run(ctx, tenant_id, provider_id, actor, run, _left(ctx, tenant_id, provider_id), stopped_at=conn.id)
            raise
    left = _left(ctx, tenant_id, provider_id)
    if not run.accepted and run.refusal is not None:  # the EHR refused every client id tried, accepted none
        refused_id, said = run.refusal
        _audit_run(ctx, tenant_id, provider_id, actor, run, left, stopped_at=refused_id)
        raise EhrCallError(
            f"the EHR still refuses the client of provider {provider_id!r}: connection {refused_id}, retried first, "
            f"was refused again; nothing else was tried with the same client credentials ({left} connection(s) "
            f"still client_rejected). {said}",
            code="client_rejected",
            connection_id=refused_id,
            remaining=left,
        )
    _audit_run(ctx, tenant_id, provider_id, actor, run, left, stopped_at=None)
    answer: dict[str, Any] = {"provider": provider_id, "selected": len(candidates), **_counts(run), "remaining": left}
    answer["connections"] = {name: ids for name, ids in run.ids.items() if ids}
    if run.stopped is not None:
        answer["stopped"] = run.stopped
    return answer
