"""How a manifest names its files (``bulk_file_url_form``): the absolute URL by default, or a reference a real
server may write instead. Bulk Data 1.0 calls ``output.url`` "the path to the file" and 2.0 "the absolute path to the
file" (its change log: "should be an absolute path"), so a server may write ``/bulk/files/...`` (``path``: an
absolute-path reference, RFC 3986 §4.2) or a reference relative to the manifest's own URL (``relative``); either
means the URL it resolves to against the manifest page it came on.
"""

from __future__ import annotations

import hashlib
from typing import Literal

__all__ = ["FileUrlForm", "file_url"]

FileUrlForm = Literal["absolute", "path", "relative"]


def _signature(signed: bool, path: str) -> str:
    """The query a signed file URL carries (``bulk_signed_file_urls``), else nothing; the file route ignores it."""
    if not signed:
        return ""
    digest = hashlib.sha256(f"sandbox-signing-key:{path}".encode()).hexdigest()
    return f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={digest}"


def file_url(base: str, path: str, page: int, *, form: FileUrlForm, signed: bool, params: str = "") -> str:
    """``path`` (``/bulk/files/{job}/{name}.ndjson``) as manifest page ``page`` names it in ``form``. Page 1 is the
    status URL ``/bulk/status/{job}``, a later page ``/bulk/status/{job}/page/{n}``: a relative reference climbs
    from there to ``/bulk/``. ``params`` (``bulk_file_url_params``) follow the last segment, before the query."""
    query = params + _signature(signed, path)
    if form == "absolute":
        return base + path + query
    if form == "path":
        return path + query
    up = "../" if page == 1 else "../../../"
    return up + path.removeprefix("/bulk/") + query
