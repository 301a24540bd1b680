"""The admin API (no auth, loopback only): clients, pre-approval, faults, mutations, settings, launches."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.config import STARTUP_ONLY, SandboxConfig
from sandbox.data.ids import patient_id, patient_index_of_reference
from sandbox.errors import SandboxError
from sandbox.faults import Fault
from sandbox.mutate import mutate
from sandbox.oauth.state import ClientRegistration, Context
from sandbox.state import SandboxState, get_state


def loopback_only(request: Request) -> None:
    host = request.client.host if request.client else ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host in ("localhost", "testclient")
    if not ok:
        raise HTTPException(403, "the admin API only answers loopback clients")


router = APIRouter(prefix="/admin", dependencies=[Depends(loopback_only)])


class Preapproval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: str
    patient_id: str
    scopes: str | None = None


class MutateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    create: int = Field(default=0, ge=0, le=100_000)
    update: int = Field(default=0, ge=0, le=100_000)
    delete: int = Field(default=0, ge=0, le=100_000)
    seed: int | None = None
    patients: list[str] | None = Field(default=None, description="Only change these patients' records.")


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resources: list[str] = Field(description="Deleted resources to re-create under their ids, as Type/id.")


class MembershipChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: list[str] = Field(default_factory=list, description="Patient ids (or Patient/ references) to add.")
    remove: list[str] = Field(default_factory=list, description="Patient ids (or references) to remove.")


class LaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: none: a clinician's launch from outside a chart (a schedule, an in-basket), with no patient in context
    patient_id: str | None = None
    encounter_id: str | None = None


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: str | None = None


def _require_patient(st: SandboxState, pid: str) -> None:
    try:
        st.store.read("Patient", pid)
    except SandboxError:
        raise HTTPException(404, f"unknown patient {pid!r}") from None


@router.post("/clients", status_code=201)
def register_client(body: ClientRegistration, request: Request) -> dict[str, Any]:
    st = get_state(request)
    with st.auth.lock:
        st.auth.clients[body.client_id] = body
    return {"client_id": body.client_id, "client_type": body.client_type}


@router.post("/preapprove")
def preapprove(body: Preapproval, request: Request) -> dict[str, str]:
    st = get_state(request)
    if body.client_id not in st.auth.clients:
        raise HTTPException(404, f"unknown client {body.client_id!r}")
    _require_patient(st, body.patient_id)
    with st.auth.lock:
        st.auth.preapprovals[body.client_id] = (body.patient_id, body.scopes)
    return {"status": "preapproved"}


@router.post("/launch")
def launch(body: LaunchRequest, request: Request) -> dict[str, str]:
    st = get_state(request)
    if body.patient_id is not None:
        _require_patient(st, body.patient_id)
    token = secrets.token_urlsafe(24)
    with st.auth.lock:
        st.auth.launches[token] = Context(body.patient_id, body.encounter_id)
    return {"launch": token}


@router.get("/ehr-launch", response_model=None)
def ehr_launch(request: Request, launch_url: str, patient_id: str, encounter_id: str | None = None) -> RedirectResponse:
    """The EHR launcher (SAL-06): opens the app's launch URL with ``iss`` and a fresh single-use ``launch``."""
    st = get_state(request)
    _require_patient(st, patient_id)
    if not launch_url.startswith(("http://", "https://")):
        raise HTTPException(400, "launch_url must be an absolute http(s) URL")
    token = secrets.token_urlsafe(24)
    with st.auth.lock:
        st.auth.launches[token] = Context(patient_id, encounter_id)
    query = urlencode({"iss": st.fhir_base(request), "launch": token})
    return RedirectResponse(launch_url + ("&" if "?" in launch_url else "?") + query, status_code=302)


@router.post("/logout")
def logout(body: LogoutRequest, request: Request) -> dict[str, int]:
    return {"revoked": get_state(request).auth.logout(body.patient_id)}


@router.post("/faults", status_code=201)
def set_fault(body: Fault, request: Request) -> dict[str, Any]:
    get_state(request).faults.add(body)
    return body.model_dump()


@router.get("/faults")
def list_faults(request: Request) -> list[dict[str, Any]]:
    faults = get_state(request).faults
    return [f.model_dump() for f in faults.list()] + faults.quota_reports()


@router.delete("/faults")
def clear_faults(request: Request) -> dict[str, str]:
    get_state(request).faults.clear()
    return {"status": "cleared"}


@router.post("/faults/release")
def release_held(request: Request) -> dict[str, str]:
    """Requests a ``slow`` fault is holding go on now; the faults stay armed (a clear releases them too)."""
    get_state(request).faults.release()
    return {"status": "released"}


@router.post("/mutate")
def mutate_now(body: MutateRequest, request: Request) -> dict[str, list[str]]:
    st = get_state(request)
    seed = body.seed if body.seed is not None else secrets.randbits(32)
    indexes: list[int] | None = None
    if body.patients:
        indexes = []
        for pid in body.patients:
            index = patient_index_of_reference(pid)
            if index is None or index >= st.store.patients:
                raise HTTPException(status_code=422, detail=f"unknown patient id {pid!r}")
            indexes.append(index)
    result = mutate(st.store, body.create, body.update, body.delete, seed, indexes)
    return {"created": result.created, "updated": result.updated, "deleted": result.deleted}


@router.post("/restore")
def restore(body: RestoreRequest, request: Request) -> dict[str, list[str]]:
    """Re-create deleted resources under their ids, as they were, stamped with the server clock (a resource
    deleted, then created again: the id comes back to search, read and export)."""
    st = get_state(request)
    restored: list[str] = []
    for ref in body.resources:
        rtype, _, rid = ref.partition("/")
        try:
            st.store.restore(rtype, rid)
        except SandboxError as exc:
            raise HTTPException(404, str(exc)) from None
        restored.append(ref)
    return {"restored": restored}


@router.post("/groups/{group_id}/members")
def change_group_members(group_id: str, body: MembershipChange, request: Request) -> dict[str, list[str]]:
    """Add/remove group members now (the Group is rewritten with the server clock): tests of BDX-15."""
    st = get_state(request)
    members = st.store.group_members(group_id)
    if members is None:
        raise HTTPException(404, f"unknown group {group_id!r}")

    def indexes(refs: list[str]) -> set[int]:
        out: set[int] = set()
        for ref in refs:
            index = patient_index_of_reference(ref)
            if index is None or index >= st.store.patients:
                raise HTTPException(422, f"unknown patient id {ref!r}")
            out.add(index)
        return out

    now = sorted((set(members) | indexes(body.add)) - indexes(body.remove))
    group = dict(st.store.read("Group", group_id))
    group["member"] = [{"entity": {"reference": f"Patient/{patient_id(i)}"}} for i in now]
    group["quantity"] = len(now)
    st.store.update(group)
    return {"members": [patient_id(i) for i in now]}


@router.get("/patients")
def patients(request: Request) -> list[str]:
    st = get_state(request)
    return [patient_id(i) for i in range(st.store.patients)]


@router.get("/settings")
def get_settings(request: Request) -> dict[str, Any]:
    return get_state(request).settings.model_dump(mode="json")


@router.post("/settings")
def update_settings(body: dict[str, Any], request: Request) -> dict[str, Any]:
    st = get_state(request)
    fixed = sorted(set(body) & STARTUP_ONLY)
    if fixed:
        raise HTTPException(400, f"fixed at start-up, cannot change at runtime: {', '.join(fixed)}")
    try:
        cfg = SandboxConfig.model_validate({**st.settings.model_dump(), **body})
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    st.apply_settings(cfg)
    return cfg.model_dump(mode="json")


@router.delete("/settings")
def reset_settings(request: Request) -> dict[str, Any]:
    st = get_state(request)
    st.apply_settings(st.initial.model_copy(deep=True))
    return st.settings.model_dump(mode="json")
