"""An export slot's claim kept alive while its kick-off runs (``engine.export_slots``): a lease its taker renews.

A claim of another host's process cannot be checked for a live process (``engine.runs.process_gone``), so it is
taken over once past its ``expires_at``. Set once, that had to outlast the longest kick-off (``claim_ttl``: about
2 h with the defaults), and a kick-off killed on another host held the slot that long. Now the taker sets it a lease
ahead (``CLAIM_LEASE``, 5 min) and a thread of its process moves it on every tenth of that, up to the ``claim_ttl``
bound: a dead taker's claim is taken over a lease after its last renewal.

A live taker loses its claim only when none of its renewals lands for a whole lease: its process frozen (SIGSTOP, a
suspended VM) or cut off from the app database that long, or host clocks minutes apart; a renewal that fails, for
any reason, is logged and tried again at the next. Two kick-offs may then reach the EHR, as before claims; it answers
the second 429 (``bulk_export_busy``, retried after its Retry-After). The kick-off is not told its claim was lost:
its request may already be on its way, and the EHR's answer settles it either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import update

from engine.models import ExportSlotClaim, utcnow
from store import AppDatabase

__all__ = ["CLAIM_LEASE", "renewed"]

CLAIM_LEASE = timedelta(minutes=5)

_log = logging.getLogger(__name__)


@contextmanager
def renewed(db: AppDatabase, slot: str, token: str, lease: timedelta, until: datetime) -> Iterator[None]:
    """Renew the claim ``token`` of ``slot`` a ``lease`` ahead (never past ``until``) every tenth of a lease while the
    block runs; stopped (and joined) before the block's caller gives the claim back."""
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(db, slot, token, lease, until, stop), name="export-slot-lease", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()


def _renew(db: AppDatabase, slot: str, token: str, lease: timedelta, until: datetime, stop: threading.Event) -> None:
    """Any failure is retried at the next renewal, still within the lease: a thread that died of one (before, any but
    SQLAlchemy's) left the kick-off running on a claim nobody renewed, taken over a lease later. Logged by type only
    (a driver's message can carry the statement's values), with how long since a renewal last landed."""
    landed = time.monotonic()
    while not stop.wait(lease.total_seconds() / 10):
        try:
            held = _extend(db, slot, token, lease, until)
        except Exception as exc:  # any failure: the thread must live on, to renew at the next turn
            _log.warning(
                "export slot %s: could not renew this kick-off's claim (%s); the last renewal landed %.0f s ago, and "
                "another kick-off may take the slot over once none has for %.0f s",
                slot,
                type(exc).__name__,
                time.monotonic() - landed,
                lease.total_seconds(),
            )
            continue
        if not held:
            _log.warning("export slot %s: this kick-off's claim was taken over (no renewal landed for a lease)", slot)
            return
        landed = time.monotonic()


def _extend(db: AppDatabase, slot: str, token: str, lease: timedelta, until: datetime) -> bool:
    """Move the claim's expiry a ``lease`` ahead (never past ``until``): False when the claim is no longer there."""
    with db.locked_session() as session:
        held = session.execute(
            update(ExportSlotClaim)
            .where(ExportSlotClaim.slot == slot, ExportSlotClaim.token == token)
            .values(expires_at=min(utcnow() + lease, until))
            .returning(ExportSlotClaim.token)
        ).first()
        session.commit()
    return held is not None
