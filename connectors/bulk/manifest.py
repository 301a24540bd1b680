"""Bulk Data completion manifest (BDX-12): strict on what the IG requires, tolerant of everything else."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.bulk.file_limits import MAX_FILES_ENV, MAX_MANIFEST_FILES
from connectors.errors import BulkExportError
from connectors.http import has_control_characters, parse_instant, resolve_url, url_problem
from connectors.ndjson_files import UTF8_BOM

__all__ = [
    "MAX_MANIFEST_FILES",
    "OBJECTS_PER_FILE",
    "VALUES_PER_FILE",
    "BulkManifest",
    "ManifestItem",
    "files_over_limit",
    "page_objects_over_limit",
    "parse_manifest",
]

#: MAX_MANIFEST_FILES is the default of the most files one export lands (EHRSYNC_BULK_MAX_FILES). Each costs a
#: download, two app-database commits, a landing file and ~4 KB of memory while the manifest is stored
#: (docs/PERFORMANCE.md, "Bulk manifests of many files"): a 64 MiB manifest of tiny files (~1.3 million) needed
#: gigabytes before its first download. 20,000 files of 1,000 resources (HAPI's default) is 20 million resources; a
#: larger export of a big health system needs the setting raised.


@dataclass(frozen=True)
class ManifestItem:
    """One file of an ``output``/``error``/``deleted`` array: resource ``type``, absolute ``url``, ``count``."""

    type: str
    url: str
    count: int | None = None
    extension: dict[str, Any] | None = None


@dataclass(frozen=True)
class BulkManifest:
    """A validated manifest. ``transaction_time`` becomes the next ``_since`` once everything landed (BDX-14)."""

    transaction_time: datetime
    request: str
    requires_access_token: bool
    output: list[ManifestItem]
    error: list[ManifestItem]
    deleted: list[ManifestItem] = field(default_factory=list)
    extension: dict[str, Any] | None = None
    #: ``link`` with ``relation`` ``next``: the manifest goes on at this URL (a paged manifest, Bulk Data 3.0+).
    next_page: str | None = None


def _invalid(reason: str) -> BulkExportError:
    return BulkExportError(f"invalid bulk manifest: {reason}", status=200)


def files_over_limit(files: int, limit: int = MAX_MANIFEST_FILES) -> BulkExportError | None:
    """The invalid-manifest error for a manifest listing more than ``limit`` files, else None."""
    if files <= limit:
        return None
    return _invalid(
        f"it lists {files} files, more than the {limit} ehrsync lands from one export ({MAX_FILES_ENV}): raise"
        f" {MAX_FILES_ENV} to land an export this large (each file costs ~4 KB of memory while the manifest is"
        " stored), or export fewer types or patients per job, or have the server write larger files"
    )


#: The most JSON objects and arrays (``{`` and ``[``, counted before decoding) a manifest page may hold for each file
#: the limit allows: an item is one object, and its ``extension`` a few more; the page's own object, its lists and its
#: ``link`` entries come on top (:data:`PAGE_OBJECTS_SLACK`). Decoding costs ~500 bytes of memory an object (an empty
#: array ~60): a 61 MiB page of a million tiny items took ~540 MB before the file count refused it; at the default
#: limit this bound decodes at most ~160,000 (~85 MB). Arrays count too: ``"output": [[], [], ...]`` decoded to ~50x
#: its bytes. A byte cap would not do: legal items run from ~100 bytes to several KB (signed URLs, extensions).
OBJECTS_PER_FILE = 8
#: The most commas (one between any two values of an array or members of an object) a page may hold for each file:
#: an item has ~3, its extension a few more, a signed URL rarely any raw. Without it ``"output": ["ab", "ab", ...]``
#: or a list of numbers, no object among them, decoded to ~20-25x its bytes (the parser's reserve and a Python object
#: a value) before the file count refused it; at the default limit it decodes at most ~1.3 million values (~70 MB).
VALUES_PER_FILE = 64
PAGE_OBJECTS_SLACK = 64
_JSON_OBJECT_START = re.compile(rb"[ \t\r\n]*\{")


def page_objects_over_limit(body: bytes, limit: int = MAX_MANIFEST_FILES) -> BulkExportError | None:
    """The invalid-manifest error for a page (``body``, raw) holding more JSON objects and arrays, or more values,
    than ``limit`` files could, counted without decoding it (``bytes.count``, no allocation), else None. A ``{``,
    ``[`` or ``,`` inside a string counts too: an over-count, which the per-file allowance absorbs (a file URL has no
    raw ``{`` or ``[``, RFC 3986). A body that does not begin as a JSON object (a gateway's HTML page with its
    styles) is no manifest: the callers treat it as such without decoding it (``json_object_text``)."""
    start = len(UTF8_BOM) if body.startswith(UTF8_BOM) else 0
    if _JSON_OBJECT_START.match(body, start) is None:  # leading whitespace of any length
        return None
    for what, per_file, chars in (
        ("JSON objects and arrays", OBJECTS_PER_FILE, (b"{", b"[")),
        ("JSON values (counted by the commas between them)", VALUES_PER_FILE, (b",",)),
    ):
        allowed = per_file * limit + PAGE_OBJECTS_SLACK
        if len(body) <= allowed or (found := sum(body.count(c) for c in chars)) <= allowed:
            continue
        return _invalid(
            f"a page of it holds {found} {what}, more than {allowed}, what the {limit} files ehrsync lands from one"
            f" export ({MAX_FILES_ENV}) could need ({per_file} each, extensions included): it lists too many files,"
            f" refused before decoding it (~500 bytes of memory an object); raise {MAX_FILES_ENV} to land an export"
            " this large, or export fewer types or patients per job, or have the server write larger files"
        )
    return None


def _resolved(reference: str, base_url: str) -> str:
    """``reference`` resolved against ``base_url``; an empty one (which resolves to the page itself, RFC 3986 §5.2)
    or one holding control characters (urllib drops tabs and newlines first: ``/<tab>/evil.example`` would name
    another host) is left as written, for :func:`url_problem` to refuse as it did before references resolved."""
    if not reference or has_control_characters(reference):
        return reference
    return resolve_url(reference, base_url)


def _items(body: dict[str, Any], key: str, *, required: bool, base_url: str | None) -> list[ManifestItem]:
    """The items of ``key``; a ``url`` written as a reference (``/files/p.ndjson``, ``files/p.ndjson``) is resolved
    against ``base_url``, the URL the manifest page was read from (RFC 3986 §5): Bulk Data 1.0 calls it "the path to
    the file", 2.0 "the absolute path to the file". Refused as invalid, such a manifest failed every run."""
    raw = body.get(key)
    if raw is None:
        if required:
            raise _invalid(f"{key!r} is missing")
        return []
    if not isinstance(raw, list):
        raise _invalid(f"{key!r} must be an array")
    items: list[ManifestItem] = []
    page = None if base_url is None else base_url.split("#", 1)[0]
    for index, entry in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(entry, dict):
            raise _invalid(f"{where} is not an object")
        kind = entry.get("type")
        if not isinstance(kind, str) or not kind:
            raise _invalid(f"{where}.type is missing")
        url = entry.get("url")
        if isinstance(url, str) and base_url is not None:
            url = _resolved(url.strip(), base_url)
        problem = url_problem(url) if isinstance(url, str) else "is not text"
        if problem is not None or not isinstance(url, str):  # urllib's ValueError would escape every handler
            against = "" if base_url is None else " once resolved against the manifest's URL"
            raise _invalid(f"{where}.url must be an http(s) URL{against}: it {problem}")
        if page is not None and url.split("#", 1)[0] == page:
            raise _invalid(f"{where}.url names the manifest page itself, not a file")  # a bare '#x' resolves so
        count = entry.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise _invalid(f"{where}.count must be a non-negative integer")
        extension = entry.get("extension")
        items.append(ManifestItem(kind, url, count, extension if isinstance(extension, dict) else None))
    return items


def _next_page(body: dict[str, Any]) -> str | None:
    """The ``url`` of the ``link`` whose ``relation`` is ``next`` in any case (RFC 8288 compares relation types
    case-insensitively: a ``Next`` read as none ended the manifest early), if any (the caller resolves it)."""
    links = body.get("link")
    if links is None:
        return None
    if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
        raise _invalid("'link' must be an array of objects")
    for link in links:
        relation = link.get("relation")
        if isinstance(relation, str) and relation.lower() == "next":
            url = link.get("url")
            if not isinstance(url, str) or not url.strip():
                raise _invalid("the 'next' link has no url")
            return url.strip()
    return None


def parse_manifest(
    body: Any, *, later_page: bool = False, max_files: int = MAX_MANIFEST_FILES, base_url: str | None = None
) -> BulkManifest:
    """Validate a decoded manifest; raises BulkExportError naming the first problem. A ``later_page`` (reached by a
    ``next`` link) may leave out ``request``, which the first page names. More than ``max_files`` files is invalid
    (:func:`files_over_limit`), counted before any item is built. File URLs are resolved against ``base_url`` (the
    page's own URL); without one, each must be an absolute URL."""
    if not isinstance(body, dict):
        raise _invalid("body is not a JSON object")
    transaction_time = parse_instant(body.get("transactionTime"))
    if transaction_time is None:
        raise _invalid("'transactionTime' is missing or not an instant with a timezone")
    request = body.get("request", "" if later_page else None)
    if not isinstance(request, str) or not (request or later_page):
        raise _invalid("'request' is missing")
    requires = body.get("requiresAccessToken")
    if not isinstance(requires, bool):
        raise _invalid("'requiresAccessToken' must be a boolean")
    extension = body.get("extension")
    if extension is not None and not isinstance(extension, dict):
        raise _invalid("'extension' must be an object")
    listed = sum(len(v) for v in (body.get(k) for k in ("output", "error", "deleted")) if isinstance(v, list))
    if (too_many := files_over_limit(listed, max_files)) is not None:  # before an item of a huge list is built
        raise too_many
    return BulkManifest(
        transaction_time=transaction_time,
        request=request,
        requires_access_token=requires,
        output=_items(body, "output", required=not later_page, base_url=base_url),
        error=_items(body, "error", required=not later_page, base_url=base_url),
        deleted=_items(body, "deleted", required=False, base_url=base_url),
        extension=extension,
        next_page=_next_page(body),
    )
