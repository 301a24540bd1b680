"""Shared fixtures live in tests/fixtures/ (one plugin per real component the tests start)."""

pytest_plugins = [
    "tests.fixtures.checkout",
    "tests.fixtures.dagster_context",
    "tests.fixtures.http",
    "tests.fixtures.postgres",
    "tests.fixtures.refused_ports",
    "tests.fixtures.sandbox",
]
