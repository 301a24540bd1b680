"""Per-domain Dagster ``Definitions`` (sync, bulk, connections, maintenance); ``pipelines.definitions`` merges them."""
