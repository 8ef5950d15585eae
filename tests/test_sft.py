"""The sft stage on a tiny GPT-Neo: full and LoRA training, merge-lora, resuming mid-stage."""

from __future__ import annotations

import json

import pytest
from fixtures.stages import make_ctx, run_stage
from fixtures.synthetic import corpus, make_rows
from fixtures.tiny import save_tiny_lm

from rlhfx.files import write_jsonl
from rlhfx.plugins.sft import SFTStage

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    rows = make_rows(160, seed=7)
    texts = [{"text": t} for t in corpus(rows)[1::2]]  # the ###-marker dialogues
    data = tmp / "sft.jsonl"
    write_jsonl(data, texts)
    base = save_tiny_lm(tmp / "base", corpus(rows), seed=0)
    return tmp, data, base


OPTIONS = dict(batch_size=8, max_length=96, logging_steps=2, save_steps=3)


def losses(ctx):
    rows = [json.loads(x) for x in ctx.metrics_file.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_full_sft_lowers_the_loss_and_saves_a_model(setup):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp, data, base = setup
    ctx = make_ctx(tmp / "full", "sft")
    out = run_stage(SFTStage, ctx, model=str(base), data=str(data), learning_rate=3e-3,
                    max_steps=12, eval_split_percentage=10, **OPTIONS)
    assert out == {"model": str(ctx.stage_dir / "model")}
    curve = losses(ctx)
    assert len(curve) == 6 and curve[-1] < curve[0] - 0.5
    rows = [json.loads(x) for x in ctx.metrics_file.read_text().splitlines()]
    assert any("eval_loss" in r for r in rows)
    model = AutoModelForCausalLM.from_pretrained(out["model"])
    tok = AutoTokenizer.from_pretrained(out["model"])
    ids = model.generate(**tok("###Human: How can I cook rice? ###Assistant:",
                               return_tensors="pt"), max_new_tokens=5, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    assert ids.shape[1] > 5
    assert not (ctx.stage_dir / "checkpoints").exists()


def test_prompt_completion_rows_train_on_the_completion_only(setup):
    """Prompts of random words cannot be learnt; a fixed completion can. Only with the prompt
    out of the loss does the loss fall far."""
    import random

    tmp, _, base = setup
    words = sorted({w for text in corpus(make_rows(40, seed=3)) for w in text.split()})
    rng = random.Random(0)
    rows = [{"prompt": " ".join(rng.choices(words, k=24)), "completion": " Thanks for asking."}
            for _ in range(64)]
    data = tmp / "completions.jsonl"
    write_jsonl(data, rows)
    ctx = make_ctx(tmp / "completions", "sft")
    run_stage(SFTStage, ctx, model=str(base), data=str(data), learning_rate=1e-2,
              max_steps=12, **OPTIONS)
    curve = losses(ctx)
    assert curve[-1] < 2.5 < curve[0], curve  # measured: 5.5 -> 1.5
    # the same rows as plain texts: the random prompt words keep the loss high
    write_jsonl(data, [{"text": r["prompt"] + r["completion"]} for r in rows])
    ctx = make_ctx(tmp / "texts", "sft")
    run_stage(SFTStage, ctx, model=str(base), data=str(data), learning_rate=1e-2,
              max_steps=12, **OPTIONS)
    assert losses(ctx)[-1] > 3.5, losses(ctx)  # measured: 5.9 -> 4.4


def test_a_bad_prompt_completion_row_names_its_file_and_line(tmp_path):
    from rlhfx import UserError
    from rlhfx.data.sets import read_prompt_completions

    data = tmp_path / "pc.jsonl"
    write_jsonl(data, [{"prompt": "Hi", "completion": " there"}, {"prompt": "Hi", "completion": 3},
                       {"prompt": "Hi"}, {"prompt": "Hi", "completion": " "}])
    with pytest.raises(UserError, match=r"pc.jsonl: line 2: needs prompt and completion "
                                        r"strings \(fields: prompt, completion\)"):
        read_prompt_completions(str(data))
    # asked to, the bad rows are skipped and counted; the good one stays
    assert read_prompt_completions(str(data), skip_bad_rows=True) == [("Hi", " there")]
    write_jsonl(data, [{"prompt": "Hi", "completion": " "}])
    with pytest.raises(UserError, match=r"no usable prompt-completion rows.*empty completion"):
        read_prompt_completions(str(data))


def test_lora_sft_merges_and_merge_lora_command_agrees(setup, rlhfx_cli):
    from safetensors.torch import load_file

    tmp, data, base = setup
    ctx = make_ctx(tmp / "lora", "sft")
    out = run_stage(SFTStage, ctx, model=str(base), data=str(data), method="lora",
                    lora={"r": 8, "alpha": 16, "dropout": 0.0}, learning_rate=1e-2,
                    max_steps=6, **OPTIONS)
    assert set(out) == {"model", "adapter"}
    merged = load_file(f"{out['model']}/model.safetensors")
    original = load_file(f"{base}/model.safetensors")
    assert not any("lora" in k for k in merged)  # a plain model, adapter folded in
    changed = [k for k in original if not torch.equal(original[k], merged[k])]
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)

    result = rlhfx_cli("merge-lora", out["adapter"], "--base", str(base),
                       "--out", str(tmp / "merged_by_cli"))
    assert result.exit_code == 0, result.output
    again = load_file(str(tmp / "merged_by_cli" / "model.safetensors"))
    for key, value in merged.items():
        assert torch.allclose(value, again[key], atol=1e-6), key

    bad = rlhfx_cli("merge-lora", str(tmp), "--out", str(tmp / "x"))
    assert bad.exit_code == 2 and "no adapter_config.json" in bad.output


def test_interrupted_sft_resumes_from_its_last_checkpoint(setup, monkeypatch):
    """A crash at step 5 loses only the steps after the checkpoint at step 3."""
    from transformers import TrainerCallback

    tmp, data, base = setup
    ctx = make_ctx(tmp / "resume", "sft")
    options = dict(model=str(base), data=str(data), learning_rate=3e-3, max_steps=8, **OPTIONS)
    steps: list[int] = []
    crash_at = [5]

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)
            if state.global_step == crash_at[0]:
                raise KeyboardInterrupt  # what Ctrl-C does; kill -9 is tested on the pipeline

    from rlhfx import trainer_stage

    original = trainer_stage.run_trainer

    def run_with_crash(trainer, ctx, *rest):
        trainer.add_callback(Crash())
        original(trainer, ctx, *rest)

    monkeypatch.setattr(trainer_stage, "run_trainer", run_with_crash)
    with pytest.raises(KeyboardInterrupt):
        run_stage(SFTStage, ctx, **options)
    assert steps == [1, 2, 3, 4, 5]
    assert (ctx.stage_dir / "checkpoints" / "checkpoint-3").is_dir()
    assert not (ctx.stage_dir / "model").exists()

    steps.clear()
    crash_at[0] = -1
    out = run_stage(SFTStage, ctx, **options)
    assert steps == [4, 5, 6, 7, 8]  # picked up after checkpoint-3, not from the start
    assert (ctx.stage_dir / "model" / "rlhfx_done.json").exists()
    assert out["model"] == str(ctx.stage_dir / "model")
