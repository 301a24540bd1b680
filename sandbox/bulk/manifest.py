"""The completion manifest a finished job answers with, whole or in pages (``link`` ``next``, Bulk Data 3.0+)."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request

from sandbox.bulk.jobs import Job
from sandbox.state import SandboxState

__all__ = ["manifest_page_of"]


def _signature(st: SandboxState, path: str) -> str:
    """The query a signed file URL carries (``bulk_signed_file_urls``), else nothing; the file route ignores it."""
    if not st.settings.bulk_signed_file_urls:
        return ""
    digest = hashlib.sha256(f"sandbox-signing-key:{path}".encode()).hexdigest()
    return f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={digest}"


def manifest_page_of(st: SandboxState, request: Request, job: Job, page: int) -> dict[str, Any]:
    """Page ``page`` (from 1) of ``job``'s manifest. With ``bulk_manifest_page_size`` set, each page lists that many
    ``output`` files and links the next; the ``error`` and ``deleted`` files come on the first page."""
    base = st.base(request)

    def items(files: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
        out = []
        for rtype, name, count in files:
            path = f"/bulk/files/{job.id}/{name}.ndjson"
            item: dict[str, Any] = {"type": rtype, "url": base + path + _signature(st, path)}
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
