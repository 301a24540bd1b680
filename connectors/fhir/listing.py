"""A lookup's search read to its end (DWB-32/33).

A sync must stop paging when a match of an earlier page comes again: offset paging over changing data skipped one,
and its mark may not pass it. A lookup (is this draft's note on the EHR?) guards no mark, and stopping there hides
every later page: on a server whose pages always overlap by one, a match on page 3 is never read. So a lookup reads
every page (``read_to_end``), takes a repeated match for the same resource, and only at the end says the listing
may have skipped one (``repeated_match``) so its caller can search again. Kept out of ``client``, which is full.
"""

from __future__ import annotations

from collections.abc import Iterator

from connectors.fhir._query import DEFAULT_COUNT, check_type, query_pairs
from connectors.fhir._session import QueryParams
from connectors.fhir.client import FhirClient
from connectors.fhir.search import SearchPage, iter_search_pages

__all__ = ["read_to_end"]


def read_to_end(
    client: FhirClient, resource_type: str, params: QueryParams | None = None, *, count: int | None = DEFAULT_COUNT
) -> Iterator[SearchPage]:
    """Every page of a search, ``next`` links followed as given (relative ones resolved); a match repeated on a later
    page does not stop it. Raises ``SearchIncompleteError`` as ``FhirClient.search_pages`` does (a looping link, a
    page of repeats only, an error outcome, a ``total`` not reached), and ``repeated_match`` after the last page
    when a match came again and no ``total`` shows every match arrived. The caller bounds pages and time."""
    check_type(resource_type)
    return iter_search_pages(
        client.session,
        client.url_for(resource_type),
        query_pairs(params, count),
        bounds=client.bounds,
        resource_type=resource_type,
        stop_at_repeat=False,
    )
