"""HTTP layer: routes, dependencies and the JSON error contract."""
