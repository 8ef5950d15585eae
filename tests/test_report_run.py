"""The report of a real run: the tiny RAFT recipe (2 iterations), reported while it is still
going and again when it has finished."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from report_fakes import Page, figure_files

from rlhfx.plugins.report import write_report
from rlhfx.plugins.report.collect import read_records
from rlhfx.testing import rlhfx_command, run_rlhfx

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.slow
def test_report_of_tiny_raft_while_running_and_after(tmp_path):
    text = (RECIPES / "tiny_raft.toml").read_text(encoding="utf-8")
    assert "iterations = 6" in text
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(text.replace("iterations = 6", "iterations = 2"), encoding="utf-8")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFX_")}
    proc = subprocess.Popen([*rlhfx_command(), "run", str(recipe), "-o", str(run)], cwd=tmp_path,
                            env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        # As soon as the first record (the eval before training) is there, report the live run.
        deadline = time.monotonic() + 120
        while not read_records(run / "stages/align/metrics.jsonl"):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        live = Page(write_report(run, output=tmp_path / "live.html").read_text())
        assert live.tables["stages"][1][0] == "align"
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr

    result = run_rlhfx("report", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    html = (run / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    assert "status <b>completed</b>" in html
    assert {"align-reward.png", "align-distinct.png", "align-cleaners.png",
            "align-length.png", "align-phases.png"} <= set(figure_files(page))
    summary = {row[0]: row[1:] for row in page.tables["summary-align"][1:]}
    assert summary["eval reward (mean)"][3] == "0 → 2"
    # The eval table: every eval prompt (up to 40 in this recipe) before and after.
    rows = page.tables["eval-align"]
    assert rows[0][1] == "response at step 0" and rows[0][3] == "response at step 2"
    evals = read_records(run / "stages/align/iterations/iter-0002/eval.jsonl")
    assert len(rows) == 1 + min(len(evals), 40) + 1
    question = evals[0]["prompt"].split("###Human:")[1].split("###Assistant:")[0].strip()
    assert rows[1][0] == f"user: {question}"
