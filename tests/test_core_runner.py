"""`rlhfx run` plumbing with test-only stages: output directory, recipe copy, seeds, run.log,
run_state.json, skipping completed stages, refusing changed ones, --restart-from, resuming an
interrupted stage, metrics, and outputs passed on through `@stage.output`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfx.files import read_jsonl
from rlhfx.testing import run_rlhfx

TWO_STAGES = """\
[run]
output_dir = "out"
seed = 100

[stages.m]
name = "make"
count = 3

[stages.c]
name = "consume"
source = "@m.rows"
reward = "length"
"""
FAIL_ONCE = TWO_STAGES.replace("count = 3", "count = 3\nfail_once = true")


@pytest.fixture
def workdir(tmp_path, monkeypatch, teststages):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return path.name


def errors(result) -> str:
    """The CLI's error lines (stderr also carries the progress log)."""
    return "".join(line + "\n" for line in result.stderr.splitlines() if line.startswith("error:"))


def calls(run_dir: Path) -> list[str]:
    return [c["stage"] for c in read_jsonl(run_dir / "calls.jsonl")]


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_state.json").read_text())["stages"]


def test_run_writes_the_run_directory(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 0, result.output
    out = workdir / "out"
    assert result.stdout == f"run complete: {Path('out')}\n"
    # The recipe, byte for byte.
    assert (out / "recipe.toml").read_text() == TWO_STAGES
    # Stages ran in order, each in its own directory, with seed = run.seed + index.
    assert [(c["stage"], c["seed"]) for c in read_jsonl(out / "calls.jsonl")] == [
        ("m", 100), ("c", 101),
    ]
    rows = list(read_jsonl(out / "stages/m/rows.jsonl"))
    assert [r["i"] for r in rows] == [0, 1, 2] and {r["seed"] for r in rows} == {100}
    # The next stage read the first one's output through `@m.rows`.
    summary = json.loads((out / "stages/c/summary.json").read_text())
    assert Path(summary["source"]).resolve() == (out / "stages/m/rows.jsonl").resolve()
    assert summary["n"] == 3 and summary["scores"] == [1.0, 1.0, 1.0]
    # run_state.json: completed, outputs relative to the run directory, a fingerprint each.
    st = state(out)
    assert st["m"]["status"] == "completed" and st["c"]["status"] == "completed"
    assert st["m"]["outputs"] == {"rows": "stages/m/rows.jsonl", "notes": "stages/m/notes.txt"}
    assert st["c"]["outputs"] == {"summary": "stages/c/summary.json"}
    assert len(st["m"]["fingerprint"]) == 16 and st["m"]["fingerprint"] != st["c"]["fingerprint"]
    # run.log has each stage's start and end, and what the stage logged.
    log = (out / "run.log").read_text()
    for text in ("stage m (make): starting", "made 3 rows", "stage m: completed",
                 "stage c (consume): starting", "stage c: completed"):
        assert text in log
    # metrics.jsonl in the stage directory; a failing tracker hook did not stop the run.
    metrics = list(read_jsonl(out / "stages/m/metrics.jsonl"))
    assert [(m["step"], m["rows"]) for m in metrics] == [(0, 3), (1, 3)]
    assert [(h["stage"], h["step"]) for h in read_jsonl(out / "hooked.jsonl")] == [
        ("m", 0), ("m", 1),
    ]
    assert ("plugin 'teststages' (rlhfx-teststages 0.1.0): rlhfx_log_metrics failed "
            "(RuntimeError: tracker is down) at rlhfx_teststages.py:151 in rlhfx_log_metrics; "
            "its later errors are not shown") in log


def test_default_output_dir_and_override(rlhfx_cli, workdir):
    recipe = write(workdir / "myrecipe.toml", '[stages.m]\nname="make"\ncount=1\n')
    assert rlhfx_cli("run", recipe).exit_code == 0
    assert (workdir / "runs/myrecipe/stages/m/rows.jsonl").exists()
    assert rlhfx_cli("run", recipe, "--output-dir", "elsewhere").exit_code == 0
    assert (workdir / "elsewhere/stages/m/rows.jsonl").exists()


def test_same_seed_gives_the_same_random_numbers(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", '[run]\nseed = 5\n[stages.m]\nname="make"\ncount=2\n')
    rlhfx_cli("run", recipe, "-o", "one")
    rlhfx_cli("run", recipe, "-o", "two")
    first = list(read_jsonl(workdir / "one/stages/m/rows.jsonl"))
    second = list(read_jsonl(workdir / "two/stages/m/rows.jsonl"))
    assert first == second
    assert first[0]["torch"] != first[1]["torch"]
    write(workdir / "r.toml", '[run]\nseed = 6\n[stages.m]\nname="make"\ncount=2\n')
    rlhfx_cli("run", recipe, "-o", "three")
    third = list(read_jsonl(workdir / "three/stages/m/rows.jsonl"))
    assert third[0]["torch"] != first[0]["torch"] and third[0]["random"] != first[0]["random"]


def test_rerun_skips_completed_stages(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 0, result.output
    assert calls(workdir / "out") == ["m", "c"]  # nothing ran twice
    log = (workdir / "out/run.log").read_text()
    assert "stage m: completed earlier, skipped" in log
    assert "stage c: completed earlier, skipped" in log


def test_later_stage_added_to_a_finished_run_gets_earlier_outputs(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    write(workdir / "r.toml", TWO_STAGES + '\n[stages.c2]\nname = "consume"\nsource = "@m"\n')
    assert rlhfx_cli("run", recipe).exit_code == 0
    assert calls(workdir / "out") == ["m", "c", "c2"]
    summary = json.loads((workdir / "out/stages/c2/summary.json").read_text())
    assert summary["source"].endswith("stages/m/rows.jsonl")  # `@m` = first declared output
    assert summary["n"] == 3
    # The old recipe is kept beside the new copy.
    copies = sorted(p.name for p in (workdir / "out").glob("recipe*.toml"))
    assert len(copies) == 2 and "recipe.toml" in copies
    assert (workdir / "out/recipe.toml").read_text().endswith('source = "@m"\n')


def test_stage_references_nested_in_components_are_resolved(rlhfx_cli, workdir):
    """`@stage.output` deep inside a component's options reaches the component as a path."""
    nested = (
        '\n[stages.c3]\nname = "consume"\nsource = "@m.rows"\n'
        'reward = { name = "weighted", terms = '
        '[{ source = { name = "lines", path = "@m.rows" } }] }\n'
    )
    write(workdir / "r.toml", TWO_STAGES + nested)
    result = rlhfx_cli("run", "r.toml")
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "out/stages/c3/summary.json").read_text())
    assert summary["scores"] == [3.0, 3.0, 3.0]  # the rows file has 3 lines


@pytest.mark.parametrize("changed", ["m", "c"])
def test_changed_stage_table_is_refused(rlhfx_cli, workdir, changed):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    text = TWO_STAGES.replace("count = 3", "count = 4") if changed == "m" else \
        TWO_STAGES.replace('reward = "length"', 'reward = "pattern_penalty"')
    write(workdir / "r.toml", text)
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2
    assert errors(result) == (
        f"error: r.toml: stages.{changed}: this stage completed in out with a different recipe "
        f"(or an earlier stage changed); rerun with --restart-from {changed} to redo it, or set "
        "another run.output_dir\n"
    )
    assert calls(workdir / "out") == ["m", "c"]
    # Nothing was touched: the run directory still describes the run that happened.
    assert (workdir / "out/recipe.toml").read_text() == TWO_STAGES
    assert sorted(p.name for p in (workdir / "out").glob("recipe*")) == ["recipe.toml"]


def test_every_older_recipe_copy_is_kept(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    texts = [TWO_STAGES]
    assert rlhfx_cli("run", recipe).exit_code == 0
    for extra in ("a", "b"):  # two changes within one second must not overwrite a copy
        texts.append(TWO_STAGES + f'\n[stages.{extra}]\nname = "noop"\n')
        write(workdir / "r.toml", texts[-1])
        assert rlhfx_cli("run", recipe).exit_code == 0
    kept = {p.read_text() for p in (workdir / "out").glob("recipe*.toml")}
    assert kept == set(texts)
    assert (workdir / "out/recipe.toml").read_text() == texts[-1]


def test_cuda_asked_for_without_cuda(rlhfx_cli, workdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    recipe = write(workdir / "r.toml", '[run]\ndevice = "cuda"\n' + TWO_STAGES.split("\n", 1)[1])
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2
    assert errors(result) == (
        "error: r.toml: run.device: 'cuda' asked for, but no CUDA device is available "
        "(use 'auto' or 'cpu')\n"
    )


def test_changed_seed_is_refused(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    write(workdir / "r.toml", TWO_STAGES.replace("seed = 100", "seed = 1"))
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2 and "stages.m: this stage completed" in result.stderr


def test_restart_from_moves_old_directories_aside(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    write(workdir / "r.toml", TWO_STAGES.replace('reward = "length"', 'reward = "pattern_penalty"'))
    for _ in range(2):  # twice within a second: the second move must not clash with the first
        result = rlhfx_cli("run", recipe, "--restart-from", "c")
        assert result.exit_code == 0, result.output
    out = workdir / "out"
    assert calls(out) == ["m", "c", "c", "c"]
    old = sorted(p.name for p in (out / "stages").iterdir() if p.name.startswith("c.old-"))
    assert len(old) == 2
    for name in old:  # the old work is kept, not deleted
        assert (out / "stages" / name / "summary.json").exists()
    summary = json.loads((out / "stages/c/summary.json").read_text())
    assert summary["scores"] == [0.0, 0.0, 0.0]  # the new reward ran
    assert (out / "stages/m/rows.jsonl").exists()  # earlier stages untouched


def test_restart_from_an_earlier_stage_redoes_the_later_ones(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    assert rlhfx_cli("run", recipe, "--restart-from", "m").exit_code == 0
    assert calls(workdir / "out") == ["m", "c", "m", "c"]
    assert {p.name.split(".old-")[0] for p in (workdir / "out/stages").glob("*.old-*")} == {
        "m", "c",
    }


def test_restart_from_an_unknown_stage(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    result = rlhfx_cli("run", recipe, "--restart-from", "x")
    assert result.exit_code == 2
    assert result.stderr == "error: --restart-from: no stage 'x' in r.toml (stages: m, c)\n"


def test_interrupted_stage_resumes_on_the_next_run(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", FAIL_ONCE)
    result = rlhfx_cli("run", recipe)  # a third-party stage's fault names its plugin
    assert result.exit_code == 2
    assert errors(result) == (
        "error: r.toml: stages.m: stage 'make' (plugin 'teststages', rlhfx-teststages 0.1.0) "
        "failed: RuntimeError: planned failure (at rlhfx_teststages.py:65 in run)\n"
    )
    assert "Traceback" not in result.output
    out = workdir / "out"
    assert state(out)["m"]["status"] == "running"
    assert "c" not in state(out)
    log = (out / "run.log").read_text()
    assert "stage m stopped" in log and "RuntimeError: planned failure" in log  # traceback kept
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 0, result.output
    assert "stage m (make): resuming" in (out / "run.log").read_text()
    assert calls(out) == ["m", "m", "c"]
    assert state(out)["m"]["status"] == "completed"


def test_changed_table_of_an_interrupted_stage_is_refused(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", FAIL_ONCE)
    assert rlhfx_cli("run", recipe).exit_code == 2
    write(workdir / "r.toml", FAIL_ONCE.replace("count = 3", "count = 9"))
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2
    assert "stages.m: this stage started in out with a different recipe" in result.stderr


def test_user_error_inside_a_stage_exits_2_without_traceback(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml",
                   TWO_STAGES.replace("count = 3", "count = 3\nuser_error = true"))
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2
    assert errors(result) == "error: r.toml: stages.m: planned user error\n"
    assert "Traceback" not in result.output
    assert "stopped" not in result.stderr  # said once on screen, by the CLI
    assert "stage m stopped: r.toml: stages.m: planned user error" in (
        workdir / "out/run.log"
    ).read_text()


def test_run_refuses_an_invalid_recipe_before_creating_anything(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES.replace("count = 3", "count = -3"))
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2 and "stages.m.count" in result.stderr
    assert not (workdir / "out").exists()


def test_run_in_a_real_process(teststages, workdir):
    write(workdir / "r.toml", TWO_STAGES)
    result = run_rlhfx("run", "r.toml", cwd=workdir, pythonpath=teststages)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "run complete: out\n"
    assert "stage c: completed" in result.stderr  # progress logging goes to stderr
    assert state(workdir / "out")["c"]["status"] == "completed"


def test_output_dir_that_is_a_file_is_a_one_line_error(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    (workdir / "taken").write_text("x", encoding="utf-8")
    result = rlhfx_cli("run", recipe, "-o", "taken")
    assert result.exit_code == 2
    assert errors(result) == (
        "error: taken: the output directory is an existing file; name another\n"
    )


def test_hand_broken_run_state_is_a_user_error_saying_how_to_recover(rlhfx_cli, workdir):
    recipe = write(workdir / "r.toml", TWO_STAGES)
    assert rlhfx_cli("run", recipe).exit_code == 0
    (workdir / "out/run_state.json").write_text('{"stages": {"m": ', encoding="utf-8")
    result = rlhfx_cli("run", recipe)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = errors(result)
    assert message.startswith("error: out/run_state.json: unreadable run state")
    assert "fix or delete it" in message
