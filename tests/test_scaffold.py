"""`rlhfx plugins new`: the package it writes installs with pip and passes its own tests, which
run its component in a tiny recipe through `rlhfx run`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfx.plugins.scaffold import KINDS


def test_writes_a_package_and_refuses_bad_names(rlhfx_cli, tmp_path):
    result = rlhfx_cli("plugins", "new", "polite", "--kind", "cleaner", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    root = tmp_path / "rlhfx-polite"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "rlhfx_polite/__init__.py", "tests/test_rlhfx_polite.py",
    ]
    assert 'polite = "rlhfx_polite"' in (root / "pyproject.toml").read_text()
    code = (root / "rlhfx_polite/__init__.py").read_text()
    assert "class Polite(ResponseCleaner[PoliteConfig])" in code
    again = rlhfx_cli("plugins", "new", "polite", "-o", str(tmp_path))
    assert again.exit_code == 2 and "already exists" in again.output
    bad = rlhfx_cli("plugins", "new", "Polite!", "-o", str(tmp_path))
    assert bad.exit_code == 2 and "use lowercase letters" in bad.output


@pytest.mark.install
def test_every_kind_installs_and_passes_its_own_tests(rlhfx_cli, tmp_path):
    """One pip call installs a package of each kind (offline, no build isolation, into a
    directory put on PYTHONPATH: pip writes the same dist-info and entry points as into a
    virtual environment); one pytest run then runs each package's own tests against it,
    among them a tiny recipe using the component, validated and run with `rlhfx run`."""
    for kind in KINDS:
        result = rlhfx_cli("plugins", "new", f"gen_{kind}", "--kind", kind, "-o", str(tmp_path))
        assert result.exit_code == 0, result.output
    # Install copies, so the tests below run against the installed package, not its source.
    packages = sorted(tmp_path.glob("rlhfx-gen-*"))
    build = tmp_path / "build"
    for package in packages:
        shutil.copytree(package, build / package.name)
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFX_")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), *(str(build / p.name) for p in packages)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert len(list(site.glob("rlhfx_gen_*.dist-info"))) == len(KINDS)
    env["PYTHONPATH"] = str(site)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(p / "tests") for p in packages)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    # Every generated test ran and passed; each package's include a tiny `rlhfx run` with its
    # component, so a template left behind by a contract change fails here.
    test_files = [p.read_text() for p in tmp_path.glob("rlhfx-gen-*/tests/*.py")]
    assert len(test_files) == len(KINDS)
    assert all("run_recipe(rlhfx_cli, tmp_path," in text for text in test_files)
    written = sum(text.count("\ndef test_") for text in test_files)
    assert f"\n{written} passed" in tests.stdout, tests.stdout[-2000:]
    # The generated code is clean by the project's own lint rules, as a third-party package.
    if shutil.which("ruff", path=str(Path(sys.executable).parent)):
        lint = subprocess.run(
            [str(Path(sys.executable).parent / "ruff"), "check", "--isolated", "--line-length",
             "100", "--select", "E,F,W,I,B,UP,SIM,RUF", *(str(p) for p in packages)],
            capture_output=True, text=True,
        )
        assert lint.returncode == 0, lint.stdout
