"""A tiny OAuth token server on a real socket that counts grants (for vault tests across processes).

Behaviour knobs live on ``TokenServerState``: rotation (eCW) or keep-original (Cerner), reuse detection
(a rotated-away refresh token answers ``invalid_grant``), a delay to widen race windows, queued failures, and the
client secret registered at the server (a rotated one: requests with another answer ``invalid_client``).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


@dataclass
class TokenServerState:
    rotate: bool = True
    expires_in: int = 3600
    delay_s: float = 0.0
    valid_refresh: set[str] = field(default_factory=set)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    #: token_type_hints whose revocation answers 503 (e.g. {"access_token"}: the refresh token's still works)
    revoke_unavailable: set[str] = field(default_factory=set)
    grants: list[dict[str, Any]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    #: the next token requests (any grant) answer these (status, JSON body), one each
    answer_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    answer_headers: dict[str, str] = field(default_factory=dict)  # headers of the ``answer_next`` answers
    trickle_s: float = 0.0  # > 0: the next token answers send their body one byte every trickle_s seconds
    issued: int = 0
    answer_scope: str | None = None  # set: every grant answers this ``scope`` (e.g. "", a blank scope)
    #: set: every client_credentials grant is refused with this (status, OAuth error body)
    client_refusal: tuple[int, dict[str, str]] | None = None
    #: set: the client secret registered here; a token request whose Basic credentials carry another (or none) is
    #: refused ``invalid_client`` (401) before its grant is looked at, as RFC 6749 §3.2.1 servers do
    client_secret: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # When ``release`` is set up, each token request sets ``seen`` and waits (up to 10 s) for ``release``.
    seen: threading.Event = field(default_factory=threading.Event)
    release: threading.Event | None = None
    release_timed_out: bool = False

    def count(self, grant_type: str) -> int:
        return sum(1 for g in self.grants if g["form"].get("grant_type") == grant_type)


async def _trickle(body: bytes, delay_s: float) -> AsyncIterator[bytes]:
    for i in range(len(body)):
        yield body[i : i + 1]
        await asyncio.sleep(delay_s)


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


def create_app(state: TokenServerState, base: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/fhir/.well-known/smart-configuration")
    def config() -> dict[str, Any]:
        return {
            "token_endpoint": f"{base[0]}/token",
            "authorization_endpoint": f"{base[0]}/authorize",
            "revocation_endpoint": f"{base[0]}/revoke",
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "capabilities": ["launch-standalone", "client-public", "client-confidential-asymmetric"],
            "code_challenge_methods_supported": ["S256"],
        }

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = _form(await request.body())
        if state.delay_s:
            await asyncio.sleep(state.delay_s)  # holds the race window open
        if state.release is not None:
            state.seen.set()
            state.release_timed_out = not await asyncio.to_thread(state.release.wait, 10)
        with state.lock:
            state.grants.append({"form": form, "authorization": request.headers.get("authorization")})
            if state.trickle_s:
                return StreamingResponse(_trickle(b'{"access_token": "never-whole"}', state.trickle_s))
            if state.fail_next:
                status = state.fail_next.pop(0)
                return JSONResponse({"error": "temporarily_unavailable"}, status_code=status)
            if state.answer_next:
                status, answer = state.answer_next.pop(0)
                return JSONResponse(answer, status_code=status, headers=state.answer_headers)
            if state.client_secret is not None and basic_secret(request.headers.get("authorization")) != (
                state.client_secret
            ):
                return JSONResponse(
                    {"error": "invalid_client", "error_description": "client authentication failed"}, 401
                )
            grant = form.get("grant_type")
            state.issued += 1
            n = state.issued
            body: dict[str, Any] = {"access_token": f"at-{n}", "token_type": "bearer", "expires_in": state.expires_in}
            if grant == "refresh_token":
                old = form.get("refresh_token", "")
                if old not in state.valid_refresh:
                    return JSONResponse({"error": "invalid_grant", "error_description": "refresh token reused"}, 400)
                body["scope"] = "patient/*.rs offline_access"
                if state.rotate:
                    state.valid_refresh.discard(old)
                    body["refresh_token"] = f"rt-{n}"
                    state.valid_refresh.add(body["refresh_token"])
            elif grant == "client_credentials":
                if not form.get("client_assertion"):
                    return JSONResponse({"error": "invalid_client"}, 401)
                if state.client_refusal is not None:
                    return JSONResponse(state.client_refusal[1], state.client_refusal[0])
                body["scope"] = form.get("scope")
                body["expires_in"] = 300
            else:
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            if state.answer_scope is not None:
                body["scope"] = state.answer_scope
            return JSONResponse(body)

    @app.post("/revoke")
    async def revoke(request: Request) -> Response:
        form = _form(await request.body())
        if form.get("token_type_hint", "") in state.revoke_unavailable:
            return JSONResponse({"error": "temporarily_unavailable"}, 503, headers={"Retry-After": "30"})
        with state.lock:
            state.revoked.append((form.get("token_type_hint", ""), form["token"]))
            state.valid_refresh.discard(form["token"])
        return Response(status_code=200)

    return app


def basic_user(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    return unquote(base64.b64decode(header[6:]).decode().partition(":")[0])


def basic_secret(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    return unquote(base64.b64decode(header[6:]).decode().partition(":")[2])


@dataclass
class RunningTokenServer:
    base_url: str
    state: TokenServerState

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"


@contextmanager
def run_token_server(state: TokenServerState | None = None) -> Iterator[RunningTokenServer]:
    """Serve on 127.0.0.1:<free port> in a background thread; stopped on exit."""
    state = state or TokenServerState()
    base: list[str] = [""]
    config = uvicorn.Config(create_app(state, base), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("token server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base[0] = f"http://127.0.0.1:{port}"
    try:
        yield RunningTokenServer(base[0], state)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
