"""Keep idle patient/user grants alive by refreshing them before the server lets them lapse.

Refresh tokens die of disuse: Oracle Health drops ``offline_access`` grants unused for three months and eCW
refresh tokens last 90 days (vendors.md §3, §4). A connection that syncs refreshes its tokens anyway; one
that does not (sync paused, a long frequency) would silently need a person to authorize again. This module
finds those idle grants and refreshes each through ``TokenVault.force_refresh``, which holds the
per-connection lock, commits a rotated refresh token before use (SAL-23, SAL-24) and marks
``needs_reauth`` on ``invalid_grant`` (SAL-25), ``client_rejected`` on ``invalid_client`` (the app's credentials).

Backend and group connections are never touched: they mint with client_credentials and have no grant to
keep alive. Nor are connections whose provider says it issues no refresh tokens (``RefreshPolicy.NONE``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from connectors.errors import ConfigurationError, EhrSyncError, NeedsReauthError
from connectors.providers import RefreshPolicy, get_provider
from store.database import AppDatabase
from store.errors import ClientRejectedError, TokenKeyMissingError
from store.models import Connection, ConnectionKind, ConnectionStatus, TokenRecord, utcnow
from store.rate_windows import BACKGROUND_WAIT_S, vendor_call_budget
from store.vault import TokenVault

__all__ = ["KeepaliveReport", "refresh_idle_grants"]

logger = logging.getLogger(__name__)

_CLIENT_CREDENTIALS_KINDS = (ConnectionKind.BACKEND, ConnectionKind.GROUP)
_Outcome = Literal["refreshed", "needs_reauth", "failed", "client_rejected"]


@dataclass(frozen=True)
class KeepaliveReport:
    """Connection ids by outcome (never tokens). ``failed`` ones are still active: the next run retries them;
    ``client_rejected`` ones wait for an admin to fix the app's credentials and retry them (no patient action)."""

    refreshed: tuple[str, ...] = ()
    needs_reauth: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    client_rejected: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """How many connections ended in each outcome, keyed by the field's name."""
        return {f.name: len(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class _Candidate:
    connection_id: str
    provider_id: str
    version: int
    fhir_base: str


def refresh_idle_grants(
    db: AppDatabase,
    vault: TokenVault,
    *,
    idle_for: timedelta,
    now: datetime | None = None,
    limit: int | None = None,
) -> KeepaliveReport:
    """Refresh active patient/user grants whose tokens were last issued more than ``idle_for`` before ``now``.

    Oldest first, at most ``limit`` refresh attempts (skipped connections do not count). ``now`` only sets
    the idle cut-off; the vault stamps new tokens with its own clock. One connection's failure never stops
    the others: ``invalid_grant`` or ``unauthorized_client`` lands in ``needs_reauth`` (the vault has already
    marked the connection), ``invalid_client`` in ``client_rejected`` (marked too, and with it the other connections
    using the same client credentials: those later in the run are reported there too, no request sent, each counting
    towards ``limit``), anything else (network, 5xx after retries, other OAuth or configuration errors) in
    ``failed``.
    ``skipped`` holds connections whose provider issues no refresh tokens or is unknown.
    """
    if idle_for <= timedelta(0):
        raise ValueError(f"idle_for must be a positive duration, got {idle_for}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 when given, got {limit}")
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime (UTC)")
    cutoff = (now or utcnow()) - idle_for
    outcomes: dict[str, list[str]] = {name: [] for name in KeepaliveReport().counts()}
    for candidate in _idle_candidates(db, cutoff):
        if limit is not None and sum(len(ids) for name, ids in outcomes.items() if name != "skipped") >= limit:
            break
        if not _provider_refreshes(candidate):
            outcomes["skipped"].append(candidate.connection_id)
            continue
        outcome = _refresh_one(db, vault, candidate, cutoff)
        if outcome is not None:
            outcomes[outcome].append(candidate.connection_id)
    report = KeepaliveReport(**{name: tuple(ids) for name, ids in outcomes.items()})
    logger.info("keepalive (idle for %s): %s", idle_for, report.counts())
    return report


def _idle_candidates(db: AppDatabase, cutoff: datetime) -> list[_Candidate]:
    """Active patient/user connections holding a refresh token last issued before ``cutoff``, oldest first."""
    stmt = (
        select(Connection.id, Connection.provider_id, TokenRecord.version, Connection.fhir_base)
        .join(TokenRecord, TokenRecord.connection_id == Connection.id)
        .where(
            Connection.status == ConnectionStatus.ACTIVE,
            Connection.kind.not_in(_CLIENT_CREDENTIALS_KINDS),
            TokenRecord.refresh_token_ct.is_not(None),
            TokenRecord.issued_at < cutoff,
        )
        .order_by(TokenRecord.issued_at, Connection.id)
    )
    with db.session() as session:
        return [_Candidate(*row) for row in session.execute(stmt)]


def _provider_refreshes(candidate: _Candidate) -> bool:
    try:
        policy = get_provider(candidate.provider_id).refresh_policy
    except ConfigurationError:
        logger.warning(
            "connection %s: unknown provider %r, refresh policy unknown; skipped",
            candidate.connection_id,
            candidate.provider_id,
        )
        return False
    if policy is RefreshPolicy.NONE:
        logger.info(
            "connection %s: provider %s issues no refresh tokens; skipped",
            candidate.connection_id,
            candidate.provider_id,
        )
        return False
    return True


def _refresh_one(db: AppDatabase, vault: TokenVault, candidate: _Candidate, cutoff: datetime) -> _Outcome | None:
    """``refreshed``, ``needs_reauth``, ``client_rejected``, ``failed``, or None when it stopped being an idle active
    grant."""
    cid = candidate.connection_id
    try:
        state = _state_now(db, cid, cutoff)
        if state != "idle":
            if state == ConnectionStatus.CLIENT_REJECTED:  # paused by another's refusal of the same client
                logger.info("connection %s: paused (client_rejected) since selection; nothing sent", cid)
                return "client_rejected"
            logger.info("connection %s: refreshed or changed since selection; left alone", cid)
            return None
        # eCW counts token calls too; a saturated budget fails this one (retried next run), never hangs the job
        with vendor_call_budget(db, candidate.provider_id, candidate.fhir_base, max_wait_s=BACKGROUND_WAIT_S):
            vault.force_refresh(cid)
        info = vault.token_info(cid)
    except TokenKeyMissingError as exc:  # this process lacks a key: nothing the grant or the patient did
        logger.error("connection %s: keepalive refresh failed (key id %s not configured here)", cid, exc.key_id)
        return "failed"
    except ClientRejectedError:  # invalid_client: the app's credentials, not the grant (kept)
        logger.warning("connection %s: the EHR refused the client's authentication; an admin must fix it", cid)
        return "client_rejected"
    except NeedsReauthError:
        logger.warning("connection %s: grant refused on refresh; re-authorization required", cid)
        return "needs_reauth"
    except (EhrSyncError, SQLAlchemyError) as exc:
        logger.warning("connection %s: keepalive refresh failed (%s); retried next run", cid, _error_code(exc))
        return "failed"
    # The vault answers with the still-valid current token when a refresh fails transiently: no new version.
    if info is None or info.version <= candidate.version:
        logger.warning("connection %s: keepalive refresh did not store new tokens; retried next run", cid)
        return "failed"
    return "refreshed"


def _state_now(db: AppDatabase, connection_id: str, cutoff: datetime) -> str | None:
    """Re-check just before refreshing: a sync may have refreshed it, or a person disabled it, meanwhile (or another
    connection's refused client authentication paused it, ``store._same_client``). ``idle`` (refresh it),
    ``refreshed`` (active, no longer idle), else its status now; None when it is gone."""
    stmt = (
        select(Connection.status, TokenRecord.issued_at)
        .join(TokenRecord, TokenRecord.connection_id == Connection.id)
        .where(Connection.id == connection_id, TokenRecord.refresh_token_ct.is_not(None))
    )
    with db.session() as session:
        row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    if row.status != ConnectionStatus.ACTIVE:
        return str(row.status)
    return "idle" if row.issued_at < cutoff else "refreshed"


def _error_code(exc: Exception) -> str:
    return exc.code if isinstance(exc, EhrSyncError) else type(exc).__name__
