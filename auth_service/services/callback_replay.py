"""A reload of the SMART callback while (or after) the first request for it runs: answered, never exchanged again.

A patient whose EHR is slow to answer the token request often reloads the callback page. The reload carries the
same state and code; the state is already consumed (SAL-13), and the code is single use, so a second exchange
would fail at the EHR or, worse, succeed twice. Instead the first request records its outcome with the consumed
state (``store.states``), and the same browser reloading the same callback URL gets: "still connecting" (a page
that refreshes itself) while the first request runs, then that request's own answer (the connection it made, or
its error). The wait is bounded: past the exchange's deadline the reload gets an error. Another browser, or
another callback URL with that state, is still refused as before (``invalid_state``).

The pacing is the server's: a reload waits up to ``WAIT_S`` for the first request's answer before it is told
"still connecting", and that page refreshes at once (``content="0"``): a timed refresh is a WCAG 2.2.1 failure
(axe ``meta-refresh``), and without the server's wait an immediate one would be a tight loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from auth_service.services.callback_errors import sanitize_description
from auth_service.services.context import ServiceContext
from auth_service.services.errors import ServiceError, SignInInterruptedError, retry_after_seconds
from connectors.budgets import DEFAULT_REQUEST_DEADLINE_S
from store.models import Connection, TokenRecord, utcnow
from store.states import CallbackOutcome, RecordedOutcome

__all__ = [
    "CallbackLink",
    "CallbackResult",
    "ReplayedCallbackError",
    "StillConnecting",
    "exchange_deadline_s",
    "failed_outcome",
    "interrupted_error",
    "record_outcome",
    "replay_callback",
    "replay_key",
]

logger = logging.getLogger(__name__)

#: EHR calls one code exchange may make, each under EHRSYNC_REQUEST_DEADLINE_S: SMART discovery, the token
#: request, the OpenID configuration and the JWKS of an id_token.
_EXCHANGE_CALLS = 4
#: Calls of those that first wait for a vendor's shared call budget (eCW), each up to
#: EHR_CALL_BUDGET_WAIT_SECONDS: discovery and the token request (``launch._exchange``).
_BUDGET_CALLS = 2
#: On top of those: the app database (with the default 10 s budget wait, 4 x the deadline + 30 s in all).
_EXCHANGE_SLACK_S = 10
#: How long a reload waits for the first request's answer before it is told "still connecting".
WAIT_S = 2.0
_POLL_S = 0.2


@dataclass(frozen=True)
class CallbackResult:
    connection_id: str
    tenant_id: str
    redirect_target: str | None


@dataclass(frozen=True)
class StillConnecting:
    """The first request for this callback is still exchanging the code (``waited_s`` after the reload came)."""

    waited_s: float


def _callback_codes() -> tuple[str, ...]:
    """Every code the services' errors can carry: the first callback's error, whichever it was, is answered again."""
    found: set[str] = set()
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        cls = pending.pop()
        found |= cls.codes if cls.__module__ == ServiceError.__module__ else set()
        pending.extend(cls.__subclasses__())
    return ("ehr_unavailable", *sorted(found - {"ehr_unavailable"}))


class ReplayedCallbackError(ServiceError, codes=_callback_codes()):
    """A reload of a callback that failed (its code and message again), or whose exchange outran its deadline."""


def replay_key(code: str | None, error: str | None) -> str:
    """What names one callback URL of a state: its code, or the EHR's error (hashed with the state when kept)."""
    return f"code={code or ''}&error={error or ''}"


def exchange_deadline_s(ctx: ServiceContext) -> float:
    """How long one code exchange may run before a reload stops waiting for it: its EHR calls at their deadline,
    its waits for the vendor's call budget, and the app database's slack."""
    deadline = ctx.settings.request_bounds().deadline_s or DEFAULT_REQUEST_DEADLINE_S
    budget_waits = _BUDGET_CALLS * ctx.settings.EHR_CALL_BUDGET_WAIT_SECONDS
    return _EXCHANGE_CALLS * deadline + budget_waits + _EXCHANGE_SLACK_S


def failed_outcome(error: ServiceError) -> CallbackOutcome:
    """The error a callback answered, kept for its reload; with the time its ``Retry-After`` pointed at."""
    seconds = error.details.get("retryAfterSeconds")
    until = None
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        until = (utcnow() + timedelta(seconds=seconds)).isoformat()
    message = sanitize_description(error.message)
    return CallbackOutcome("failed", error_code=error.code, message=message, retry_until=until)


def _replayed_error(outcome: CallbackOutcome) -> ReplayedCallbackError:
    """The first request's error again; its ``Retry-After`` counts down to the time the first answer gave (at
    least 1 s, so a reload after that time is not told to retry at once into the same outage)."""
    kept = outcome.error_code if outcome.error_code in ReplayedCallbackError.all_codes() else None
    details: dict[str, Any] = {}
    if outcome.retry_until is not None:
        left = (datetime.fromisoformat(outcome.retry_until) - utcnow()).total_seconds()
        details["retryAfterSeconds"] = retry_after_seconds(left)
    return ReplayedCallbackError(outcome.message or "connecting your record failed", code=kept, **details)


def interrupted_error(ctx: ServiceContext, connection_id: str | None) -> SignInInterruptedError:
    """What a patient is told of a callback that stopped on an unexpected error: whether it had connected them
    (the connection it stored, ``connection_id``, is there with its tokens) or nothing was shared."""
    if connection_id is not None and _stored(ctx, connection_id):
        return SignInInterruptedError(
            f"connection {connection_id} was made and its tokens stored, but the sign-in then stopped on an"
            " unexpected error in this service",
            code="interrupted_after_connecting",
            connectionId=connection_id,
        )
    return SignInInterruptedError(
        "the sign-in stopped on an unexpected error in this service before any connection was stored; start again"
    )


def _stored(ctx: ServiceContext, connection_id: str) -> bool:
    """The connection the callback recorded once its tokens were stored is still there, with its tokens."""
    try:
        with ctx.db.session() as session:
            return session.get(Connection, connection_id) is not None and (
                session.get(TokenRecord, connection_id) is not None
            )
    except SQLAlchemyError as exc:  # the database failing too: it was stored, as the callback recorded
        logger.warning("could not look up the callback's connection: %s", type(exc).__name__)
        return True


@dataclass
class CallbackLink:
    """The connection a callback stores. Its state names it in the transaction that stores it and its tokens
    (``record``, ``grants.keep_connection``), so a crash or a database error between the two cannot leave a
    connection a reload does not see ("did not finish", then a second one), nor a state naming one never stored.
    ``connection_id`` is set once that transaction is committed (``saved``)."""

    ctx: ServiceContext
    state: str
    connection_id: str | None = None

    def record(self, session: Session, connection_id: str) -> None:
        """Not best effort (unlike ``record_outcome``): failing, it rolls the connection and its tokens back."""
        self.ctx.states.record_outcome(
            self.state, CallbackOutcome("pending", connection_id=connection_id), session=session
        )

    def saved(self, connection_id: str) -> None:
        self.connection_id = connection_id


def record_outcome(ctx: ServiceContext, state: str, outcome: CallbackOutcome) -> None:
    """Best effort: the first request's own answer must not be lost to a failed write (a reload then waits for
    the exchange deadline instead)."""
    try:
        ctx.states.record_outcome(state, outcome)
    except SQLAlchemyError as exc:
        logger.warning("the callback outcome %s could not be recorded: %s", outcome.status, type(exc).__name__)


def replay_callback(
    ctx: ServiceContext, *, state: str | None, code: str | None, error: str | None, browser_session: str | None
) -> CallbackResult | StillConnecting | None:
    """What a reload of a consumed callback gets: ``None`` unless this browser's own callback with this very URL
    consumed the state (the caller then refuses it as before). Raises the first request's error."""
    started = time.monotonic()
    deadline = exchange_deadline_s(ctx)
    while True:
        recorded = ctx.states.recorded_outcome(
            state or "", browser_session=browser_session or "", replay_key=replay_key(code, error)
        )
        if recorded is None:
            return None
        outcome = recorded.outcome
        waited = time.monotonic() - started
        if not _running(recorded, deadline) or waited >= WAIT_S:
            break
        time.sleep(_POLL_S)
    logger.info("callback reloaded while or after it ran (%s): answered without a second exchange", outcome.status)
    if outcome.status == "connected" and outcome.connection_id:
        return CallbackResult(outcome.connection_id, recorded.tenant_id, recorded.redirect_target)
    if outcome.status == "failed":
        raise _replayed_error(outcome)
    if _running(recorded, deadline):
        return StillConnecting(waited)
    interrupted = interrupted_error(ctx, outcome.connection_id)  # looks the stored connection up once
    if outcome.status == "abandoned" or interrupted.code == "interrupted_after_connecting":
        raise interrupted  # stopped on an error, or after storing a connection
    raise ReplayedCallbackError(
        f"the sign-in did not finish: the code exchange with the health system was not over within {deadline:g} s"
        " of the callback, or it stopped; start again"
    )


def _running(recorded: RecordedOutcome, deadline_s: float) -> bool:
    """The first request has no answer yet and is still within the exchange's deadline."""
    elapsed = (utcnow() - recorded.consumed_at).total_seconds()
    return recorded.outcome.status == "pending" and elapsed < deadline_s
