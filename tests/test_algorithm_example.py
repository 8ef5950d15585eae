"""docs/algorithms.md's complete example is a working third-party algorithm: installed as a
package (entry point and all), validated, run on the tiny task and reported, and the docs show
exactly the package's code. docs/metrics.md lists exactly the loop's metric schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rlhfx-bestofn"
DOC = ROOT / "docs" / "algorithms.md"


def _blocks(language: str, section: str = "## A complete example") -> list[str]:
    """The code blocks of one section of the doc."""
    text = DOC.read_text(encoding="utf-8").split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_the_docs_show_the_package_as_it_is():
    module = (EXAMPLE / "rlhfx_bestofn" / "__init__.py").read_text(encoding="utf-8")
    assert _blocks("python") == [module]
    assert _blocks("toml") == [(EXAMPLE / "recipe.toml").read_text(encoding="utf-8")]
    assert len(module.splitlines()) < 150
    assert '[project.entry-points.rlhfx]\nbestofn = "rlhfx_bestofn"' in (
        EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")


def test_the_policy_gradient_example_learns_from_its_estimator(rlhfx_plugins, rlhfx_cli,
                                                                 tmp_path):
    """docs/algorithms.md's policy-gradient subclass: registered, validated and run two
    iterations; its advantages are centred on the batch mean (the estimator it names)."""
    import math
    import types

    from rlhfx.testing import run_in_process, run_records, write_algorithm_recipe

    [source] = _blocks("python", "## A policy-gradient algorithm")
    module = types.ModuleType("rlhfx_mean_baseline")
    exec(compile(source, "docs/algorithms.md", "exec"), module.__dict__)
    rlhfx_plugins(module)
    recipe = write_algorithm_recipe(tmp_path, "mean_baseline", dict(
        iterations=2, batch_size=4, k=2, beta=0.05, learning_rate=1e-3, min_new_tokens=8,
        max_new_tokens=8, torch_threads=1))
    records = run_records(run_in_process(rlhfx_cli, recipe, tmp_path / "run"))
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["kl_mean"])
        assert r["mean_baseline/advantage_mean"] == pytest.approx(0.0, abs=1e-5)
        assert r["mean_baseline/advantage_std"] > 0


@pytest.fixture
def bestofn(rlhfx_installed_plugin):
    source = (EXAMPLE / "rlhfx_bestofn" / "__init__.py").read_text(encoding="utf-8")
    return rlhfx_installed_plugin("rlhfx-bestofn", {"rlhfx_bestofn": source},
                                  {"bestofn": "rlhfx_bestofn"})


def test_validate_checks_the_plugins_options(rlhfx_cli, bestofn, tmp_path):
    recipe = tmp_path / "r.toml"
    text = (EXAMPLE / "recipe.toml").read_text(encoding="utf-8")
    recipe.write_text(text, encoding="utf-8")
    assert rlhfx_cli("validate", str(recipe)).exit_code == 0
    recipe.write_text(text.replace("n = 4", "n = 1"), encoding="utf-8")
    result = rlhfx_cli("validate", str(recipe))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{recipe}: stages.align.algorithm.n: Input should be greater than or equal to 2" \
        in result.stderr


@pytest.mark.slow
def test_runs_end_to_end_and_the_report_shows_its_metrics(rlhfx_cli, bestofn, tmp_path):
    from report_fakes import Page, figure_files

    recipe = tmp_path / "r.toml"
    recipe.write_text((EXAMPLE / "recipe.toml").read_text(encoding="utf-8")
                      .replace("iterations = 4", "iterations = 2"), encoding="utf-8")
    out = tmp_path / "run"
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 0, result.output
    stage = out / "stages" / "align"
    records = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for r in records[1:]:
        assert r["num_trained"] == 8 - r["best_of_n_sft/prompts_without_answer"]
        assert r["trained_reward_mean"] >= r["reward_mean"]  # the best of each group
        assert r["train_loss"] is not None and r["num_samples"] == 32
    trained = (stage / "iterations" / "iter-0002" / "trained.jsonl").read_text().splitlines()
    assert len(trained) == records[2]["num_trained"]
    assert json.loads((stage / "alignment.json").read_text())["algorithm"] == "best_of_n_sft"
    assert (stage / "model" / "config.json").exists()
    assert (stage / "checkpoints" / "iter-0002" / "algorithm.safetensors").exists()

    result = rlhfx_cli("report", str(out))
    assert result.exit_code == 0, result.output
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert {"align-reward.png", "align-own-metrics.png"} <= set(figure_files(page))
    assert page.tables["stages"][1][1] == "align (best_of_n_sft)"


def test_metrics_doc_lists_the_schema():
    from rlhfx.alignment.schema import METRICS

    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M)
    assert documented == list(METRICS)
