"""The sandbox's FHIR R4 REST API: discovery, read, search with paging, conditional create."""
