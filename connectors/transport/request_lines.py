"""httpx's per-request log lines without their query strings, in every process that sends through ehrsync's layers.

httpx logs each request at INFO with its whole URL. A query carries search values (``patient=``) and a signed file
URL its signature (a pre-signed Bulk file or attachment link is a credential for as long as it lasts), and ehrsync's
own lines keep only scheme, host and path (``connectors.http.redact_url``). The filter is put on the ``httpx`` logger
when an ``EhrClient`` is built, so a Dagster run, the auth service or any host app that turns httpx's INFO on gets
the same lines as ``ehrsync -v``; no process has to remember to install it. Imports nothing heavy: the CLI installs
it too, for clients not built by ehrsync.
"""

from __future__ import annotations

import logging

__all__ = ["QuerylessRequestLines", "install_queryless_request_lines"]


class QuerylessRequestLines(logging.Filter):
    """Each URL among a record's arguments keeps its scheme, host and path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_url(arg) for arg in record.args):
            from connectors.http import redact_url

            record.args = tuple(redact_url(str(arg)) if _is_url(arg) else arg for arg in record.args)
        return True


def install_queryless_request_lines() -> None:
    """Put the filter on the ``httpx`` logger once (a second call adds nothing)."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, QuerylessRequestLines) for f in httpx_logger.filters):
        httpx_logger.addFilter(QuerylessRequestLines())


def _is_url(value: object) -> bool:
    """An ``httpx.URL``, or one already turned into text (the auth service's redacting record factory does that
    to every argument before logger filters run)."""
    if type(value).__name__ == "URL" and type(value).__module__.startswith("httpx"):
        return True
    return isinstance(value, str) and value.startswith(("http://", "https://"))
