"""tests/assertion_cache.py writes the rewrites pytest reads back, for every module pytest rewrites here."""

from __future__ import annotations

from pathlib import Path

from _pytest.assertion import rewrite

from tests.assertion_cache import (
    TESTS,
    conftest_plugins,
    plugin_distribution_modules,
    rewritten_modules,
    write_cache,
)


def _cached(source: Path) -> Path:
    return rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)


def test_written_cache_is_read_back_by_pytest_and_keeps_assertion_messages(tmp_path):
    module = tmp_path / "test_sample.py"
    module.write_text("def check(items):\n    assert len(items) == 3\n")
    assert write_cache(module) is True
    code = rewrite._read_pyc(module, _cached(module))
    assert code is not None  # pytest's own reader accepts it (checked hash, magic, flags)
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 - the cached module's own code, as pytest runs it
    try:
        namespace["check"]([1])  # type: ignore[operator]
    except AssertionError as exc:
        assert "where 1 = len([1])" in str(exc)  # the rewritten assertion, not a bare one
    else:
        raise AssertionError("the cached code did not assert")
    assert write_cache(module) is False  # current: left alone


def test_an_edited_module_misses_its_cache_and_is_written_again(tmp_path):
    module = tmp_path / "test_sample.py"
    module.write_text("def test_one():\n    assert True\n")
    write_cache(module)
    module.write_text("def test_one():\n    assert 1 == 1\n")
    assert rewrite._read_pyc(module, _cached(module)) is None
    assert write_cache(module) is True


def test_modules_are_the_ones_pytest_rewrites_here():
    modules = set(rewritten_modules())
    assert Path(__file__).resolve() in modules
    assert TESTS / "conftest.py" in modules and TESTS / "engine" / "conftest.py" in modules
    plugins = conftest_plugins()
    assert "tests.fixtures.sandbox" in plugins
    assert {TESTS / "fixtures" / f"{name.rpartition('.')[2]}.py" for name in plugins} <= modules
    # plain imports, never rewritten by pytest: compileall's bytecode serves them
    assert TESTS / "engine" / "helpers.py" not in modules and TESTS / "assertion_cache.py" not in modules
    assert TESTS / "fixtures" / "app_db.py" not in modules  # a fixture module conftest does not list as a plugin
    assert all(p.name.startswith("test_") or p.name == "conftest.py" or p.parent.name == "fixtures" for p in modules)


def test_plugin_distributions_modules_are_the_ones_pytest_marks(tmp_path):
    """pytest rewrites every module of a distribution registering a plugin (``pytest11``), as it imports them."""
    installed = {p.as_posix() for p in plugin_distribution_modules()}
    assert any(p.endswith("/xdist/plugin.py") for p in installed)  # pytest-xdist's entry point
    assert any(p.endswith("/hypothesis/core.py") for p in installed)  # a module of the plugin's distribution
    assert not any("/_pytest/" in p or "/dagster/" in p or "/sqlalchemy/" in p for p in installed)
