"""Environment configuration of the Dagster layer (documented in docs/PIPELINES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.http.urls import outbound_url_guard
from engine.errors import PipelineConfigurationError
from engine.settings import PipelineSettings
from pipelines.resources import EhrHttpResource, default_resources


def test_defaults_live_under_the_state_dir(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)})
    assert settings.state_dir == tmp_path.resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'app.db'}"
    assert settings.warehouse_url == str(tmp_path.resolve() / "warehouse.duckdb")
    assert settings.landing_dir == tmp_path.resolve() / "landing"
    assert settings.dagster_home == tmp_path.resolve() / "dagster_home"
    assert settings.sync_windows == {}
    assert settings.quarantine_max_ratio == 0.01


def test_default_state_dir_is_var_demo() -> None:
    assert PipelineSettings.from_env({}).state_dir == Path("var/demo").resolve()


def test_ehrsync_home_is_accepted_and_state_dir_wins(tmp_path: Path) -> None:
    home = PipelineSettings.from_env({"EHRSYNC_HOME": str(tmp_path / "h")})
    both = PipelineSettings.from_env({"EHRSYNC_HOME": str(tmp_path / "h"), "EHRSYNC_STATE_DIR": str(tmp_path / "s")})
    assert home.state_dir == (tmp_path / "h").resolve()
    assert both.state_dir == (tmp_path / "s").resolve()


def test_explicit_urls_and_windows(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path),
            "DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:5/app",
            "WAREHOUSE_URL": "postgresql+psycopg://u@127.0.0.1:5/wh",
            "EHRSYNC_SYNC_WINDOWS": '{"epic": "22:00-06:00"}',
            "EHRSYNC_QUARANTINE_MAX_RATIO": "0.05",
        }
    )
    assert settings.database_url.endswith("/app")
    assert settings.warehouse_url.endswith("/wh")
    assert set(settings.sync_windows) == {"epic"}
    assert settings.sync_windows_raw == '{"epic": "22:00-06:00"}'
    assert settings.quarantine_max_ratio == 0.05


@pytest.mark.parametrize("value", ["lots", "-0.1", "1.5"])
def test_bad_quarantine_ratio_names_the_variable(value: str) -> None:
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_QUARANTINE_MAX_RATIO"):
        PipelineSettings.from_env({"EHRSYNC_QUARANTINE_MAX_RATIO": value})


def test_fetch_allowed_hosts_reach_the_sync_environment(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(tmp_path), "EHRSYNC_FETCH_ALLOWED_HOSTS": " Files.Clinic.local , 10.0.0.5:8443,"}
    )
    assert settings.fetch_allowed_hosts == ("files.clinic.local", "10.0.0.5:8443")
    ehr_http = default_resources(settings)["ehr_http"]
    assert isinstance(ehr_http, EhrHttpResource)
    assert ehr_http.fetch_allowed_hosts == "files.clinic.local,10.0.0.5:8443"


@pytest.mark.parametrize(
    "value",
    # a port no URL can carry (99999, 0) or spelt as no URL's port is (08443) never matched: the file was refused
    [
        "https://files.example",
        "files.example/path",
        "files example",
        "host:port",
        "files.example:99999",
        "files.example:0",
        "files.example:08443",
        "[not-an-ip]:8443",
        "[fd00::5",
    ],
)
def test_bad_fetch_allowed_host_names_the_variable(value: str) -> None:
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_FETCH_ALLOWED_HOSTS"):
        PipelineSettings.from_env({"EHRSYNC_FETCH_ALLOWED_HOSTS": value})


def test_an_ipv6_file_server_can_be_allowed() -> None:
    """The fetch guard matches an IPv6 literal by its bracketed form, as in a URL; the setting refused it."""
    settings = PipelineSettings.from_env({"EHRSYNC_FETCH_ALLOWED_HOSTS": "[FD00::5]:8443,[fd00::6]"})
    assert settings.fetch_allowed_hosts == ("[fd00::5]:8443", "[fd00::6]")
    guard = outbound_url_guard("https://ehr.example/fhir", allowed_hosts=settings.fetch_allowed_hosts)
    guard("http://[fd00::5]:8443/files/1.ndjson")
    guard("http://[fd00::6]/files/2.ndjson")


@pytest.mark.parametrize(
    ("entry", "url"),
    [
        # a Docker Compose service name: URLs and the fetch guard take the underscore, the setting refused it
        ("bulk_files:8080", "http://bulk_files:8080/files/1.ndjson"),
        # one IPv6 address spelt two ways (RFC 4291 2.2): the guard compared the text, and refused the file
        ("[fd00:0:0:0:0:0:0:5]:8443", "http://[fd00::5]:8443/files/1.ndjson"),
        ("[fd00::5]:8443", "http://[FD00:0000::0005]:8443/files/1.ndjson"),
        ("[::ffff:10.0.0.5]", "http://[::ffff:a00:5]/files/1.ndjson"),
    ],
)
def test_an_allowed_host_matches_its_urls_however_spelt(entry: str, url: str) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_FETCH_ALLOWED_HOSTS": entry})
    outbound_url_guard("https://ehr.example/fhir", allowed_hosts=settings.fetch_allowed_hosts)(url)


def test_a_port_with_a_leading_zero_is_named_as_such() -> None:
    """``files:08443`` was refused as not "a port from 1 to 65535", which 08443 seems to be."""
    with pytest.raises(PipelineConfigurationError, match=r"'files:08443'.* no leading zero"):
        PipelineSettings.from_env({"EHRSYNC_FETCH_ALLOWED_HOSTS": "files:08443"})


@pytest.mark.parametrize(
    "value",
    ["ftp://host/wh", "postgresql+psycopg2://u@h/db", "duckdb:///", "{tmp}", "{tmp}/a-file/warehouse.duckdb"],
)
def test_bad_warehouse_url_is_refused_before_any_work(tmp_path: Path, value: str) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PipelineConfigurationError, match="WAREHOUSE_URL"):
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), "WAREHOUSE_URL": value.format(tmp=tmp_path)})


@pytest.mark.parametrize(
    "value",
    ["{tmp}/wh.duckdb", "duckdb:///{tmp}/wh.duckdb", "postgresql+psycopg://u@127.0.0.1/wh", "postgres://u@h/wh"],
)
def test_good_warehouse_urls_are_kept(tmp_path: Path, value: str) -> None:
    url = value.format(tmp=tmp_path)
    assert PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), "WAREHOUSE_URL": url}).warehouse_url == url
