"""What `validate` refuses that pydantic would convert (booleans and quoted numbers), seeds no
library takes, output directories a run cannot write, and a byte-order mark it must accept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhfx.errors import UserError
from rlhfx.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recipe(tmp_path, monkeypatch, teststages):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n')

    def write(text: str, name: str = "r.toml") -> str:
        (tmp_path / name).write_text(text, encoding="utf-8")
        return name

    return write


def errors_of(path: str) -> list[str]:
    with pytest.raises(UserError) as caught:
        load_recipe(path)
    return str(caught.value).splitlines()


MAKE = '[stages.m]\nname = "make"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MAKE + "count = true\n", "r.toml: stages.m.count: must be a number, not a boolean "
                                  "(got true)"),
        (MAKE + 'count = "3"\n', "r.toml: stages.m.count: must be a number, not a string "
                                 "(got '3'); write it without quotes"),
        (MAKE + "count = 1\nfail_once = 1\n", "r.toml: stages.m.fail_once: must be true or "
                                             "false, not a number (got 1)"),
        (MAKE + 'count = 1\nfail_once = "no"\n', "r.toml: stages.m.fail_once: must be true or "
                                                "false, not a string (got 'no')"),
        (MAKE + "count = 1\nwindow = { stop = false }\n",
         "r.toml: stages.m.window.stop: must be a number, not a boolean (got false)"),
        ('[run]\nseed = true\n' + MAKE + "count = 1\n",
         "r.toml: run.seed: must be a number, not a boolean (got true)"),
        ('[stages.d]\nname = "data"\nsource = "rows.jsonl"\neval_size = "10"\n',
         "r.toml: stages.d.eval_size: must be a number, not a string (got '10'); write it "
         "without quotes"),
    ],
)
def test_no_boolean_or_string_becomes_a_number(recipe, text, expected):
    assert errors_of(recipe(text)) == [expected]


def test_floats_still_take_integers(recipe):
    loaded = load_recipe(recipe(
        '[stages.d]\nname = "data"\nsource = "rows.jsonl"\neval_max_fraction = 0\n'
    ))
    assert loaded.recipe.stages["d"].config.eval_max_fraction == 0.0


@pytest.mark.parametrize(
    ("seed", "stages", "expected"),
    [
        ("-1", 1, "r.toml: run.seed: a seed must be between 0 and 4294967295 (numpy's range; "
                  "got -1)"),
        (str(2**32), 1, "r.toml: run.seed: a seed must be between 0 and 4294967295 (numpy's "
                        "range; got 4294967296)"),
        (str(2**64), 1, "r.toml: run.seed: a seed must be between 0 and 4294967295 (numpy's "
                        f"range; got {2**64})"),
        (str(2**32 - 1), 2, "r.toml: run.seed: at most 4294967294 with 2 stages (stage i is "
                            "seeded with seed + i, and numpy takes seeds up to 2**32 - 1)"),
    ],
)
def test_seeds_fit_every_library(recipe, seed, stages, expected):
    text = f"[run]\nseed = {seed}\n" + "".join(
        f'[stages.s{i}]\nname = "make"\ncount = 1\n' for i in range(stages)
    )
    assert errors_of(recipe(text)) == [expected]
    largest = f"[run]\nseed = {2**32 - stages}\n" + text.split("\n", 2)[2]
    assert load_recipe(recipe(largest, "ok.toml")).recipe.run.seed == 2**32 - stages


def test_a_components_seed_fits_every_library_too(recipe):
    text = (REPO / "recipes" / "tiny_raft.toml").read_text().replace(
        'name = "raft"\n', 'name = "raft"\nseed = 18446744073709551615\n'
    )
    assert errors_of(recipe(text)) == [
        "r.toml: stages.align.algorithm.seed: a seed must be between 0 and 4294967295 (numpy's "
        "range; got 18446744073709551615)"
    ]


def test_output_dir_a_run_cannot_write_is_refused_at_validation(recipe, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("keep me\n")

    def error(output_dir: str) -> list[str]:
        return errors_of(recipe(f'[run]\noutput_dir = "{output_dir}"\n{MAKE}count = 1\n'))

    assert error("") == [
        "r.toml: run.output_dir: must not be empty (leave it out for the default, "
        "runs/<recipe name>)"
    ]
    assert error("afile") == ["r.toml: run.output_dir: afile is an existing file, not a directory"]
    assert error("afile/run/x") == [
        f"r.toml: run.output_dir: cannot create afile/run/x: {tmp_path / 'afile'} is a file, "
        "not a directory"
    ]
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr("rlhfx.recipe.os.access",  # root may write anywhere: fake the refusal
                        lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    assert error("locked/run") == [
        f"r.toml: run.output_dir: cannot create locked/run: no permission to write in {locked}"
    ]
    assert (tmp_path / "afile").read_text() == "keep me\n"
    assert not (tmp_path / "locked" / "run").exists()


def test_an_output_dir_override_is_checked_the_same_way(recipe, rlhfx_cli, tmp_path):
    (tmp_path / "afile").write_text("keep me\n")
    path = recipe(MAKE + "count = 1\n")
    result = rlhfx_cli("run", path, "--output-dir", "afile/run")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --output-dir: cannot create afile/run: {tmp_path / 'afile'} is a file, not a "
        "directory\n"
    )
    assert (tmp_path / "afile").read_text() == "keep me\n"


def test_the_cli_reports_them_in_one_line_with_exit_status_2(recipe, rlhfx_cli):
    path = recipe('[run]\noutput_dir = ""\n' + MAKE + "count = true\n")
    result = rlhfx_cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: r.toml: run.output_dir: must not be empty (leave it out for the default, "
        "runs/<recipe name>)",
        "error: r.toml: stages.m.count: must be a number, not a boolean (got true)",
    ]
    assert "Traceback" not in result.output


def test_a_directory_named_like_a_data_file_is_refused_at_validation(recipe, tmp_path):
    (tmp_path / "pairs.jsonl").mkdir()
    text = '[stages.d]\nname = "data"\nsource = "pairs.jsonl"\n'
    assert errors_of(recipe(text)) == [
        "r.toml: stages.d.source: pairs.jsonl is a directory, not a data file; name the file "
        "itself"
    ]


def test_a_byte_order_mark_is_accepted(recipe, rlhfx_cli):
    path = recipe("\ufeff" + MAKE + "count = 2\n")
    result = rlhfx_cli("validate", path)
    assert result.exit_code == 0, result.output
    assert load_recipe(path).recipe.stages["m"].config.count == 2


def test_every_shipped_recipe_validates(rlhfx_cli, monkeypatch):
    monkeypatch.chdir(REPO)
    for path in sorted((REPO / "recipes").glob("*.toml")):
        result = rlhfx_cli("validate", str(path.relative_to(REPO)))
        assert result.exit_code == 0, result.output
