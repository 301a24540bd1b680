"""The one way to get an httpx client for an EHR: its transport is the retry layer over the EHR's reported quota
(:mod:`.quota`) over the vendor rate budget over one bounded attempt over the network, so every call (FHIR, Bulk,
SMART discovery, token endpoint) takes the same path.

A caller may hand in its own ``httpx.Client`` (shared pools, test transports, event hooks): the layers are
then put in front of it, and requests are still built by the caller's client (its headers, cookies and
timeouts), only sent through the layers.

httpx logs each request a client sends (``HTTP Request: GET <url> "HTTP/1.1 200 OK"``, INFO on the ``httpx``
logger), so a request sent by an ``EhrClient`` was logged twice: by the client under the layers and again by the
``EhrClient`` once the layers returned. The line of the client under the layers is kept (one per request on the
wire, each retried attempt its own); the ``EhrClient``'s repeat is dropped by a filter on the ``httpx`` logger: the
layers mark an answer they hand back, and the filter drops the one line httpx logs next in that context, which is
the ``EhrClient``'s own about that answer. Nothing else is dropped: a request another client sends meanwhile (a
token source's refresher in the auth flow, an event hook) keeps its line.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import httpx

from connectors.transport.attempt import AttemptTransport
from connectors.transport.bounded_client import BoundedClient
from connectors.transport.bounds import BodyBounds
from connectors.transport.budget import BudgetTransport
from connectors.transport.quota import QuotaTransport
from connectors.transport.redirects import install_location_check, layers_sending
from connectors.transport.request_lines import install_queryless_request_lines
from connectors.transport.retrying import RetryTransport

__all__ = ["DEFAULT_TIMEOUT", "EhrClient", "ehr_client", "ehr_transport"]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


# True from the moment the layers hand an answer back to an EhrClient until httpx logs it (the repeat)
_REPEAT_DUE: ContextVar[bool] = ContextVar("ehrsync_layers_repeat_due", default=False)


class _DropLayersRepeat(logging.Filter):
    """Drops the ``httpx`` record an ``EhrClient`` logs about an answer its layers handed back (once per answer):
    the client under the layers logged that request already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _REPEAT_DUE.get():
            return True
        _REPEAT_DUE.set(False)
        return False


_DROP_LAYERS_REPEAT = _DropLayersRepeat()


class _MarkRepeat(httpx.BaseTransport):
    """The outermost layer: marks each answer it hands back, so the ``EhrClient``'s line about it is dropped."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _REPEAT_DUE.set(False)
        response = self._inner.handle_request(request)
        _REPEAT_DUE.set(True)  # httpx logs this answer next, in this context
        return response

    def close(self) -> None:
        self._inner.close()


class EhrClient(BoundedClient):
    """An ``httpx.Client`` whose transport carries the EHR layers (built by :func:`ehr_client`), and the bounds
    of the client it was built over. Its requests are logged once, by the client under the layers."""

    def __init__(self, *, bounds: BodyBounds | None, transport: httpx.BaseTransport, **kwargs: Any) -> None:
        super().__init__(bounds=bounds, transport=_MarkRepeat(transport), **kwargs)
        logging.getLogger("httpx").addFilter(_DROP_LAYERS_REPEAT)  # a filter the logger holds is not added again
        install_queryless_request_lines()  # httpx's lines keep no query (search values, signed URLs' signatures)

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        token = _REPEAT_DUE.set(False)
        try:
            return super().send(request, **kwargs)
        finally:
            _REPEAT_DUE.reset(token)  # a mark no record took (httpx not logging) ends with the send


class _Borrowed(httpx.BaseTransport):
    """Sends through a caller's client (its own transport, proxies and event hooks), which the caller closes.
    A redirect whose Location httpx cannot parse is a FhirError here, never retried; a SMART call's drops that
    Location instead (:mod:`.redirects`)."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        install_location_check(self._http)
        with layers_sending():
            return self._http.send(request, stream=True, auth=None, follow_redirects=False)

    def close(self) -> None:
        """The caller owns the client."""


class _Owned(_Borrowed):
    """Sends through a client built for the purpose, closed with the layers."""

    def close(self) -> None:
        self._http.close()


def ehr_transport(inner: httpx.BaseTransport) -> httpx.BaseTransport:
    """Retries (per the request's plan) over the EHR's reported quota over the rate budget over one bounded
    attempt over ``inner``: every attempt waits for a spent quota's reset (or fails, nothing sent), spends a call
    (or fails, nothing sent, when the wait for it would end past a transfer's deadline, a SMART call's or the step's
    budget: :mod:`.budget`), and its deadline starts once the budget let it go; every answer's quota headers are
    read on its way up."""
    return RetryTransport(QuotaTransport(BudgetTransport(AttemptTransport(inner))))


def ehr_client(http: httpx.Client | None = None, *, timeout: httpx.Timeout | float | None = None) -> EhrClient:
    """A client that sends through the EHR layers: a new one (the caller closes it) when ``http`` is None,
    ``http`` itself when it already is one, else layers in front of ``http`` (nothing to close)."""
    if isinstance(http, EhrClient):
        return http
    if http is None:  # layers over a client of its own: proxies from the environment, the deadline to the headers
        own = BoundedClient(bounds=None, timeout=timeout or DEFAULT_TIMEOUT, follow_redirects=False)
        return EhrClient(
            bounds=None,
            transport=ehr_transport(_Owned(own)),
            timeout=own.timeout,
            follow_redirects=False,
            trust_env=False,
        )
    return EhrClient(
        bounds=http.bounds if isinstance(http, BoundedClient) else None,
        transport=ehr_transport(_Borrowed(http)),
        timeout=http.timeout,
        follow_redirects=http.follow_redirects,
        trust_env=False,
    )
