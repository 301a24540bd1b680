"""A ``fhirUser`` (or any literal reference) read as the resource it names on one FHIR server."""

from __future__ import annotations

__all__ = ["reference_on"]


def reference_on(reference: str | None, fhir_base: str | None) -> tuple[str, str] | None:
    """``(type, id)`` of ``reference``: ``Type/id`` or ``{fhir_base}/Type/id``, where a ``/_history/v`` version names
    the same resource. An absolute URL under another base names another server's resource: None (``fhir_base``
    None: any base). None too for what is no ``Type/id`` reference."""
    if not reference:
        return None
    text = reference.strip().rstrip("/")
    if "://" in text:
        if fhir_base is None:
            text = text.split("://", 1)[1]
        else:
            base = fhir_base.rstrip("/") + "/"
            if not text.startswith(base):
                return None
            text = text[len(base) :]
    segments = text.split("/")
    if len(segments) > 2 and segments[-2] == "_history":
        segments = segments[:-2]
    if len(segments) < 2 or (fhir_base is not None and len(segments) != 2):
        return None
    kind, resource_id = segments[-2], segments[-1]
    return (kind, resource_id) if kind[:1].isupper() and resource_id else None
