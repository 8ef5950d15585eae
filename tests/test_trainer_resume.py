"""Resuming the Trainer stages (sft, reward_model): metrics.jsonl after a crash and resume equals
an uninterrupted run's, and a damaged checkpoint is moved aside for the previous intact one."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from fixtures.stages import make_ctx, run_stage
from fixtures.synthetic import corpus, make_rows, write
from fixtures.tiny import save_tiny_lm

from rlhfx.errors import UserError
from rlhfx.files import write_jsonl
from rlhfx.trainer_resume import SET_ASIDE, find_checkpoint, prepare_resume, trim_metrics

pytest.importorskip("trl")

#: Timings differ between any two runs; everything else must not.
TIMINGS = ("time", "train_runtime", "train_samples_per_second", "train_steps_per_second")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from rlhfx.plugins.data.config import DataConfig
    from rlhfx.plugins.data.prepare import prepare
    from rlhfx.registry import get_plugins

    tmp = tmp_path_factory.mktemp("resume")
    rows = make_rows(80, seed=7)
    texts = tmp / "sft.jsonl"
    write_jsonl(texts, [{"text": t} for t in corpus(rows)[1::2]])
    pairs = write(tmp / "pairs.jsonl", 80, seed=5)
    paths, _ = prepare(DataConfig(source=str(pairs), eval_size=0), tmp / "data", 0,
                       get_plugins())
    base = save_tiny_lm(tmp / "base", corpus(rows), seed=0)
    return tmp, texts, paths["rm"], base


def stage_and_options(kind: str, setup):
    from rlhfx.plugins import dpo, reward_model, sft

    _, texts, pairs, base = setup
    common = dict(model=str(base), batch_size=4, max_length=64, max_steps=8, logging_steps=2,
                  save_steps=3, keep_checkpoints=True)
    if kind == "sft":
        return sft.SFTStage, dict(common, data=str(texts), learning_rate=3e-3)
    if kind == "dpo":
        return dpo.DPOStage, dict(common, data=pairs, learning_rate=1e-3)
    return reward_model.RewardModelStage, dict(
        common, data=pairs, learning_rate=1e-3, method="full", eval_before_training=True,
        validation_split_percentage=10,
    )


def crash_at(monkeypatch, step: int) -> list[int]:
    """Make the stage's training raise KeyboardInterrupt (Ctrl-C) at the end of `step`."""
    from transformers import TrainerCallback

    steps: list[int] = []

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)
            if state.global_step == step:
                raise KeyboardInterrupt

    from rlhfx import trainer_stage  # the skeleton every Trainer stage runs

    original = trainer_stage.run_trainer

    def run_with_crash(trainer, ctx, *rest):
        trainer.add_callback(Crash())
        original(trainer, ctx, *rest)

    monkeypatch.setattr(trainer_stage, "run_trainer", run_with_crash)
    return steps


def records(ctx) -> list[dict]:
    rows = [json.loads(x) for x in ctx.metrics_file.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def assert_same_records(resumed: list[dict], uninterrupted: list[dict]) -> None:
    assert [sorted(r) for r in resumed] == [sorted(r) for r in uninterrupted]
    for got, want in zip(resumed, uninterrupted, strict=True):
        for key, value in want.items():
            assert math.isclose(got[key], value, rel_tol=1e-5, abs_tol=1e-7), (key, got, want)


@pytest.mark.parametrize("kind", ["sft", "reward_model", "dpo"])
def test_metrics_after_a_crash_and_resume_equal_an_uninterrupted_run(setup, kind, monkeypatch):
    tmp = setup[0]
    stage, options = stage_and_options(kind, setup)
    whole = make_ctx(tmp / f"{kind}-whole", kind)
    run_stage(stage, whole, **options)

    ctx = make_ctx(tmp / f"{kind}-crashed", kind)
    crash_at(monkeypatch, 7)  # logged step 6, saved checkpoint-6: resumes there
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, ctx, **options)
    # a kill after the step-6 checkpoint but before step 7 was saved: cut back to 6
    monkeypatch.undo()
    steps = crash_at(monkeypatch, -1)
    out = run_stage(stage, ctx, **options)
    assert steps == [7, 8]
    assert (Path(out["model"]) / "rlhfx_done.json").exists()
    assert_same_records(records(ctx), records(whole))
    final = records(ctx)[-2] if kind == "reward_model" else records(ctx)[-1]
    assert "train_loss" in final  # continuous: the mean over all 8 steps, not the last 2
    if kind == "sft":
        assert [r["num_tokens"] for r in records(ctx) if "num_tokens" in r] == [
            r["num_tokens"] for r in records(whole) if "num_tokens" in r
        ]


def test_resume_between_logging_steps_keeps_the_loss_curve(setup, monkeypatch):
    """Checkpoint at step 3, logs every 2: the step-4 loss still averages steps 3 and 4."""
    tmp = setup[0]
    stage, options = stage_and_options("sft", setup)
    whole = make_ctx(tmp / "sft-whole-5", "sft")
    run_stage(stage, whole, **options)
    ctx = make_ctx(tmp / "sft-crashed-5", "sft")
    crash_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, ctx, **options)
    assert [r["step"] for r in records(ctx)] == [1, 2, 4]  # 1: the memory figure
    monkeypatch.undo()
    steps = crash_at(monkeypatch, -1)
    run_stage(stage, ctx, **options)
    assert steps == [4, 5, 6, 7, 8]
    assert_same_records(records(ctx), records(whole))


@pytest.mark.parametrize(("kind", "damaged"), [("sft", "optimizer.pt"),
                                               ("reward_model", "model.safetensors")])
def test_a_damaged_checkpoint_is_set_aside_for_the_previous_one(
    setup, kind, damaged, monkeypatch, caplog
):
    tmp = setup[0]
    stage, options = stage_and_options(kind, setup)
    ctx = make_ctx(tmp / f"{kind}-damaged", kind)
    crash_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, ctx, **options)
    checkpoints = ctx.stage_dir / "checkpoints"
    file = checkpoints / "checkpoint-6" / damaged
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 3])  # a disk that filled up mid-save
    monkeypatch.undo()
    steps = crash_at(monkeypatch, -1)
    with caplog.at_level(logging.WARNING, logger="rlhfx"):
        run_stage(stage, ctx, **options)
    assert steps == [4, 5, 6, 7, 8]  # from checkpoint-3
    moved = ctx.stage_dir / SET_ASIDE / "checkpoint-6"
    assert (moved / damaged).stat().st_size == len(data) // 3  # kept, not deleted
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"test.toml: stages.{kind}: checkpoint-6 cannot be resumed from: "
                            f"{checkpoints / 'checkpoint-6' / damaged}: ") and
               m.endswith(f"; moved it to {moved}") for m in messages), messages
    assert f"test.toml: stages.{kind}: resuming from the older checkpoint-3 instead" in messages
    steps_logged = [r["step"] for r in records(ctx) if "loss" in r]
    assert steps_logged == sorted(set(steps_logged))  # no step twice


# ------------------------------------------------------------------------------ unit level


def fake_checkpoint(folder: Path, step: int, intact: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if intact:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_with_no_intact_checkpoint_the_error_says_how_to_go_on(tmp_path):
    folder = tmp_path / "checkpoints"
    bad = fake_checkpoint(folder, 4)
    (bad / "optimizer.pt").write_bytes(b"PK\x03\x04 cut short")
    log = logging.getLogger("test")
    with pytest.raises(UserError) as e:
        find_checkpoint(folder, "r.toml: stages.sft", log)
    assert str(e.value) == (
        f"r.toml: stages.sft: checkpoint-4 cannot be resumed from ({bad / 'optimizer.pt'}: "
        f"damaged or truncated (14 bytes)) and no older intact checkpoint exists; it was moved "
        f"to {tmp_path / SET_ASIDE}. Run the same command again to start this stage from its "
        "beginning"
    )
    assert (tmp_path / SET_ASIDE / "checkpoint-4" / "optimizer.pt").exists()
    assert find_checkpoint(folder, "r.toml: stages.sft", log) is None  # the way on works


def test_incomplete_checkpoints_are_set_aside_and_metrics_trimmed(tmp_path):
    folder = tmp_path / "checkpoints"
    fake_checkpoint(folder, 2)
    fake_checkpoint(folder, 4, intact=False)  # killed while saving
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4))
                       + '{"step": 5, "lo')
    resume = prepare_resume(folder, metrics, "r.toml: stages.sft", logging.getLogger("test"))
    assert resume.checkpoint == folder / "checkpoint-2" and resume.step == 2
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2]
    assert (tmp_path / SET_ASIDE / "checkpoint-4").is_dir()
    assert trim_metrics(metrics, None) == 2 and metrics.read_text() == ""
