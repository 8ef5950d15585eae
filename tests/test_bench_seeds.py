"""bench/bench_quickstart_seeds.py without running a recipe: its options, the seed it writes
into a recipe, and the figures it reads from a finished run (a fake one with known numbers)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest
from report_fakes import make_raft_run

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def bench():
    return load("bench_quickstart_seeds")


def test_seeds_option(bench):
    assert bench.parse_seeds("1,2,3") == [1, 2, 3]
    assert bench.parse_seeds(" 4 5 ") == [4, 5]
    for bad, message in (("1,x", "whole numbers"), ("", "no seeds"), ("2,2", "repeated")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            bench.parse_seeds(bad)


def test_bad_seeds_on_the_command_line_exit_2(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--seeds", "one"])
    assert exc.value.code == 2
    assert "whole numbers" in capsys.readouterr().err


@pytest.mark.parametrize("text", [
    '[run]\noutput_dir = "x"\nseed = 1\n\n[stages.a]\nseed = 9\n',  # replaced in [run] only
    '[run]\noutput_dir = "x"\n\n[stages.a]\nseed = 9\n',  # added to [run]
    '[stages.a]\nseed = 9\n',  # no [run] table
])
def test_the_seed_goes_into_the_run_table(bench, text):
    recipe = tomllib.loads(bench.with_seed(text, 7))
    assert recipe["run"]["seed"] == 7 and recipe["stages"]["a"]["seed"] == 9


def test_the_quickstart_recipe_takes_a_seed_and_an_answer_limit(bench):
    shipped = tomllib.loads(bench.RECIPE.read_text(encoding="utf-8"))
    text = bench.with_seed(bench.RECIPE.read_text(encoding="utf-8"), 3)
    text = bench.set_in_table(text, "stages.evaluate", "max_new_tokens", "196")
    recipe = tomllib.loads(text)
    assert recipe["run"]["seed"] == 3 and recipe["stages"]["evaluate"]["max_new_tokens"] == 196
    # the align stage's own limits are left alone
    limit = shipped["stages"]["align"]["algorithm"]["max_new_tokens"]
    assert limit != 196 and recipe["stages"]["align"]["algorithm"]["max_new_tokens"] == limit
    added = tomllib.loads(bench.set_in_table("[run]\nseed = 1\n", "stages.evaluate", "x", "2"))
    assert added == {"run": {"seed": 1}, "stages": {"evaluate": {"x": 2}}}


def test_a_bad_answer_limit_exits_2(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--eval-max-new-tokens", "0"])
    assert exc.value.code == 2 and "positive" in capsys.readouterr().err


def fake_quickstart_run(run: Path) -> Path:
    """A RAFT run (eval rewards before 1 and discarded, after 5 and 4) with an evaluate stage
    and two reward models."""
    make_raft_run(run)
    state = json.loads((run / "run_state.json").read_text())
    state["stages"]["evaluate"] = {"status": "completed", "seconds": 80.0}
    (run / "run_state.json").write_text(json.dumps(state))
    stage = run / "stages" / "evaluate"
    stage.mkdir(parents=True)
    (stage / "eval.json").write_text(json.dumps({
        "num_prompts": 50,
        "models": [{"label": "before", "mean_reward": -0.25, "finished_rate": 0.4},
                   {"label": "after", "mean_reward": -0.15, "finished_rate": 0.62}],
        "comparisons": [{"a": "after", "b": "before", "n": 50, "wins": 30, "losses": 20,
                         "ties": 0, "win_rate": 0.6, "ci_low": 0.46, "ci_high": 0.74,
                         "ci_level": 0.95, "sign_test_p": 0.2026, "lc_win_rate": 0.55,
                         "lc_ci_low": 0.41, "lc_ci_high": 0.69, "mean_length_a": 240.4,
                         "mean_length_b": 180.6}],
        "rows": [
            {"answers": {"before": {"reward": 0.1, "finished": False},
                         "after": {"reward": 0.3, "finished": True}}},
            {"answers": {"before": {"reward": 0.5, "finished": True},
                         "after": {"reward": 0.2, "finished": True}}},
            {"answers": {"before": {"reward": 0.2, "finished": True},
                         "after": {"reward": None, "finished": True}}},  # discarded: loses
            {"answers": {"before": {"reward": None, "finished": False},
                         "after": {"reward": 0.0, "finished": False}}},
            {"answers": {"before": {"reward": 0.4, "finished": False},
                         "after": {"reward": 0.4, "finished": True}}},
        ],
    }))
    for name, accuracy in (("reward_model", 0.864), ("judge", 0.84)):
        (run / "stages" / name).mkdir(parents=True)
        (run / "stages" / name / "eval.json").write_text(json.dumps({
            "after": {"accuracy": accuracy, "ci_low": accuracy - 0.06,
                      "ci_high": accuracy + 0.05, "pairs": 125.0}}))
    return run


def test_figures_read_from_a_run(bench, tmp_path):
    s = bench.summarise(fake_quickstart_run(tmp_path / "run"))
    assert s["judge"]["win_rate"] == 0.6 and s["judge"]["sign_test_p"] == 0.2026
    assert s["finished_rate"] == {"before": 0.4, "after": 0.62}
    assert s["by_ending"] == {"after cut, before cut": [1, 0, 0],
                              "after ended, before cut": [1, 0, 1],
                              "after ended, before ended": [0, 2, 0]}
    # the training reward's own eval: both prompts won (5 > 1, 4 over a discarded answer)
    t = s["training"]
    assert (t["win_rate"], t["n"], t["reward_before"], t["reward_after"]) == (1.0, 2, 1.0, 4.5)
    assert s["rm_accuracy"]["judge"]["accuracy"] == 0.84
    assert s["stage_seconds"] == {"align": 42.5, "evaluate": 80.0}
    text = "\n".join(bench.lines_for(1, s, 447.0))
    assert "seed 1: 447 s in all" in text
    assert "win rate 0.600 [0.460, 0.740] 95%; 30 wins, 20 losses, 0 ties of 50" in text
    assert ("judge at equal length (length-controlled): 0.550 [0.410, 0.690]; answers 240 vs "
            "181 characters") in text
    assert "mean reward 1.000 -> 4.500 (gain 3.500)" in text
    assert "ended by themselves (not at the length limit): before 0.40, after 0.62" in text
    assert ("verdict by which answers ended (wins/losses/ties): after cut, before cut 1/0/0; "
            "after ended, before cut 1/0/1; after ended, before ended 0/2/0") in text
    assert "reward_model: held-out pairwise accuracy 0.864 [0.804, 0.914] on 125 pairs" in text
    (line,) = bench.summary_lines([(1, s, 400.0), (2, s, 500.0)])
    assert "mean 0.600" in line and "above 0.5 in 0 of 2" in line and "median 450 s" in line
    assert "at equal length mean 0.550, min 0.550" in line


def test_summarise_option_prints_a_finished_run(bench, tmp_path, capsys):
    run = fake_quickstart_run(tmp_path / "run")
    assert bench.main(["--summarise", str(run)]) == 0
    assert "judge (independent): after over before win rate 0.600" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench.main(["--summarise", str(tmp_path)])
    assert exc.value.code == 2


def test_cpu_flags_from_cpuinfo():
    machine = load("machine")
    cpuinfo = ("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_bf16\n\n"
               "processor\t: 1\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_bf16\n")
    assert machine.cpu_flags(cpuinfo) == {"avx2": True, "avx512f": True, "avx512_bf16": True,
                                          "amx_tile": False, "amx_bf16": False}
    line = machine.describe(cpuinfo)
    assert "flags: avx2, avx512f, avx512_bf16 (not: amx_tile, amx_bf16)" in line
    assert "load average" in line
    assert machine.cpu_flags("") == dict.fromkeys(machine.FLAGS, False)


def test_the_training_reward_scores_the_judges_answers(bench, tmp_path):
    """With the run's recipe at hand, the training reward (here the pattern reward: one point
    per word of 3 or more letters) scores the evaluate stage's answers after the run; a
    discarded answer loses, as under the judge."""
    run = fake_quickstart_run(tmp_path / "run")
    (run / "recipe.toml").write_text(
        '[stages.align]\nreward = { name = "pattern_penalty", rules = [{ pattern = '
        '"[A-Za-z]{3,}", penalty = -1.0 }] }\n', encoding="utf-8")
    path = run / "stages" / "evaluate" / "eval.json"
    verdict = json.loads(path.read_text())
    texts = [("one two", "one two three"), ("a b", "a b"), ("four", None),
             ("five six", "x"), (None, "seven")]
    for row, (before, after) in zip(verdict["rows"], texts, strict=True):
        row["prompt"] = "Q: "
        for label, text in (("before", before), ("after", after)):
            row["answers"][label].update(response=text or "", discarded=None if text else "x")
    path.write_text(json.dumps(verdict))
    t = bench.summarise(run)["training"]
    assert t["on"] == "the judge's answers" and t["n"] == 5
    # after over before: win, tie, loss (discarded), loss, win (before discarded)
    assert t["win_rate"] == pytest.approx((2 + 0.5) / 5)
    assert t["reward_before"] == pytest.approx((2 + 0 + 1 + 2) / 4)
    assert t["reward_after"] == pytest.approx((3 + 0 + 0 + 1) / 4)
    text = "\n".join(bench.lines_for(1, bench.summarise(run)))
    assert "on the judge's answers: win rate 0.500" in text


@pytest.mark.parametrize("model", ["@rm.model", "@rm"])
def test_the_training_reward_model_is_the_output_the_run_recorded(bench, tmp_path, monkeypatch,
                                                                    model):
    """`@stage.output` (or a stage's first output) names the folder the run state recorded,
    wherever that is; a stage that did not complete gives no training view, not an error."""
    import rlhfx.config

    run = fake_quickstart_run(tmp_path / "run")
    (run / "recipe.toml").write_text(
        f'[stages.align]\nreward = {{ name = "reward_model", model = "{model}" }}\n',
        encoding="utf-8")
    built = []

    class Recorded:
        def __init__(self, **table):
            built.append(table)

        def resolve(self):
            pass

        def build(self):
            return "a reward source"

    monkeypatch.setattr(rlhfx.config, "RewardSourceRef", Recorded)
    assert bench._training_reward(run) is None  # no stage "rm" in the run state
    state = json.loads((run / "run_state.json").read_text())
    state["stages"]["rm"] = {"status": "completed", "outputs": {"model": "elsewhere/rm"}}
    (run / "run_state.json").write_text(json.dumps(state))
    assert bench._training_reward(run) == "a reward source"
    assert built == [{"name": "reward_model", "model": str(run / "elsewhere" / "rm")}]
