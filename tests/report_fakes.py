"""Helpers for the report tests: small fake run directories (the files the alignment loop and
the reward-model stage leave behind, with hand-picked numbers, written in milliseconds) and a
reader for the report page."""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

RAFT_RECIPE = """\
[run]
name = "fake raft"
seed = 1

[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"

[stages.align.algorithm]
name = "raft"
iterations = 3
"""

PPO_RECIPE = """\
[run]
seed = 3

[stages.align]
policy = "builtin:tiny-gpt-neo"

[stages.align.algorithm]
name = "ppo"
iterations = 3
"""

#: The eval prompts; the second response after alignment tries to break the page.
EVAL_PROMPTS = ["###Human: How do I cook rice? ###Assistant:",
                "###Human: Why is the sky blue? ###Assistant:"]
EVAL_BEFORE = [("rice rice", 1.0, False), ("### ###", None, True)]
EVAL_AFTER = [("Rinse the rice, then simmer it.", 5.0, False),
              ("<script>alert(1)</script> & light scatters", 4.0, False)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_marker(stage: Path, algorithm: str, version: int = 2) -> None:
    """The alignment loop's marker: which algorithm, which metric schema."""
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "alignment.json").write_text(json.dumps(
        {"schema_version": version, "algorithm": algorithm}), encoding="utf-8")


def write_state(run: Path, stages: dict) -> None:
    (run / "run_state.json").write_text(json.dumps({"stages": stages}), encoding="utf-8")


def raft_record(it: int) -> dict:
    """Metrics the RAFT loop logs for iteration `it` (iteration 0: the eval before training)."""
    eval_part = {"eval_reward_mean": 1.0 + 2 * it, "eval_reward_std": 0.5,
                 "eval_discarded_rate": 0.5 - 0.1 * it, "eval_distinct_2": 0.9 - 0.1 * it}
    if it == 0:
        return {"step": 0, "time": 1000.0, "iteration": 0, **eval_part}
    return {
        "step": it, "time": 1000.0 + 10 * it, "iteration": it,
        "reward_mean": 1.0 + it, "reward_std": 1.0, "num_samples": 16,
        "changed_rate": 0.5, "discarded_rate": 0.25 / it, "distinct_1": 0.5,
        "distinct_2": 0.95 - 0.05 * it, "edited_rate": 0.1, "trained_reward_mean": 2.0 + it,
        "num_trained": 4, "response_tokens_mean": 10.0 + it,
        "train_loss": 3.0 / it, "seconds_generate": 2.0, "seconds_score": 0.5,
        "seconds_update": 3.0, "seconds_eval": 1.0, "raft/train_steps": 2,
        "seconds_iteration": 6.51, **eval_part,
        "warnings": ["distinct-2 fell to 0.8 <below>"] if it == 3 else [],
    }


def eval_rows(pairs: list[tuple]) -> list[dict]:
    return [{"prompt": p, "response": r, "reward": w, "discarded": d}
            for p, (r, w, d) in zip(EVAL_PROMPTS, pairs, strict=True)]


def make_raft_run(run: Path, iterations: int = 3) -> Path:
    """A finished RAFT run: metrics for iterations 0..N, evals before and after."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "recipe.toml").write_text(RAFT_RECIPE, encoding="utf-8")
    write_state(run, {"align": {"status": "completed", "seconds": 42.5, "started": 990.0,
                                "outputs": {"model": "stages/align/model"}}})
    stage = run / "stages/align"
    write_marker(stage, "raft")
    write_jsonl(stage / "metrics.jsonl", [raft_record(i) for i in range(iterations + 1)])
    write_jsonl(stage / "iterations/iter-0000/eval.jsonl", eval_rows(EVAL_BEFORE))
    for it in range(1, iterations + 1):
        after = EVAL_AFTER if it == iterations else EVAL_BEFORE
        write_jsonl(stage / f"iterations/iter-{it:04d}/eval.jsonl", eval_rows(after))
        write_jsonl(stage / f"iterations/iter-{it:04d}/samples.jsonl", [
            {"prompt_id": 0, "sample": 0, "prompt": EVAL_PROMPTS[0], "response": "x y",
             "reward": 1.0, "changed": True, "discarded": False},
        ])
    return run


def ppo_record(step: int) -> dict:
    record = {
        "step": step, "time": 2000.0 + step, "iteration": step, "kl_mean": 0.5 * step,
        "ppo/kl_coef": 0.2 - 0.01 * step, "ppo/scores_mean": 9.0 + step,
        "reward_mean": 7.0 + step, "reward_std": 1.0, "distinct_2": 1.0,
        "discarded_rate": 0.25, "changed_rate": step / 4,
        "response_tokens_mean": 16.0, "num_samples": 4, "ppo/discarded": 1,
        "train_loss": 1.0 / step, "ppo/loss/total": 1.0 / step, "seconds_generate": 0.2,
        "seconds_score": 0.01, "seconds_update": 0.5, "ppo/time/forward_pass": 0.1,
        "seconds_iteration": 0.71,
    }
    if step == 3:
        record.update({"eval_reward_mean": 9.0, "eval_reward_std": 1.0,
                       "eval_discarded_rate": 0.0, "eval_distinct_2": 0.5})
    return record


def make_ppo_run(run: Path) -> Path:
    """A finished PPO run, with per-step samples and no eval responses."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "recipe.toml").write_text(PPO_RECIPE, encoding="utf-8")
    write_state(run, {"align": {"status": "completed", "seconds": 12.0,
                                "outputs": {"model": "stages/align/model"}}})
    stage = run / "stages/align"
    write_marker(stage, "ppo")
    write_jsonl(stage / "metrics.jsonl", [ppo_record(s) for s in (1, 2, 3)])
    for step in (1, 2, 3):
        # changed: step 1 -> 1 of 4, step 2 -> 2 of 4, step 3 -> 3 of 4
        write_jsonl(stage / f"iterations/iter-{step:04d}/samples.jsonl", [
            {"prompt_id": i, "sample": 0, "prompt": f"###Human: question {step}-{i} ###Assistant:",
             "response": f"answer {step}-{i}", "reward": float(step + i),
             "changed": i < step, "discarded": i == 3}
            for i in range(4)
        ])
    return run


def make_pipeline_run(run: Path) -> Path:
    """sft -> reward_model -> align (RAFT) with the reward model's eval.json."""
    make_raft_run(run)
    (run / "recipe.toml").write_text(
        '[stages.sft]\nmodel = "m"\n\n[stages.reward_model]\nmodel = "@sft.model"\n\n'
        + RAFT_RECIPE.split("\n\n", 1)[1], encoding="utf-8")
    state = json.loads((run / "run_state.json").read_text())["stages"]
    state["sft"] = {"status": "completed", "seconds": 11.0}
    state["reward_model"] = {"status": "completed", "seconds": 3.0}
    write_state(run, state)
    write_jsonl(run / "stages/sft/metrics.jsonl",
                [{"step": s, "time": 1.0, "loss": 5.0 / s} for s in (10, 20, 30)])
    rm = run / "stages/reward_model"
    write_jsonl(rm / "metrics.jsonl", [
        {"step": 10, "time": 1.0, "loss": 0.4, "accuracy": 0.8},
        {"step": 20, "time": 2.0, "loss": 0.1, "accuracy": 0.9},
        {"step": 20, "time": 2.5, "eval/accuracy": 0.875, "eval/mean_margin": 1.5,
         "eval/pairs": 24.0},
    ])
    (rm / "eval.json").write_text(json.dumps({
        "before": {"accuracy": 0.5, "mean_margin": 0.0, "pairs": 24.0},
        "after": {"accuracy": 0.875, "mean_margin": 1.5, "pairs": 24.0,
                  "ci_low": 0.68996, "ci_high": 0.95656},
        "train_pairs": 200, "validation_pairs": 24, "train_pairs_over_max_length": 0,
    }), encoding="utf-8")
    return run


# ----------------------------------------------------------------------------- the page


class Page(HTMLParser):
    """Images, and each table (by id) as rows of cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        elif tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))
        elif tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def figure_files(page: Page) -> list[str]:
    return [img["data-file"] for img in page.images]
