"""The ``httpx.Client`` that carries the request bounds its owner parsed once (:class:`BoundedClient`), and
:func:`bounds_of`, the bounds a client carries (else the environment's)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import httpx

from connectors.transport.bounds import BodyBounds
from connectors.transport.network import deadline_transport, keeps_deadline
from connectors.transport.tls import default_ssl_context

if TYPE_CHECKING:
    from httpx._types import CertTypes

__all__ = ["BoundedClient", "bounds_of"]

_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own default


class BoundedClient(httpx.Client):
    """An ``httpx.Client`` carrying the request bounds its owner parsed once at start (a Dagster resource, the
    auth service's settings): calls handed only a client (SMART discovery, JWKS, token endpoints) keep to the
    same limits as the FHIR and Bulk calls made with it, not to what the environment says when they run.
    ``None``: none configured (read from the environment when a call needs them)."""

    def __init__(self, *, bounds: BodyBounds | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bounds = bounds
        if "transport" not in kwargs and not keeps_deadline(self._transport):  # httpx renamed its hooks below
            raise RuntimeError("httpx no longer builds BoundedClient's transport through _init_transport")

    # httpx builds the default transport and one per proxy (from the arguments or the environment) through these
    # two hooks (httpx 0.28, keywords only); built here instead, by one builder (no proxy: the default transport),
    # they keep the deadline down to the headers (connectors/transport/network.py)
    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        transport: httpx.BaseTransport | None = None,
    ) -> httpx.BaseTransport:
        if transport is not None:
            return transport
        return self._init_proxy_transport(None, verify, cert, trust_env, http1, http2, limits)

    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy | None,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
    ) -> httpx.BaseTransport:
        if verify is True and not cert:  # the default trust store: one shared context, not a CA load per transport
            verify = default_ssl_context(trust_env)
        options = {"verify": verify, "cert": cert, "trust_env": trust_env, "http1": http1, "http2": http2}
        return deadline_transport(**options, limits=limits, proxy=proxy)


def bounds_of(http: httpx.Client | None) -> BodyBounds:
    """The bounds ``http`` carries; for any other client (a library caller's own) read from the environment, only
    now: a caller that passes its own bounds never depends on the environment."""
    if isinstance(http, BoundedClient) and http.bounds is not None:
        return http.bounds
    return BodyBounds.from_env()
