"""Where one type's search pages go in a landing: the Parquet writer, deduplicated by id, and the mark.

The mark is the server's time at the first page (BDX-27: ``Bundle.meta.lastUpdated``, else ``Date``), bounded by
this host's clock: a server clock running ahead that is later set right (an NTP step, a host moved) stamps its next
changes before a mark taken from it, and ``_lastUpdated=gt(mark - overlap)`` (BDX-28) would skip them run after run
with nothing failing. Bounded, a server that is ahead costs only the changes of the time it is ahead read again
(idempotent upserts absorb them, BDX-24); a server behind this host is never moved: its own time is the mark.
The landing file keeps the server's own time as its ``transaction_time``, on the clock tombstones are stamped with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connectors.fhir import SearchPage
from connectors.fhir.outcomes import NOTICE_PREFIX
from engine.attachments import AttachmentRef, attachment_refs
from engine.checkpoints import checkpoint
from engine.models import utcnow
from engine.references import collect_references
from engine.reports import TypeReport
from warehouse import LandedFile, LandingWriter

__all__ = ["CLOCK_AHEAD_WARNING", "MAX_NOTICES", "Landing", "LandingSink", "bounded_mark"]

MAX_NOTICES = 5
#: A server this far ahead of this host is named in the type's warnings (a few seconds' drift is ordinary).
CLOCK_AHEAD_WARNING = timedelta(minutes=1)


def bounded_mark(server_time: datetime | None, warnings: list[str]) -> datetime | None:
    """The mark of a search answered at ``server_time``: that time, or this host's time when the server's is later
    (then, past ``CLOCK_AHEAD_WARNING``, a warning says by how much)."""
    now = utcnow()
    if server_time is None or server_time <= now:
        return server_time
    ahead = server_time - now
    if ahead > CLOCK_AHEAD_WARNING:
        warnings.append(
            f"the server's clock is {int(ahead.total_seconds())}s ahead of this host's clock: the mark is this "
            "host's time, so changes the server stamps once its clock is set right are still found"
        )
    return now


@dataclass
class Landing:
    report: TypeReport
    mark: datetime | None = None
    answered: datetime | None = None  # the server's time at the first page: the landing's transaction_time
    references: set[str] = field(default_factory=set)
    attachments: list[AttachmentRef] = field(default_factory=list)
    files: list[LandedFile] = field(default_factory=list)


@dataclass
class LandingSink:
    """Where search pages go: the landing file, deduplicated by id, references and attachments collected.

    The file is opened at the first resource: a search that finds nothing new (most types, most days) writes
    no landing file, and its upsert step then has nothing to merge and opens no warehouse transaction."""

    landing: Landing
    open_writer: Callable[[], LandingWriter]
    fhir_base: str
    resource_type: str
    seen: set[str] = field(default_factory=set)
    writer: LandingWriter | None = None

    def add(self, page: SearchPage, first: bool) -> None:
        landing, report = self.landing, self.landing.report
        if first and landing.mark is None:
            landing.answered = page.high_water_mark
            landing.mark = bounded_mark(landing.answered, report.warnings)
        report.pages += 1
        for resource in page.resources:
            rid = resource.get("id")
            if resource.get("resourceType") == self.resource_type and isinstance(rid, str):
                if rid in self.seen:  # fan-out (Epic categories) or a recovery search can return one twice
                    continue
                self.seen.add(rid)
            report.fetched += 1
            if self.writer is None:
                self.writer = self.open_writer()
            if self.writer.add_resource(resource):
                collect_references(resource, self.fhir_base, landing.references)
                landing.attachments.extend(attachment_refs(resource))
        checkpoint("rest.page_landed")

    @property
    def mark(self) -> datetime | None:
        return self.landing.mark

    def warn(self, message: str) -> None:
        self.landing.report.warnings.append(message)

    def notice(self, message: str) -> None:
        """A server's notice, once per text, at most MAX_NOTICES (a server may note the same on every page)."""
        warnings = self.landing.report.warnings
        if message not in warnings and sum(w.startswith(NOTICE_PREFIX) for w in warnings) < MAX_NOTICES:
            warnings.append(message)
