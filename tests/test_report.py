"""`rlhfx report RUN_DIR` on fake RAFT, PPO, pipeline and interrupted runs: what the page
shows (numbers, figures, eval table), that it needs nothing beside it, and clear errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from report_fakes import (
    EVAL_PROMPTS,
    Page,
    figure_files,
    make_pipeline_run,
    make_ppo_run,
    make_raft_run,
    png_size,
    raft_record,
    write_jsonl,
    write_marker,
    write_state,
)

from rlhfx.plugins.report import write_report
from rlhfx.plugins.report.collect import collect_run, merge_by_step, read_records


def report(run: Path, **kwargs) -> tuple[str, Page]:
    path = write_report(run, **kwargs)
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def test_raft_run(tmp_path):
    run = make_raft_run(tmp_path / "run")
    text, page = report(run)
    assert (run / "report.html").exists()
    # Self-contained: every image is inline PNG data, nothing is fetched.
    assert page.images and not page.links
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        width, height = png_size(base64.b64decode(img["src"].split(",", 1)[1]))
        assert width >= 400 and height >= 100
        assert (run / "report_files" / img["data-file"]).exists()  # and the PNG beside it
    assert figure_files(page) == [
        "run-stage-times.png", "align-reward.png", "align-distinct.png", "align-cleaners.png",
        "align-length.png", "align-phases.png", "align-own-metrics.png",
    ]  # no KL figure: RAFT has no KL; raft/train_steps is RAFT's own metric
    assert "<title>rlhfx report: fake raft</title>" in text
    # Stages table and the before/after figures (eval 1 -> 7 over iterations 0..3).
    assert page.tables["stages"][1][:4] == ["align", "align (raft)", "completed", "42.5 s"]
    summary = {row[0]: row[1:] for row in page.tables["summary-align"][1:]}
    assert summary["eval reward (mean)"] == ["1", "7", "+6", "0 → 3"]
    assert summary["reward of the samples trained on (mean)"] == ["3", "5", "+2", "1 → 3"]
    assert summary["discarded share (samples)"][:3] == ["0.25", "0.08333", "-0.1667"]
    # The eval table pairs each prompt's response before (iteration 0) and after (3).
    rows = page.tables["eval-align"]
    assert rows[0] == ["prompt", "response at step 0", "reward", "response at step 3",
                       "reward", "change"]
    # Prompts show as conversations: the role, then the text, without the template markup.
    assert rows[1] == ["user: How do I cook rice?", "rice rice", "1",
                       "Rinse the rice, then simmer it.", "5", "+4"]
    assert rows[2][0] == "user: Why is the sky blue?" and rows[2][1] == "### ### discarded"
    assert rows[2][2:] == ["—", "<script>alert(1)</script> & light scatters", "4", "—"]
    assert rows[3] == ["mean reward", "", "1", "", "4.5", ""]
    assert '<li>step 3: distinct-2 fell to 0.8 &lt;below&gt;</li>' in text  # guard warnings
    assert "tensorboard --logdir" not in text  # the run wrote no TensorBoard logs
    # Model output is escaped, never markup.
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in text
    # The recipe, escaped and verbatim.
    assert '<pre id="recipe">[run]\nname = &quot;fake raft&quot;' in text


def test_ppo_run(tmp_path):
    run = make_ppo_run(tmp_path / "run")
    data = collect_run(run).stages[0]
    assert data.algorithm == "ppo"
    assert data.series("kl_mean") == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert data.series("reward_mean") == [(1, 8.0), (2, 9.0), (3, 10.0)]
    assert data.series("changed_rate") == [(1, 0.25), (2, 0.5), (3, 0.75)]
    # Phases without the total that contains them; PPO's own timings are its own metrics.
    assert sorted(data.phases()) == ["generate", "score", "update"]
    assert data.own_metrics() == ["ppo/kl_coef", "ppo/scores_mean", "ppo/discarded",
                                  "ppo/loss/total", "ppo/time/forward_pass"]
    (run / "tensorboard/align").mkdir(parents=True)
    text, page = report(run, output=tmp_path / "out/ppo.html")
    assert f"tensorboard --logdir {run / 'tensorboard'}" in text
    assert (tmp_path / "out/ppo_files/align-kl.png").exists()
    assert "align-kl.png" in figure_files(page)
    assert "align-own-metrics.png" in figure_files(page)
    summary = {row[0]: row[1:] for row in page.tables["summary-align"][1:]}
    assert summary["KL to reference"][:2] == ["0.5", "1.5"]
    assert summary["eval reward (mean)"] == ["9", "9", "—", "3 → 3"]
    # No eval responses: the first and last step's training samples, side by side.
    assert "wrote no eval responses" in text
    rows = page.tables["samples-align"]
    assert rows[1][:3] == ["user: question 1-0", "answer 1-0", "1"]
    assert rows[1][3:] == ["user: question 3-0", "answer 3-0", "3"]
    assert rows[4][4] == "answer 3-3 discarded"


def test_pipeline_run_shows_reward_model_accuracy(tmp_path):
    run = make_pipeline_run(tmp_path / "run")
    _, page = report(run)
    assert [r[0] for r in page.tables["stages"][1:]] == ["sft", "reward_model", "align"]
    assert page.tables["rm-reward_model"][1:] == [
        ["before training", "0.5", "—", "0", "24"],
        ["after training", "0.875", "0.69 – 0.9566", "1.5", "24"],  # 21 of 24, Wilson
    ]
    assert {"sft-training.png", "reward_model-training.png"} <= set(figure_files(page))
    # Without eval.json, the accuracy comes from the stage's eval metrics.
    (run / "stages/reward_model/eval.json").unlink()
    _, page = report(run)
    assert page.tables["rm-reward_model"][1:] == [["after training", "0.875", "—", "1.5",
                                                   "24"]]


def test_interrupted_run(tmp_path):
    """Killed in iteration 2: state `running`, a torn last metrics line (cut inside a
    multi-byte character), a later stage never started, and only the eval before training."""
    run = make_raft_run(tmp_path / "run", iterations=1)
    (run / "recipe.toml").write_text(
        (run / "recipe.toml").read_text() + '\n[stages.after]\nname = "noop"\n')
    write_state(run, {"align": {"status": "running", "started": 990.0}})
    metrics = run / "stages/align/metrics.jsonl"
    torn = json.dumps(raft_record(2), ensure_ascii=False)[:-40].encode() + "é".encode()[:1]
    metrics.write_bytes(metrics.read_bytes() + torn)
    for name in ("iter-0001/eval.jsonl", "iter-0001/samples.jsonl"):
        (run / "stages/align/iterations" / name).unlink()

    data = collect_run(run)
    assert [(s.id, s.status) for s in data.stages] == [("align", "running"),
                                                       ("after", "not started")]
    assert data.status == "running or interrupted"
    align = data.stages[0]
    assert [r["step"] for r in align.records] == [0, 1]  # the torn record is skipped
    assert align.seconds == pytest.approx(20.0)  # started 990, last record at 1010
    text, page = report(run)
    assert "status <b>running or interrupted</b>" in text and "has not finished" in text
    assert page.tables["stages"][2][:3] == ["after", "noop", "not started"]
    assert "Only one evaluation so far (step 0)" in text
    assert page.tables["eval-align"][0] == ["prompt", "response at step 0", "reward"]


def test_a_run_that_has_barely_started(tmp_path):
    run = tmp_path / "run"
    (run / "stages/align").mkdir(parents=True)
    (run / "recipe.toml").write_text("[stages.align]\nname = 'align'\n[broken", encoding="utf-8")
    text, page = report(run)
    assert page.tables["stages"][1][:3] == ["align", "align", "running"]
    assert page.images == []  # nothing to draw yet
    assert "[broken" in text  # an unreadable recipe is still shown as text


def test_records_reader(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1, "a": 1}\n\n[1, 2]\nnot json\n{"step": 1, "b": 2}\n'
                     b'{"step": 0, "a": 0}\n{"step": 2, "a": \xc3')
    records = read_records(path)
    assert records == [{"step": 1, "a": 1}, {"step": 1, "b": 2}, {"step": 0, "a": 0}]
    assert merge_by_step(records) == [{"step": 0, "a": 0}, {"step": 1, "a": 1, "b": 2}]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_cli(rlhfx_cli, tmp_path):
    run = make_raft_run(tmp_path / "run")
    result = rlhfx_cli("report", str(run), "--output", str(tmp_path / "r.html"),
                       "--max-samples", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"report written: {tmp_path / 'r.html'}\n"
    page = Page((tmp_path / "r.html").read_text())
    assert len(page.tables["eval-align"]) == 3  # head, one prompt, the mean-reward row
    assert "and 1 more" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "nowhere", "no such run directory"),
    (lambda p: p, "not a run directory"),
])
def test_cli_errors(rlhfx_cli, tmp_path, make, message):
    result = rlhfx_cli("report", str(make(tmp_path)))
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2


def test_eval_files_by_iteration_give_the_before_after_table(tmp_path):
    run = make_ppo_run(tmp_path / "run")
    for step, words in ((0, "a b"), (3, "c d e")):
        write_jsonl(run / f"stages/align/iterations/iter-{step:04d}/eval.jsonl", [
            {"prompt": p, "response": f"{words} {i}", "reward": float(step + i)}
            for i, p in enumerate(EVAL_PROMPTS)
        ])
    _, page = report(run)
    assert page.tables["eval-align"][1] == ["user: How do I cook rice?", "a b 0", "0",
                                            "c d e 0", "3", "+3"]
    assert "samples-align" not in page.tables


def test_a_third_party_algorithms_own_metrics_are_drawn(tmp_path):
    """The report knows no algorithm: a plugin's `<name>/...` metrics get their own panels."""
    run = make_ppo_run(tmp_path / "run")
    stage = run / "stages/align"
    write_marker(stage, "best_of_n_sft")
    rows = [{"step": s, "reward_mean": float(s), "best_of_n_sft/kept_share": 0.5 + 0.1 * s}
            for s in (1, 2, 3)]
    write_jsonl(stage / "metrics.jsonl", rows)
    data = collect_run(run).stages[0]
    assert data.algorithm == "best_of_n_sft"
    assert data.own_metrics() == ["best_of_n_sft/kept_share"]
    _, page = report(run)
    assert {"align-reward.png", "align-own-metrics.png"} <= set(figure_files(page))
    assert page.tables["stages"][1][1] == "align (best_of_n_sft)"


@pytest.mark.parametrize("layout", ["no-marker", "old-schema"])
def test_an_alignment_stage_of_an_older_rlhfx_is_refused_in_one_line(tmp_path, layout):
    run = make_ppo_run(tmp_path / "run")
    stage = run / "stages/align"
    if layout == "no-marker":
        (stage / "alignment.json").unlink()
    else:
        write_marker(stage, "ppo", version=1)
    data = collect_run(run).stages[0]
    assert data.unsupported and "--restart-from" in data.unsupported
    assert data.records == [] and not data.is_alignment
    text, page = report(run)
    assert data.unsupported.replace('"', "&quot;") in text or data.unsupported in text
    assert not [f for f in figure_files(page) if f.startswith("align-")]
