"""The completion manifest a finished job answers with, whole or in pages (``link`` ``next``, Bulk Data 3.0+)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from sandbox.bulk.file_urls import file_url
from sandbox.bulk.jobs import Job
from sandbox.state import SandboxState

__all__ = ["manifest_page_of"]


def manifest_page_of(st: SandboxState, request: Request, job: Job, page: int) -> dict[str, Any]:
    """Page ``page`` (from 1) of ``job``'s manifest. With ``bulk_manifest_page_size`` set, each page lists that many
    ``output`` files and links the next; the ``error`` and ``deleted`` files come on the first page."""
    base, cfg = st.base(request), st.settings

    def items(files: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
        out = []
        for rtype, name, count in files:
            path = f"/bulk/files/{job.id}/{name}.ndjson"
            signed, params = cfg.bulk_signed_file_urls, cfg.bulk_file_url_params
            url = file_url(base, path, page, form=cfg.bulk_file_url_form, signed=signed, params=params)
            item: dict[str, Any] = {"type": rtype, "url": url}
            if not st.settings.bulk_omit_count:
                wrong = st.faults.take(path, frozenset({"bulk_wrong_count"}))
                item["count"] = count + (1 if wrong else 0)
            out.append(item)
        return out

    size = st.settings.bulk_manifest_page_size or max(1, len(job.files))
    outputs = job.files[(page - 1) * size : page * size]
    manifest: dict[str, Any] = {
        "transactionTime": job.transaction_time,
        "request": job.request_url,
        "requiresAccessToken": job.requires_token,
        "output": items(outputs),
        "error": items(job.error_files) if page == 1 else [],
    }
    if job.request.since is not None and page == 1:
        manifest["deleted"] = items(job.deleted_files)
    if page * size < len(job.files):
        manifest["link"] = [{"relation": "next", "url": f"{base}/bulk/status/{job.id}/page/{page + 1}"}]
    return manifest
