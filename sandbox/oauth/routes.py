"""HTTP glue for the authorization server: authorize, token, revoke, introspect, jwks."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sandbox.data.ids import patient_id
from sandbox.errors import SandboxError
from sandbox.oauth import pages
from sandbox.oauth.authorize import (
    ErrorPage,
    RedirectError,
    auto_decision,
    build_pending,
    issue_code,
    redirect_url,
    validate_client,
)
from sandbox.oauth.broken import break_answer
from sandbox.oauth.client_auth import authenticate_client
from sandbox.oauth.errors import OAuthFailure
from sandbox.oauth.grants import TokenIssuer
from sandbox.state import SandboxState, get_state

if TYPE_CHECKING:
    from sandbox.oauth.keys import IdTokenFault

log = logging.getLogger(__name__)
router = APIRouter()
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_PICKER_LIMIT = 200


def _error_json(failure: OAuthFailure) -> JSONResponse:
    headers = dict(_NO_STORE)
    if failure.www_authenticate:
        headers["WWW-Authenticate"] = failure.www_authenticate
    body = {"error": failure.error, "error_description": failure.description}
    return JSONResponse(body, status_code=failure.status, headers=headers)


def _patients(st: SandboxState) -> list[tuple[str, str]]:
    out = []
    for i in range(min(st.store.patients, _PICKER_LIMIT)):
        p = st.store.patient_resources(i, ("Patient",))
        if p:
            name = p[0].get("name", [{}])[0]
            out.append((patient_id(i), f"{' '.join(name.get('given', []))} {name.get('family', '')} ({patient_id(i)})"))
    return out


def _forced_error(st: SandboxState, path: str) -> dict[str, str] | None:
    fault = st.faults.take(path, frozenset({"oauth_error"}))
    if fault is None:
        return None
    return {"error": fault.error, **({"error_description": fault.error_description} if fault.error_description else {})}


@router.get("/oauth/authorize", response_model=None)
def authorize(request: Request) -> Response:
    st = get_state(request)
    params = dict(request.query_params)
    try:
        validate_client(st.auth, params)
    except ErrorPage as exc:
        return HTMLResponse(pages.error_page(str(exc)), status_code=400)
    forced = _forced_error(st, "/oauth/authorize")
    if forced:
        url = redirect_url(params["redirect_uri"], {**forced, "state": params.get("state")})
        return RedirectResponse(url, status_code=302)
    now = st.clock.timestamp()
    try:
        pending = build_pending(st.auth, st.settings, params, st.fhir_base(request), now)
    except RedirectError as exc:
        args = {"error": exc.error, "error_description": exc.description, "state": params.get("state")}
        return RedirectResponse(redirect_url(params["redirect_uri"], args), status_code=302)
    decision = auto_decision(st.auth, st.settings, pending)
    if decision is not None:
        patient, scope = decision
        url = issue_code(st.auth, pending, patient, st.settings, st.fhir_base(request), now, scope)
        return RedirectResponse(url, status_code=302, headers=_NO_STORE)
    request_id = secrets.token_urlsafe(16)
    with st.auth.lock:
        st.auth.pending[request_id] = pending
    picker = _patients(st) if pending.needs_patient else None
    html = pages.consent_page(request_id, pending.client_id, pending.scope.split(), picker)
    return HTMLResponse(html, headers=_NO_STORE)


@router.post("/oauth/authorize", response_model=None)
async def authorize_submit(request: Request) -> Response:
    st = get_state(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    with st.auth.lock:
        pending = st.auth.pending.pop(form.get("request_id", ""), None)
    now = st.clock.timestamp()
    if pending is None or now > pending.expires_at:
        return HTMLResponse(pages.error_page("This authorization request is unknown or expired."), status_code=400)
    if form.get("decision") != "approve":
        args = {"error": "access_denied", "error_description": "the user denied access", "state": pending.state}
        return RedirectResponse(redirect_url(pending.redirect_uri, args), status_code=302)
    patient = form.get("patient_id") or None
    if pending.needs_patient and (patient is None or not _is_patient(st, patient)):
        return HTMLResponse(pages.error_page("Choose a valid patient."), status_code=400)
    url = issue_code(st.auth, pending, patient, st.settings, st.fhir_base(request), now)
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


def _is_patient(st: SandboxState, pid: str) -> bool:
    try:
        st.store.read("Patient", pid)
    except SandboxError:
        return False
    return True


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


@router.post("/oauth/token", response_model=None)
async def token(request: Request) -> Response:
    st = get_state(request)
    form = await _form(request)
    now = st.clock.timestamp()
    token_url = st.base(request) + "/oauth/token"
    try:
        forced = _forced_error(st, "/oauth/token")
        if forced:
            error, description = forced["error"], forced.get("error_description", "forced by a sandbox fault")
            # servers that echo what they refuse ("Invalid authorization code: <code>", as Spring's does)
            description = description.replace("{code}", form.get("code", ""))
            raise OAuthFailure(error, description, 401 if error == "invalid_client" else 400)
        client = authenticate_client(
            form,
            request.headers.get("authorization"),
            st.auth,
            token_url,
            st.settings.accept_client_secret_post,
            now,
            exp_leeway_s=st.settings.assertion_exp_leeway_s,
            assertion_algs=st.settings.assertion_algs,
        )
        id_fault = st.faults.take("/oauth/token", frozenset({"id_token"}))
        variant = cast("IdTokenFault", id_fault.error) if id_fault else None
        issuer = TokenIssuer(st.auth, st.keys, st.settings, st.fhir_base(request), now, variant)
        grant_type = form.get("grant_type")
        body: dict[str, Any]
        if grant_type == "authorization_code":
            body = issuer.authorization_code(client, form)
        elif grant_type == "refresh_token":
            body = issuer.refresh_token(client, form)
        elif grant_type == "client_credentials":
            body = issuer.client_credentials(client, form)
        else:
            raise OAuthFailure("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
    except OAuthFailure as failure:
        log.info("token request refused: %s", failure.error)
        return _error_json(failure)
    log.info("token issued to client %s (%s)", client.client_id, grant_type)
    broken = st.faults.take("/oauth/token", frozenset({"token_answer"}))
    if broken is not None:  # issued (a rotated refresh token is live), then answered in a form no client can use
        body = break_answer(body, broken.error)
    return JSONResponse(body, headers=_NO_STORE)


async def _caller_form(st: SandboxState, request: Request) -> dict[str, str] | JSONResponse:
    """The form of a request only an authenticated client may make (RFC 7009 §2.1, RFC 7662 §2.1), or the
    error to answer."""
    form = await _form(request)
    try:
        authenticate_client(
            form,
            request.headers.get("authorization"),
            st.auth,
            st.base(request) + "/oauth/token",
            True,
            st.clock.timestamp(),
            exp_leeway_s=st.settings.assertion_exp_leeway_s,
            assertion_algs=st.settings.assertion_algs,
        )
    except OAuthFailure as failure:
        return _error_json(failure)
    return form


@router.post("/oauth/revoke", response_model=None)
async def revoke(request: Request) -> Response:
    st = get_state(request)
    form = await _caller_form(st, request)
    if isinstance(form, JSONResponse):
        return form
    with st.auth.lock:
        rec = st.auth.tokens.get(form.get("token", ""))
        if rec is not None:
            rec.revoked = True
            if rec.kind == "refresh":
                st.auth.revoke_family(rec.family)
    return Response(status_code=200, headers=_NO_STORE)


@router.post("/oauth/introspect", response_model=None)
async def introspect(request: Request) -> Response:
    st = get_state(request)
    form = await _caller_form(st, request)
    if isinstance(form, JSONResponse):
        return form
    rec = st.auth.tokens.get(form.get("token", ""))
    if rec is None or not rec.live(st.clock.timestamp()) or (rec.kind == "refresh" and rec.used):
        return JSONResponse({"active": False}, headers=_NO_STORE)
    body: dict[str, Any] = {
        "active": True,
        "scope": rec.scope,
        "client_id": rec.client_id,
        "token_type": "Bearer" if rec.kind == "access" else "refresh_token",
        "iss": st.fhir_base(request),
    }
    if rec.expires_at is not None:
        body["exp"] = int(rec.expires_at)
    if rec.context.patient:
        body["patient"] = rec.context.patient
    if rec.context.encounter:
        body["encounter"] = rec.context.encounter
    if rec.context.fhir_user:
        body["fhirUser"] = rec.context.fhir_user
        body["sub"] = rec.context.fhir_user.rsplit("/", 1)[-1]
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/oauth/jwks")
@router.get("/oauth/keys")
def jwks(request: Request) -> JSONResponse:
    st = get_state(request)
    if request.url.path.endswith("/keys") != st.settings.jwks_moved:  # only where the documents say they are
        return JSONResponse({"error": "not found"}, status_code=404)
    body = st.keys.jwks()
    current = body["keys"][0]
    body["keys"] += [{**current, "kid": f"retired-{n}"} for n in range(st.settings.jwks_extra_keys)]
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})
