"""The packages that export their names on first use (PEP 562: ``connectors.lazy_exports``, ``sandbox``'s own copy)
behave as their eager imports did where a person looks: ``dir()``/``help()`` and a module that fails to load."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

LAZY_PACKAGES = (
    "engine",
    "store",
    "warehouse",
    "sandbox",
    "connectors.fhir",
    "connectors.smart",
    "connectors.transport",
    "connectors.bulk",
    "connectors.http",
)


def test_dir_lists_every_public_name_before_its_first_use() -> None:
    """``help(engine)`` and completion read ``dir()``: with no ``__dir__`` it listed only the names used so far
    (``help(engine)`` had no CLASSES section in a fresh interpreter)."""
    code = (
        "import importlib, json\n"
        f"packages = [importlib.import_module(p) for p in {LAZY_PACKAGES!r}]\n"
        "print(json.dumps({p.__name__: sorted(set(p.__all__) - set(dir(p))) for p in packages}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    missing = json.loads(out.stdout.strip().splitlines()[-1])
    assert missing == {package: [] for package in LAZY_PACKAGES}


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_a_module_that_fails_to_load_is_named_not_hidden(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module reading an attribute its library lacks (a mismatched pyarrow, say) raised ``AttributeError`` at
    load; through ``__getattr__``, ``from package import name`` turned it into "cannot import name" with no cause.
    """
    home = f"_rv_broken_home_{package.replace('.', '_')}"
    (tmp_path / f"{home}.py").write_text("import os\n\nREAD_AT_LOAD = os.no_such_attribute\nBroken = object\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(package)
    monkeypatch.setitem(module._HOMES, "Broken", home)  # the mapping each __getattr__ reads
    with pytest.raises(ImportError) as raised:
        exec(f"from {package} import Broken", {})  # noqa: S102  (the statement a caller writes)
    shown = f"{raised.value} {raised.value.__cause__}"
    assert home in shown and "no_such_attribute" in shown, shown
    assert "Broken" not in vars(module)
