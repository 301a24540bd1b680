import psycopg
import pytest


@pytest.mark.postgres
def test_throwaway_postgres_accepts_connections(postgres_url: str) -> None:
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 1 + 1").fetchone() == (2,)
