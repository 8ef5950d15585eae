"""Pytest fixtures for plugin authors (loaded automatically when rlhfx is installed).

    def test_my_reward(rlhfx_plugins):
        system = rlhfx_plugins(my_plugin_module)      # installed plugins + this module
        entry = system.get("reward_source", "my_reward")

    def test_recipe(rlhfx_plugins, rlhfx_cli, tmp_path):
        rlhfx_plugins(my_plugin_module)                # stays loaded for rlhfx_cli calls
        result = rlhfx_cli("validate", str(recipe_path))
        assert result.exit_code == 0, result.output

    def test_entry_point(rlhfx_installed_plugin):
        # a fake installed distribution: the entry-point path `pip install` would give
        rlhfx_installed_plugin("my-dist", {"my_mod": SOURCE}, {"mine": "my_mod"})
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from rlhfx import registry


class _Extra:
    """Plugin objects a test added with `rlhfx_plugins`, re-added on every reload."""

    plugins: tuple[object, ...] = ()


def _load(plugins: tuple[object, ...]) -> registry.PluginSystem:
    registry.reset_plugins()
    extra = [(p, getattr(p, "__name__", type(p).__name__)) for p in plugins]
    return registry.get_plugins(extra=extra)


@pytest.fixture
def rlhfx_plugins() -> Iterator[Callable[..., registry.PluginSystem]]:
    """Load the installed plugins plus the given plugin objects into a fresh plugin system.

    The plugin objects stay loaded for later `rlhfx_cli` calls in the same test.
    """

    def load(*plugins: object) -> registry.PluginSystem:
        _Extra.plugins = plugins
        return _load(plugins)

    registry.reset_plugins()
    yield load
    _Extra.plugins = ()
    registry.reset_plugins()


@pytest.fixture
def rlhfx_cli(rlhfx_plugins: Any) -> Callable[..., Any]:
    """Run the `rlhfx` CLI in-process: `rlhfx_cli("validate", path)` -> click Result.

    Plugins are reloaded on each call (so environment variables set with monkeypatch apply),
    together with any plugin objects given to `rlhfx_plugins`.
    """
    from click.testing import CliRunner

    from rlhfx.cli import cli
    from rlhfx.errors import UserError

    def invoke(*args: str, **kwargs: Any) -> Any:
        try:
            _load(_Extra.plugins)
        except UserError:  # e.g. strict mode: let the CLI itself report it
            registry.reset_plugins()
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)

    return invoke


def write_plugin_distribution(
    site: str | Path,
    dist: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, str],
    version: str = "0.1.0",
) -> Path:
    """Write modules and a `<dist>-<version>.dist-info` (with `rlhfx` entry points) into `site`.

    With `site` on `sys.path` (or PYTHONPATH for a subprocess), `importlib.metadata` sees an
    installed distribution, so rlhfx loads the plugin through its real entry-point path,
    without pip. `modules` maps a module name to its source; `entry_points` maps an entry-point
    name to a module.
    """
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text(
        "[rlhfx]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    return site


@pytest.fixture
def rlhfx_installed_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Install a fake plugin distribution for this test only (see `write_plugin_distribution`).

    Returns the directory that was put on `sys.path`; the plugin system is reset so the next
    `rlhfx_plugins()` or `rlhfx_cli(...)` call sees it.
    """
    site = tmp_path / "site-packages"
    added: list[str] = []

    def install(
        dist: str, modules: Mapping[str, str], entry_points: Mapping[str, str], **kw: Any
    ) -> Path:
        write_plugin_distribution(site, dist, modules, entry_points, **kw)
        if str(site) not in sys.path:
            monkeypatch.syspath_prepend(str(site))
        added.extend(modules)
        importlib.invalidate_caches()
        registry.reset_plugins()
        return site

    yield install
    for name in added:  # the next test may reuse a module name with other source
        sys.modules.pop(name, None)
    registry.reset_plugins()


def rlhfx_command() -> list[str]:
    """The installed `rlhfx` script beside this interpreter (or `python -m rlhfx.cli`)."""
    script = Path(sys.executable).with_name("rlhfx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlhfx.cli"]


def run_rlhfx(
    *args: str,
    cwd: str | Path,
    pythonpath: str | Path | None = None,
    timeout: float = 120,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run `rlhfx ARGS` in a real process (real exit status, stdout and stderr).

    `RLHFX_*` variables of the calling environment are dropped; pass them as keywords.
    `pythonpath` puts e.g. a `write_plugin_distribution` site directory on the path.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RLHFX_")}
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
    environ.update(env)
    return subprocess.run(
        [*rlhfx_command(), *args], cwd=cwd, env=environ, capture_output=True, text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------ algorithms
#: A reward the tiny policy can learn in a few iterations: words of three letters or more
#: (the pattern penalty's negative penalty is a bonus per match).
WORD_BONUS = '{ name = "pattern_penalty", rules = [{ pattern = "[A-Za-z]{3,}", penalty = -1.0 }] }'
#: A reward for runs that must be exactly repeatable: the response's length in characters.
LENGTH = '{ name = "length", unit = "chars" }'


def toml_value(value: Any) -> str:
    """`value` as an inline TOML value (dicts as inline tables), for recipes written in tests."""
    import json

    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # numbers, booleans, strings and lists read the same in TOML


def write_algorithm_recipe(folder: Path, name: str, options: Mapping[str, Any],
                           reward: str = WORD_BONUS, seed: int = 3, extra: str = "",
                           file: str = "recipe.toml") -> Path:
    """A one-stage recipe: the tiny policy and prompts, `reward`, algorithm `name` with
    `options`; `extra` adds lines to the align stage."""
    fields = ", ".join(f"{k} = {toml_value(v)}" for k, v in {"name": name, **options}.items())
    path = Path(folder) / file
    path.write_text(
        f'[run]\nseed = {seed}\n\n[stages.align]\npolicy = "builtin:tiny-gpt-neo"\n'
        f'prompts = "builtin:tiny-prompts"\nreward = {reward}\n{extra}'
        f"algorithm = {{ {fields} }}\n", encoding="utf-8")
    return path


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    """The align stage's metrics records of a run."""
    import json

    lines = (Path(run_dir) / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def final_weights(run_dir: Path) -> dict[str, Any]:
    """The align stage's saved model weights."""
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "stages" / "align" / "model" / "model.safetensors"))


def rising(rewards: list[float], n: int = 5) -> tuple[float, float]:
    """Mean reward of the first and the last n iterations."""
    return sum(rewards[:n]) / n, sum(rewards[-n:]) / n


def subprocess_env() -> dict[str, str]:
    """This environment with this process's thread count: a run in a subprocess then gives the
    numbers a run in this process gives."""
    import torch

    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def cli_command(*args: str) -> list[str]:
    """`python -m rlhfx.cli ARGS` with this interpreter: the command a test runs as a
    subprocess (this environment's rlhfx, whatever is on PATH)."""
    return [sys.executable, "-m", "rlhfx.cli", *args]


def kill_after_records(recipe: Path, out: Path, after_records: int = 3) -> int:
    """Run `recipe` in a subprocess and SIGKILL it once `after_records` metrics records are
    written; returns how many records the killed run left."""
    import signal
    import time

    metrics = out / "stages" / "align" / "metrics.jsonl"
    proc = subprocess.Popen(cli_command("run", str(recipe), "-o", str(out)),
                            env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= after_records:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return len(run_records(out))


def run_again(recipe: Path, out: Path) -> None:
    """The same command again, to completion (it resumes what a killed run left)."""
    resumed = subprocess.run(cli_command("run", str(recipe), "-o", str(out)),
                             env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def run_torchrun(recipe: Path, out: Path, processes: int = 2) -> None:
    """`rlhfx run` under torchrun with `processes` CPU workers (a free port of its own)."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", str(processes), "-m", "rlhfx.cli",
         "run", str(recipe), "-o", str(out)],
        env=subprocess_env(), capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


class AlgorithmCase:
    """How to run one alignment algorithm through `AlgorithmContract`'s checks.

    `options`: a short run on the tiny task (a few iterations, short answers); `learns`: the
    options (added to `options`) under which the reward rises by `margin` from the first
    `window` iterations to the last `window`, with `reward` (None: the algorithm's own tests
    show it learns, e.g. on a recipe too long to run twice); `bad_options`: (options, what
    the one-line error must say) pairs, beside the unknown key every algorithm must refuse;
    `two_processes`: options (added to `options`) for a run on two processes. `on_learned`
    gets the learning run's records and folder for checks of the algorithm's own.
    """

    def __init__(
        self, name: str, options: Mapping[str, Any], learns: Mapping[str, Any] | None,
        margin: float = 2.0, window: int = 5, reward: str = WORD_BONUS,
        bad_options: list[tuple[dict[str, Any], str]] | None = None,
        two_processes: Mapping[str, Any] | None = None,
        on_learned: Callable[[list[dict[str, Any]], Path], None] | None = None,
    ):
        self.name, self.options, self.learns, self.margin = name, dict(options), learns, margin
        self.window = window
        self.reward, self.bad_options = reward, list(bad_options or [])
        self.two_processes = dict(two_processes or {})
        self.on_learned = on_learned

    def __repr__(self) -> str:
        return f"AlgorithmCase({self.name!r})"


class AlgorithmContract:
    """The checks every alignment algorithm passes; a plugin's tests get them in one line:

        class TestMine(AlgorithmContract):
            case = AlgorithmCase("mine", options={"iterations": 2, ...}, learns={...})

    The reward rises on the tiny task (seeded), a run killed with SIGKILL and run again ends
    where an uninterrupted one does, two processes under torchrun train in step, and bad
    options are one-line errors that name the key. The runs are marked `slow`.
    """

    case: AlgorithmCase

    @pytest.mark.slow
    def test_reward_rises(self, rlhfx_cli: Any, tmp_path: Path) -> None:
        case = self.case
        if case.learns is None:
            pytest.skip(f"{case.name}: its own tests show it learns")
        recipe = write_algorithm_recipe(tmp_path, case.name, {**case.options, **case.learns},
                                        reward=case.reward)
        out = tmp_path / "run"
        result = rlhfx_cli("run", str(recipe), "-o", str(out))
        assert result.exit_code == 0, result.output
        records = [r for r in run_records(out) if r["step"] > 0]
        first, last = rising([r["reward_mean"] for r in records], case.window)
        assert last > first + case.margin, (first, last)
        if case.on_learned is not None:
            case.on_learned(records, out)

    def test_bad_options_are_one_line_errors(self, rlhfx_cli: Any, tmp_path: Path) -> None:
        case = self.case
        for options, message in [({"no_such_option": 1}, "no_such_option"),
                                 *case.bad_options]:
            recipe = write_algorithm_recipe(tmp_path, case.name, {**case.options, **options})
            result = rlhfx_cli("validate", str(recipe))
            assert result.exit_code == 2, result.output
            assert "Traceback" not in result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and message in lines[0], result.output
            assert "stages.align.algorithm" in lines[0], result.output

    @pytest.mark.slow
    def test_resume_after_kill_matches_an_uninterrupted_run(self, rlhfx_cli: Any,
                                                             tmp_path: Path) -> None:
        import torch

        case = self.case
        recipe = write_algorithm_recipe(
            tmp_path, case.name, {**case.options, "iterations": 6, "save_every": 1},
            reward=LENGTH)
        killed = tmp_path / "killed"
        assert 3 <= kill_after_records(recipe, killed) < 6
        run_again(recipe, killed)
        assert "resuming after iteration" in (killed / "run.log").read_text()
        reference = tmp_path / "reference"
        result = rlhfx_cli("run", str(recipe), "-o", str(reference))
        assert result.exit_code == 0, result.output
        got, want = run_records(killed), run_records(reference)
        assert [r["step"] for r in got] == [r["step"] for r in want]
        assert [r["step"] for r in got if r["step"] > 0] == [1, 2, 3, 4, 5, 6]
        for a, b in zip(got, want, strict=True):
            for key in sorted(set(a) | set(b)):
                if isinstance(b.get(key), float) and not key.startswith(("seconds", "time")) \
                        and "/time/" not in key and "memory" not in key:
                    assert a.get(key) == pytest.approx(b[key], rel=1e-4, abs=1e-6, nan_ok=True), \
                        (a["step"], key)
        mine, theirs = final_weights(killed), final_weights(reference)
        assert mine.keys() == theirs.keys()
        for name, tensor in theirs.items():
            torch.testing.assert_close(mine[name], tensor, atol=1e-5, rtol=0, msg=name)

    @pytest.mark.slow
    def test_two_processes_under_torchrun(self, tmp_path: Path) -> None:
        import shutil

        if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
            pytest.skip("torchrun is not installed")
        case = self.case
        recipe = write_algorithm_recipe(tmp_path, case.name,
                                        {**case.options, **case.two_processes}, reward=LENGTH)
        out = tmp_path / "run"
        run_torchrun(recipe, out)
        assert "2 process(es)" in (out / "run.log").read_text()
        records = [r for r in run_records(out) if r["step"] > 0]
        iterations = {**case.options, **case.two_processes}.get("iterations")
        assert [r["step"] for r in records] == list(range(1, int(iterations or 0) + 1))
        assert (out / "stages" / "align" / "model" / "config.json").exists()


def run_in_process(rlhfx_cli: Any, recipe: Path, out: Path) -> Path:
    """`rlhfx run recipe -o out` through the `rlhfx_cli` fixture; fails the test on an error."""
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 0, result.output
    return out


def same_weights(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two state dicts hold exactly the same tensors."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
