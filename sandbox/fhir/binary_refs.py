"""A DocumentReference create must reference Binaries the server holds, as an EHR filing a note checks its content.

A ``content[].attachment.url`` naming ``Binary/{id}`` (relative, or on this server's FHIR base) that the sandbox does
not hold (never created, or deleted) is refused 422 ``not-found``, the expression naming the attachment. The fault
``binary_gone`` first deletes the Binaries the create references (consumed once per create it fires on), as an EHR
purging a Binary no note referenced yet does: that note, and every later one referencing the same Binary, is
refused; only a new Binary is filed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from sandbox.errors import ResourceGone, ResourceNotFound
from sandbox.fhir.responses import FhirFailure
from sandbox.state import SandboxState

__all__ = ["check_binary_refs"]

log = logging.getLogger(__name__)
_PREFIX = "Binary/"


def _binary_ids(st: SandboxState, request: Request, body: dict[str, Any]) -> list[tuple[int, str]]:
    """(content index, Binary id) of each attachment naming a Binary of this server."""
    base = f"{st.fhir_base(request)}/"
    found = []
    for index, item in enumerate(body.get("content") or []):
        url = str((item.get("attachment") or {}).get("url") or "") if isinstance(item, dict) else ""
        url = url.removeprefix(base)
        if url.startswith(_PREFIX) and "/" not in url[len(_PREFIX) :]:
            found.append((index, url[len(_PREFIX) :]))
    return found


def check_binary_refs(st: SandboxState, request: Request, resource_type: str, body: dict[str, Any]) -> None:
    """Raise 422 naming the first referenced Binary the sandbox does not hold (after ``binary_gone`` deleted them)."""
    if resource_type != "DocumentReference":
        return
    refs = _binary_ids(st, request, body)
    if refs and st.faults.take(request.url.path, frozenset({"binary_gone"}), "POST") is not None:
        for _, binary_id in refs:
            try:
                st.store.delete("Binary", binary_id)
                log.info("fault binary_gone deleted Binary/%s", binary_id)
            except (ResourceGone, ResourceNotFound):
                pass
    for index, binary_id in refs:
        try:
            st.store.read("Binary", binary_id)
        except (ResourceGone, ResourceNotFound):
            raise FhirFailure(
                422,
                "not-found",
                f"DocumentReference.content[{index}].attachment.url: Binary/{binary_id} does not exist",
            ) from None
