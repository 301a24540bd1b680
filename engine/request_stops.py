"""Failures every later request of a run would meet the same way, so the work that met one stops there.

A grant no longer usable, an EHR that cannot be reached, a throttle longer than ehrsync waits (BDX-10), or another
process refreshing the grant past the refresh lock's 300 s (each later request would wait it again). One tuple, so
the places that let these through (the CapabilityStatement read, referenced types, attachments, a batch member, a
reconcile run) cannot drift apart: each adds only what is its own.
"""

from __future__ import annotations

from connectors.errors import EhrUnreachableError, InsufficientDiskSpaceError, NeedsReauthError, RateLimitedError
from store import RefreshLockTimeoutError
from warehouse import LandingDiskFullError

__all__ = ["EVERY_REQUEST_WOULD_MEET", "LANDING_DISK_FULL"]

EVERY_REQUEST_WOULD_MEET = (NeedsReauthError, EhrUnreachableError, RateLimitedError, RefreshLockTimeoutError)
#: A landing disk too full: a landing file's write, a download's write or an attachment's move into the store refused
#: (ENOSPC, EDQUOT), or a Bulk or attachment download's free-space check (EHRSYNC_MIN_FREE_DISK_BYTES).
#: Every later landing of the run meets it too (a reconcile's types, a batch's members: ``engine.batch_stop``).
LANDING_DISK_FULL = (InsufficientDiskSpaceError, LandingDiskFullError)
