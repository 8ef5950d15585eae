"""Recipe validation: every class of mistake is reported with the file and the dotted key path,
all of them in one pass, and a good recipe comes back with every component bound."""

from __future__ import annotations

import pytest

from rlhfx.errors import RecipeError, RecipeErrors, UserError
from rlhfx.recipe import load_recipe


@pytest.fixture
def recipe(tmp_path, monkeypatch, teststages):
    """Write a recipe into a fresh current directory (with rows.jsonl present); return a loader."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"i": 0}\n')

    def write(text: str, name: str = "r.toml"):
        (tmp_path / name).write_text(text, encoding="utf-8")
        return name

    return write


def errors_of(path: str) -> list[str]:
    with pytest.raises(UserError) as caught:
        load_recipe(path)
    exc = caught.value
    assert isinstance(exc, RecipeError | RecipeErrors)
    return str(exc).splitlines()


GOOD = """
[run]
seed = 7

[stages.m]
name = "make"
count = 3
window = { stop = 2 }

[stages.c]
name = "consume"
source = "@m.rows"
model = "@m"
reward = { name = "weighted", terms = [
    { source = "length" },
    { source = { name = "length", unit = "chars" }, weight = 0.5 },
] }
cleaners = ["strip", { name = "discard", min_chars = 3 }]
"""


def test_good_recipe_binds_every_component(recipe):
    loaded = load_recipe(recipe(GOOD))
    assert loaded.recipe.run.seed == 7
    assert list(loaded.recipe.stages) == ["m", "c"]
    make = loaded.recipe.stages["m"]
    assert make.name == "make" and make.config.count == 3 and make.config.window.stop == 2
    consume = loaded.recipe.stages["c"].config
    strip, discard = (c.config.model_dump() for c in consume.cleaners)
    assert strip == {"chars": "#"}
    assert discard["min_chars"] == 3 and "#" in discard["patterns"]  # defaults kept
    terms = consume.reward.config.terms
    assert terms[1].source.config.unit == "chars" and terms[1].weight == 0.5
    reward = consume.reward.build()  # nested refs are bound too: builds without a lookup
    assert reward.score(["p"], ["ab cd"]) == [2 + 0.5 * 5]
    assert loaded.output_dir.as_posix() == "runs/r"


def test_stage_name_defaults_to_the_table_key(recipe):
    loaded = load_recipe(recipe('[stages.make]\ncount = 1\n'))
    assert loaded.recipe.stages["make"].name == "make"


# ---------------------------------------------------------------------------- TOML syntax


def test_toml_syntax_error_gives_line_and_column(recipe):
    path = recipe('[stages.m]\nname = "make"\ncount = = 3\n')
    assert errors_of(path) == [
        "r.toml: invalid TOML: Invalid value (at line 3, column 9)"
    ]


def test_missing_file_directory_and_binary(recipe, tmp_path):
    assert errors_of("nope.toml") == ["nope.toml: recipe file does not exist"]
    (tmp_path / "adir").mkdir()
    assert errors_of("adir") == ["adir: is a directory, not a recipe file"]
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    assert errors_of("bin.toml")[0].startswith("bin.toml: not UTF-8 text")


# ---------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'colour = 1\n[stages.m]\nname="make"\ncount=1\n',
            "r.toml: colour: unknown key (valid keys: run, stages)",
        ),
        (
            '[run]\nsed = 1\n[stages.m]\nname="make"\ncount=1\n',
            "r.toml: run.sed: unknown key "
            "(valid keys: device, fsdp, log_level, name, output_dir, parallelism, report_to, "
            "seed, timeout_s)",
        ),
        (
            '[stages.m]\nname="make"\ncount=1\ncuont=2\n',
            "r.toml: stages.m.cuont: unknown key (valid keys: count, fail_once, mode, user_error, "
            "window)",
        ),
        (
            '[stages.m]\nname="make"\ncount=1\nwindow={stop=1, step=2}\n',
            "r.toml: stages.m.window.step: unknown key (valid keys: start, stop)",
        ),
        (
            '[stages.c]\nname="consume"\nsource="rows.jsonl"\n'
            'cleaners=[{name="strip", char="x"}]\n',
            "r.toml: stages.c.cleaners[0].char: unknown key (valid keys: chars)",
        ),
    ],
)
def test_unknown_keys(recipe, text, expected):
    assert errors_of(recipe(text)) == [expected]


# ---------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[run]\nseed = "x"\n[stages.m]\nname="make"\ncount=1\n',
            "r.toml: run.seed: must be a number, not a string (got 'x'); write it without "
            "quotes",
        ),
        (
            '[run]\ndevice = "tpu"\n[stages.m]\nname="make"\ncount=1\n',
            "r.toml: run.device: Input should be 'auto', 'cpu' or 'cuda' (got 'tpu')",
        ),
        (
            '[stages.m]\nname="make"\ncount=-1\n',
            "r.toml: stages.m.count: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            '[stages.m]\nname="make"\ncount=1\nmode="odd"\n',
            "r.toml: stages.m.mode: Input should be 'plain' or 'fancy' (got 'odd')",
        ),
        (
            '[stages.c]\nname="consume"\nsource=3\n',
            "r.toml: stages.c.source: Input should be a valid string (got 3)",
        ),
        (
            '[stages.c]\nname="consume"\nsource="rows.jsonl"\n'
            'reward={name="length", unit="lines"}\n',
            "r.toml: stages.c.reward.unit: Input should be 'chars' or 'words' (got 'lines')",
        ),
        (
            '[stages.c]\nname="consume"\nsource="rows.jsonl"\ncleaners="strip"\n',
            "r.toml: stages.c.cleaners: Input should be a valid list (got 'strip')",
        ),
        (
            "stages = 3\n",
            "r.toml: stages: Input should be a valid dictionary (got 3)",
        ),
    ],
)
def test_wrong_types(recipe, text, expected):
    assert errors_of(recipe(text)) == [expected]


# ---------------------------------------------------------------------------- missing values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[run]\nseed = 1\n", "r.toml: stages: required value is missing"),
        ("[stages]\n", "r.toml: stages: a recipe needs at least one stage"),
        ('[stages.m]\nname = "make"\n', "r.toml: stages.m.count: required value is missing"),
        (
            '[stages.m]\nname="make"\ncount=1\nwindow={start=1}\n',
            "r.toml: stages.m.window.stop: required value is missing",
        ),
        (
            '[stages.c]\nname="consume"\nsource="rows.jsonl"\nreward={name="weighted"}\n',
            "r.toml: stages.c.reward.terms: required value is missing",
        ),
    ],
)
def test_missing_required_values(recipe, text, expected):
    assert errors_of(recipe(text)) == [expected]


# ---------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    ("text", "expected_start"),
    [
        (
            '[stages.m]\nname="mkae"\ncount=1\n',
            "r.toml: stages.m.name: unknown stage 'mkae' (did you mean 'make'?); valid: ",
        ),
        (
            '[stages.c]\nname="consume"\nsource="rows.jsonl"\ncleaners=["strip", "discrad"]\n',
            "r.toml: stages.c.cleaners[1].name: unknown response cleaner 'discrad' "
            "(did you mean 'discard'?); valid: discard, stop_markers, strip",
        ),
        (
            '[stages.c]\nname="consume"\nsource="rows.jsonl"\n'
            'reward={name="weighted", terms=[{source="lenght"}]}\n',
            "r.toml: stages.c.reward.terms[0].source.name: unknown reward source 'lenght' "
            "(did you mean 'length'?); valid: ",
        ),
    ],
)
def test_unknown_component_names(recipe, text, expected_start):
    [line] = errors_of(recipe(text))
    assert line.startswith(expected_start), line


def test_stage_id_must_be_a_plain_word(recipe):
    [line] = errors_of(recipe('[stages."a b"]\nname="make"\ncount=1\n'))
    assert line == "r.toml: stages: stage id 'a b' must be letters, digits, '_' or '-'"


# ---------------------------------------------------------------------------- files


def test_files_that_do_not_exist(recipe, tmp_path):
    lines = errors_of(recipe(
        '[stages.c]\nname="consume"\nsource="data/missing.jsonl"\nmodel="./no-model-dir"\n'
    ))
    assert lines == [
        f"r.toml: stages.c.source: file or directory does not exist: data/missing.jsonl "
        f"(relative to the current directory, {tmp_path})",
        f"r.toml: stages.c.model: file or directory does not exist: ./no-model-dir "
        f"(relative to the current directory, {tmp_path})",
    ]


def test_hub_ids_are_not_checked_as_files(recipe):
    load_recipe(recipe('[stages.c]\nname="consume"\nsource="rows.jsonl"\nmodel="gpt2"\n'))
    load_recipe(recipe(
        '[stages.c]\nname="consume"\nsource="Dahoas/full-hh-rlhf"\n'
        'model="EleutherAI/gpt-neo-1.3B"\n'
    ))


def test_absolute_missing_path_has_no_cwd_hint(recipe, tmp_path):
    missing = tmp_path / "gone.jsonl"
    [line] = errors_of(recipe(f'[stages.c]\nname="consume"\nsource="{missing}"\n'))
    assert line == f"r.toml: stages.c.source: file or directory does not exist: {missing}"


# ---------------------------------------------------------------------------- @stage.output


MAKE = '[stages.m]\nname="make"\ncount=1\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[stages.c]\nname="consume"\nsource="@m.rows"\n' + MAKE,
            "r.toml: stages.c.source: '@m' is a later stage; only an earlier stage's output can "
            "be used (earlier stages: none)",
        ),
        (
            MAKE + '[stages.c]\nname="consume"\nsource="@x.rows"\n',
            "r.toml: stages.c.source: '@x' is not a stage of this recipe; only an earlier "
            "stage's output can be used (earlier stages: m)",
        ),
        (
            MAKE + '[stages.c]\nname="consume"\nsource="@c.summary"\n',
            "r.toml: stages.c.source: '@c' is this stage itself; only an earlier stage's "
            "output can be used (earlier stages: m)",
        ),
        (
            MAKE + '[stages.c]\nname="consume"\nsource="@m.row"\n',
            "r.toml: stages.c.source: stage 'm' has no output 'row' (outputs: rows, notes)",
        ),
        (
            '[stages.n]\nname="noop"\n[stages.c]\nname="consume"\nsource="@n"\n',
            "r.toml: stages.c.source: stage 'n' (noop) has no outputs to use",
        ),
    ],
)
def test_bad_stage_output_references(recipe, text, expected):
    assert errors_of(recipe(text)) == [expected]


def test_reference_to_a_stage_with_an_unknown_name_is_reported_once(recipe):
    lines = errors_of(recipe(
        '[stages.m]\nname="nosuch"\n[stages.c]\nname="consume"\nsource="@m.rows"\n'
    ))
    assert len(lines) == 1 and lines[0].startswith("r.toml: stages.m.name: unknown stage")


# ---------------------------------------------------------------------------- one pass


def test_every_problem_is_reported_in_one_pass(recipe):
    lines = errors_of(recipe(
        '[run]\nseed = "x"\n'
        '[stages.m]\nname="make"\ncount="many"\nwindow={stop=1}\n'
        '[stages.c]\nname="consume"\nsource="@m.nope"\ncleaners=["strp"]\n'
        'reward={name="weighted", terms=[{source="lenght", weight="heavy"}]}\n'
    ))
    # (`lenght` sits in the term whose weight is wrong: pydantic rejects the term as a whole.)
    assert [line.split(":")[1].strip() for line in lines] == [
        "run.seed",  # [run] errors do not hide the stages'
        "stages.m.count",
        "stages.c.source",  # stage m's bad table does not hide its outputs
        "stages.c.reward.terms[0].weight",
        "stages.c.cleaners[0].name",
    ]
    assert all(line.startswith("r.toml: ") for line in lines)


def test_a_bad_field_does_not_hide_problems_in_its_siblings(recipe):
    lines = errors_of(recipe(
        '[stages.c]\nname="consume"\nsource="rows.jsonl"\nmodel=3\ncleaners=["strp"]\n'
        'reward={name="weighted", terms=[{source="lenght"}]}\n'
    ))
    assert [line.split(":")[1].strip() for line in lines] == [
        "stages.c.model",
        "stages.c.reward.terms[0].source.name",
        "stages.c.cleaners[0].name",
    ]


def test_errors_are_user_errors_with_exit_status_2(recipe):
    with pytest.raises(UserError) as caught:
        load_recipe(recipe("[stages]\n"))
    assert caught.value.exit_code == 2
