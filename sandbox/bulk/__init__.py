"""Bulk Data Access 2.0 ``$export``: kick-off, background NDJSON jobs, status, manifest, files."""
