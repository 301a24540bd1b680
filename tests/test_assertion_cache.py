"""tests/assertion_cache.py writes the rewrites pytest reads back, for every module pytest rewrites here."""

from __future__ import annotations

from pathlib import Path

from _pytest.assertion import rewrite

from tests.assertion_cache import TESTS, rewritten_modules, write_cache


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
    plugins = [line.strip().strip('",') for line in (TESTS / "conftest.py").read_text().splitlines()]
    fixtures = {TESTS / "fixtures" / f"{name.rpartition('.')[2]}.py" for name in plugins if name.startswith("tests.")}
    assert fixtures and fixtures <= modules  # every plugin conftest loads
    assert TESTS / "engine" / "helpers.py" not in modules  # plain imports: compileall's bytecode serves them
