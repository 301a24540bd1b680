"""The connect page: find your health system by name (server-side search; script only makes it live).

``GET /connect?link=…&q=…`` is a complete page without JavaScript: a GET search form and the ranked matches as
radio buttons. With JavaScript, ``directory.js`` fetches ``/connect/results`` (the same results, as a
fragment) as the patient types and announces the count in a live region.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from auth_service.api.browser_seal import open_link
from auth_service.api.connect_cookies import LINK_COOKIE, remember_link
from auth_service.api.deps import CtxDep, ensure_browser_session, set_session_cookie
from auth_service.api.errors import ApiError
from auth_service.core.links import ConnectLinkClaims, InvalidLinkError
from auth_service.core.sealed_links import MAX_LINK_CHARS
from auth_service.pages.directory_search import SearchResult, search_entries
from auth_service.pages.rendering import render_error, templates
from auth_service.pages.scope_text import describe_scopes
from auth_service.services.context import ServiceContext
from auth_service.services.directory import TenantDirectory, load_directory

__all__ = ["router", "status_text"]

router = APIRouter(tags=["pages"], include_in_schema=False)
_SCRIPT = (Path(__file__).resolve().parents[2] / "static" / "directory.js").read_text(encoding="utf-8")
LinkParam = Annotated[str, Query(max_length=MAX_LINK_CHARS)]
QueryParam = Annotated[str, Query(max_length=200)]


def status_text(result: SearchResult) -> str:
    """What the live region says about the results (also the text a page without script shows)."""
    if not result.query:
        if result.entries:
            return f"{len(result.entries)} health system{'s' if len(result.entries) != 1 else ''} to choose from."
        return f"Type the name of your health system to see it here ({result.total} available)."
    if not result.entries:
        return f"No health system matches “{result.query}”. Check the spelling, or try a city or another name."
    text = f"{result.total} health system{'s' if result.total != 1 else ''} match “{result.query}”."
    if result.truncated:
        text += f" Showing the first {len(result.entries)}: type more to narrow the list."
    return text


def _open(ctx: ServiceContext, link: str) -> tuple[ConnectLinkClaims, TenantDirectory]:
    try:
        claims = open_link(ctx, link)  # a link of a key not configured (or a placeholder's): logged once, here
    except InvalidLinkError as exc:
        raise ApiError("invalid_link", str(exc)) from None
    directory = load_directory(ctx, claims.tenant_id)
    if directory is None:
        raise ApiError("invalid_link", "this practice no longer exists")
    return claims, directory


def _context(directory: TenantDirectory, link: str, q: str) -> dict[str, object]:
    result = search_entries(directory.entries, q)
    scope_lines: list[str] = []
    for profile in directory.profiles.values():
        scope_lines.extend(line for line in describe_scopes(profile.scopes) if line not in scope_lines)
    return {
        "tenant_name": directory.tenant_name,
        "has_entries": bool(directory.entries),
        "result": result,
        "status": status_text(result),
        "scope_lines": scope_lines,
        "link": link,
        "query": result.query,
    }


@router.get("/connect", response_class=HTMLResponse)
def connect_page(request: Request, ctx: CtxDep, link: LinkParam, q: QueryParam = "") -> Response:
    """The patient opens the host app's connect link: find and pick a health system, see what is shared."""
    try:
        claims, directory = _open(ctx, link)
    except ApiError as exc:
        return render_error(request, exc, retry=False)
    sid, new = ensure_browser_session(request)
    response = templates.TemplateResponse(request, "connect.html", _context(directory, link, q))
    if new:
        set_session_cookie(response, ctx, sid)
    remember_link(response, ctx, link, max_age=claims.expires_at - int(time.time()))
    return response


@router.get("/connect/results", response_class=HTMLResponse)
def connect_results(request: Request, ctx: CtxDep, link: LinkParam, q: QueryParam = "") -> Response:
    """The results fragment the script swaps in as the patient types (same search as the page)."""
    try:
        _, directory = _open(ctx, link)
    except ApiError as exc:
        return render_error(request, exc, retry=False)
    return templates.TemplateResponse(request, "_results.html", _context(directory, link, q))


@router.get("/connect/assets/directory.js")
def directory_script() -> Response:
    headers = {"Cache-Control": "public, max-age=3600"}
    return Response(_SCRIPT, media_type="text/javascript", headers=headers)


@router.get("/connect/restart")
def restart(request: Request, ctx: CtxDep) -> Response:
    """ "Try again" on an error page: back to the start of the flow with the link this browser opened."""
    link = request.cookies.get(LINK_COOKIE) or ""
    try:
        open_link(ctx, link)
    except InvalidLinkError:
        error = ApiError("invalid_link", "the connect link this browser opened is missing or has expired")
        return render_error(request, error, retry=False)
    return RedirectResponse("/connect?" + urlencode({"link": link}), status_code=303)
