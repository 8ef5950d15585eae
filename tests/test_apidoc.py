"""docs/api.md, the reference of what plugin authors import: every name of the surface has a
docstring and an entry, and the file is what the code says (`python -m rlhfx.apidoc`)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import rlhfx
from rlhfx import apidoc

API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_exported_name_has_a_docstring_and_an_entry():
    assert apidoc.undocumented() == []
    documented = {f"{module}.{name}" for module, name, _ in apidoc.surface()}
    assert {f"rlhfx.{name}" for name in rlhfx.__all__} <= documented
    text = API_MD.read_text(encoding="utf-8")
    missing = [name for name in sorted(documented) if f"### `{name}`\n" not in text]
    assert not missing, f"not in docs/api.md (run `python -m rlhfx.apidoc`): {missing}"


def test_the_reference_is_what_the_code_says():
    assert API_MD.read_text(encoding="utf-8") == apidoc.render(), (
        "docs/api.md is stale: run `python -m rlhfx.apidoc`")


def test_an_undocumented_export_or_a_stale_file_fails_the_check(monkeypatch, tmp_path, capsys):
    module = types.ModuleType("rlhfx_api_probe")

    def documented(x: int) -> int:
        """Says why."""
        return x

    def bare(x: int) -> int:
        return x

    for fn in (documented, bare):
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(apidoc, "SURFACE", {module.__name__: None})
    assert apidoc.undocumented() == ["rlhfx_api_probe.bare"]
    output = tmp_path / "api.md"
    assert apidoc.main(["--output", str(output)]) == 1
    assert "no docstring: rlhfx_api_probe.bare" in capsys.readouterr().err

    bare.__doc__ = "Now documented."
    assert apidoc.main(["--output", str(output)]) == 0
    assert "def documented(x: int) -> int" in output.read_text()
    assert apidoc.main(["--check", "--output", str(output)]) == 0
    output.write_text(output.read_text().replace("Says why.", "Says otherwise."))
    assert apidoc.main(["--check", "--output", str(output)]) == 1
