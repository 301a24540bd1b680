"""Group membership for Bulk exports (BDX-15): new members' older data, which ``_since`` never returns.

A patient added to a group after the last export keeps records stamped before that export, so the group's
``_since`` export misses them. After that export lands, an id-only export (``_type=Patient&_elements=id``)
lists today's members; members not known before get a second export POSTed with their ``patient``
references and no ``_since``, landed and upserted like any other. A vendor whose Bulk takes neither
``_elements`` nor ``patient`` (``ProviderPlugin.bulk_member_params``: Oracle Health) gets an export of whole
Patients for the ids and, when new members appear, the whole group again without ``_since``. The known
member set lives in the group's membership cursor row and is replaced in the commit that completes that
export, so a run killed anywhere repeats the step (idempotent upserts absorb the repeat) and never forgets a new member.
Members that left the group are recorded and counted; their data stays.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy.orm import Session

from connectors.bulk import BulkClient, iter_numbered_ndjson_lines
from connectors.errors import BulkExportError, BulkFileExpiredError
from connectors.fhir.resource_types import TYPE_RE
from engine import bulk_state, cursors
from engine.bulk_files import ExportExpiredError
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.reports import BulkReport

MEMBERS_KEY = "members"
IDS_KEY = "ids"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSpec:
    """One export of a connection: its job/cursor identity and kick-off parameters.

    ``incremental`` exports start from the stored ``_since`` and advance it; the others always export in full.
    """

    stream: str
    key: str
    types: list[str]
    incremental: bool = True
    patients: tuple[str, ...] = ()
    elements: tuple[str, ...] = ()


FileHandler = Callable[[bulk_state.JobView], None]
OnComplete = Callable[[Session], None]
#: Runs (or resumes) one export; ``None`` handler = land and upsert its files; ``OnComplete`` joins its commit.
Runner = Callable[[ExportSpec, BulkReport, FileHandler | None, OnComplete | None], bulk_state.JobView]


def members_stream(group_id: str) -> str:
    return f"bulk:group:{group_id}:members"


def check_membership(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: BulkClient,
    run_id: str,
    group_id: str,
    types: list[str],
    report: BulkReport,
    run: Runner,
) -> None:
    """Diff the group's members against the known set; export new members in full; store the new set.

    Skipped (``report.membership_checked`` stays false) when the granted scopes cannot read Patient: the id
    export would be refused on every run.
    """
    if conn.scopes is not None and not conn.scopes.allows("Patient", "read"):
        _log.info("connection %s may not read Patient; group membership is not checked", conn.id)
        return
    stream = members_stream(group_id)
    ids = current_member_ids(env, client, conn, run_id, stream, run)
    stored = cursors.get_data(env.db, conn.id, stream, MEMBERS_KEY)
    known = set(stored.get("members", [])) if stored else _assumed_known(env, conn, types, ids)
    key = _new_members_key(conn, types)
    # members of an unfinished new-members export stay new even if some of their records already landed
    unfinished = bulk_state.find_active_job(env.db, conn.id, stream, key)
    pending = (
        {ref.removeprefix("Patient/") for ref in (unfinished.params or {}).get("patient", [])} if unfinished else set()
    )
    new, removed = sorted((ids - known) | (pending & ids)), known - ids
    earlier_removed = set(stored.get("removed", [])) if stored else set()
    state = {"members": sorted(ids), "removed": sorted((earlier_removed | removed) - ids)}
    report.membership_checked = True
    report.new_members, report.removed_members = len(new), len(removed)
    if removed:
        _log.info("group %s of connection %s lost %d member(s); their data is kept", group_id, conn.id, len(removed))

    def save(session: Session) -> None:
        cursors.put_data(session, conn.id, stream, MEMBERS_KEY, state)

    if not new:
        with env.db.locked_session() as session:
            save(session)
            session.commit()
        return
    spec = _new_members_spec(conn, stream, key, types, new)
    _abandon_other_patient_sets(env, conn, spec)
    _log.info("group %s of connection %s: exporting %d new member(s) in full", group_id, conn.id, len(new))
    sub = BulkReport(run_id=report.run_id, connection_id=conn.id)
    run(spec, sub, None, save)
    if sub.incomplete_types:  # their export is not whole (error files): they stay new, so the next run asks again
        held = {"members": sorted(ids - set(new)), "removed": state["removed"]}
        with env.db.locked_session() as session:
            cursors.put_data(session, conn.id, stream, MEMBERS_KEY, held)
            session.commit()
    report.absorb(sub)


def _new_members_key(conn: ConnectionInfo, types: list[str]) -> str:
    prefix = "patients:" if conn.provider.bulk_member_params else "group-full:"
    return prefix + cursors.bulk_type_key(types)


def _new_members_spec(conn: ConnectionInfo, stream: str, key: str, types: list[str], new: list[str]) -> ExportSpec:
    """New members' export: their ``patient`` references, or where the vendor's Bulk takes no ``patient``
    parameter (Oracle Health) the whole group again without ``_since`` (idempotent upserts absorb the rest)."""
    if not conn.provider.bulk_member_params:
        return ExportSpec(stream, key, types, incremental=False)
    return ExportSpec(stream, key, types, incremental=False, patients=tuple(f"Patient/{i}" for i in new))


def _assumed_known(env: SyncEnvironment, conn: ConnectionInfo, types: list[str], ids: set[str]) -> set[str]:
    """No stored set yet (first check): members whose Patient already landed are known, when Patients are
    exported at all; otherwise today's members become the baseline (nothing to compare against)."""
    if not types or "Patient" in types:
        with env.warehouse() as wh:
            return wh.live_ids(conn.id, "Patient")
    _log.info("connection %s exports no Patient; taking today's group members as the baseline", conn.id)
    return set(ids)


def _abandon_other_patient_sets(env: SyncEnvironment, conn: ConnectionInfo, spec: ExportSpec) -> None:
    """An unfinished new-members export for another patient list (membership changed since) is dropped:
    resuming it would mark members as exported that it never covered."""
    job = bulk_state.find_active_job(env.db, conn.id, spec.stream, spec.key)
    if job is not None and sorted((job.params or {}).get("patient") or []) != sorted(spec.patients):
        bulk_state.set_job_status(env.db, job.id, "abandoned", "group membership changed")


def current_member_ids(
    env: SyncEnvironment, client: BulkClient, conn: ConnectionInfo, run_id: str, stream: str, run: Runner
) -> set[str]:
    """Today's member ids from a ``_type=Patient&_elements=id`` export (nothing is landed); whole Patients where
    the vendor's Bulk does not take ``_elements`` (Oracle Health)."""
    elements = ("id",) if conn.provider.bulk_member_params else ()
    spec = ExportSpec(stream, IDS_KEY, ["Patient"], incremental=False, elements=elements)
    ids: set[str] = set()

    def collect(job: bulk_state.JobView) -> None:
        ids.clear()
        ids.update(read_patient_ids(env, client, job))

    run(spec, BulkReport(run_id=run_id, connection_id=conn.id), collect, None)
    return ids


def read_patient_ids(env: SyncEnvironment, client: BulkClient, job: bulk_state.JobView) -> set[str]:
    """Ids in the job's Patient output files (streamed to a temp file, then removed)."""
    tmp_dir: Path = env.zone.root / ".bulk-tmp" / job.id
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    requires_token = job.requires_access_token if job.requires_access_token is not None else True
    ids: set[str] = set()
    try:
        for f in bulk_state.all_files(env.db, job.id):
            if f.kind != "output" or f.resource_type != "Patient":
                continue
            try:
                path = client.download(
                    f.url,
                    tmp_dir / f"{f.id}.ndjson",
                    requires_token,
                    max_bytes=env.bulk_max_file_bytes,
                    min_free_bytes=env.min_free_disk_bytes,
                )
            except BulkFileExpiredError as exc:
                raise ExportExpiredError(f"member id file expired: {exc}") from exc
            for number, line in iter_numbered_ndjson_lines(path):
                ids.add(_member_id(job, number, line))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ids


def _member_id(job: bulk_state.JobView, number: int, line: bytes) -> str:
    """The Patient id of one line of a member-id file; any other line fails the step, naming its line number and
    the type it holds (never its content: PHI), so the operator can show the server's operator what it wrote."""
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        resource = None
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource, dict) or rtype != "Patient":
        # another type's id is no member (BDX-20: a server may put a stray line in a file)
        what = f"a {rtype}" if isinstance(rtype, str) and TYPE_RE.match(rtype) else "no FHIR resource"
        raise BulkExportError(
            f"member id export of job {job.id} has a line that is not a Patient (line {number} of a Patient file: "
            f"{what})"
        )
    if not isinstance(resource.get("id"), str):
        # a guessed member list would count members as removed or re-export them: fail, retry later
        raise BulkExportError(f"member id export of job {job.id} has a line without a Patient id (line {number})")
    return str(resource["id"])
