"""RAFT's pieces without a training loop: config checks, prompt order, training labels, guards,
prompt files, checkpoints, and the recipe as `rlhfx validate` sees it."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from rlhfx.alignment import guards
from rlhfx.alignment.checkpoints import Checkpoints, LoopState
from rlhfx.errors import UserError
from rlhfx.plugins.raft import Raft
from rlhfx.plugins.raft.config import RaftConfig
from rlhfx.plugins.raft.train import build_examples, completion_text, episode_examples

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# ------------------------------------------------------------------------------ config
def test_defaults_follow_lmflow():
    c = RaftConfig()
    assert (c.batch_size, c.k, c.iterations) == (1024, 5, 20)
    assert (c.temperature, c.top_k, c.top_p) == (0.85, 0, 1.0)
    assert (c.min_new_tokens, c.max_new_tokens, c.learning_rate) == (64, 128, 2e-5)
    assert c.ranker.name == "local" and not c.train_on_prompt and c.lora is None


def test_top_reward_percentage_sets_k_and_must_agree():
    assert RaftConfig(top_reward_percentage=0.125).k == 8
    with pytest.raises(ValidationError, match="disagree"):
        RaftConfig(k=4, top_reward_percentage=0.125)
    with pytest.raises(ValidationError, match="above max_new_tokens"):
        RaftConfig(min_new_tokens=10, max_new_tokens=5)


def test_fingerprint_ignores_iterations_only():
    base = RaftConfig()
    assert base.fingerprint() == RaftConfig(iterations=40).fingerprint()
    assert base.fingerprint() != RaftConfig(ranker={"name": "top", "fraction": 0.5}).fingerprint()
    assert base.fingerprint() != RaftConfig(learning_rate=1e-4).fingerprint()
    assert base.fingerprint() != RaftConfig(ranker="top").fingerprint()


def test_top_ranker_keeps_one_in_k(rlhfx_plugins):
    from rlhfx import Sample
    from rlhfx.config import RankerRef

    system = rlhfx_plugins()
    ref = RankerRef(name="top")
    entry = system.get("ranker", "top")
    ref.bind(entry, entry.cls.Config())
    algo = Raft(RaftConfig(k=4, batch_size=2, ranker=ref))
    # the ranker ranks single samples across prompts: b*k prompts, one sample each
    assert (algo.samples_per_prompt(), algo.prompts_per_iteration()) == (1, 8)
    samples = [Sample(i, "p", "r", reward=float(i)) for i in range(8)]
    assert algo.ranker.select(samples) == [6, 7]  # b*k = 8 samples, the best b = 2
    local = Raft(RaftConfig(k=4, batch_size=2))
    assert (local.samples_per_prompt(), local.prompts_per_iteration()) == (4, 2)


def test_recipe_validates_and_bad_keys_name_the_key(rlhfx_cli, tmp_path):
    result = rlhfx_cli("validate", str(RECIPES / "tiny_raft.toml"))
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.toml"
    text = (RECIPES / "tiny_raft.toml").read_text().replace("k = 8 ", "k = 0 ")
    bad.write_text(text.replace("epochs = 2", "epochz = 2"))
    result = rlhfx_cli("validate", str(bad))
    assert result.exit_code == 2
    assert "stages.align.algorithm.k" in result.output
    assert "stages.align.algorithm.epochz: unknown key" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------ prompt order
# ------------------------------------------------------------------------------ training data
class _Tok:
    """A character tokenizer: enough to check labels by hand."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(ch) for ch in t] for t in texts]}


def test_prompt_tokens_are_left_out_of_the_loss():
    c = RaftConfig()
    ex = build_examples(_Tok(), [("ab", " c"), ("x", " yz")], c, finished=[True, False])
    assert ex[0] == {"input_ids": [97, 98, 32, 99, 0], "labels": [-100, -100, 32, 99, 0]}
    # cut by the length limit: no EOS taught
    assert ex[1] == {"input_ids": [120, 32, 121, 122], "labels": [-100, 32, 121, 122]}
    both = build_examples(_Tok(), [("ab", "c")], RaftConfig(train_on_prompt=True))
    assert both[0]["labels"] == both[0]["input_ids"] == [97, 98, 99, 0]
    no_eos = build_examples(_Tok(), [("ab", "c")], RaftConfig(append_eos=False))
    assert no_eos[0]["input_ids"] == [97, 98, 99]


def test_episode_tokens_of_the_environment_are_context_only():
    from rlhfx import Sample

    # prompt 5 6; the model says 7 8 (8: its end of turn), the tool answers 20 21, the model
    # says 9 and is cut by the token limit
    episode = Sample(0, "p", "r", prompt_ids=[5, 6], response_ids=[7, 8, 20, 21, 9],
                     action_mask=[1, 1, 0, 0, 1])
    (ex,) = episode_examples([episode], train_on_prompt=False)
    assert ex == {"input_ids": [5, 6, 7, 8, 20, 21, 9],
                  "labels": [-100, -100, 7, 8, -100, -100, 9]}  # as sampled: no EOS added
    (ex,) = episode_examples([episode], train_on_prompt=True)
    assert ex["labels"] == [5, 6, 7, 8, -100, -100, 9]  # the tool's tokens never
    single = Sample(0, "p", "r", prompt_ids=[5], response_ids=[7, 8])  # no mask: all the model's
    assert episode_examples([single], False)[0]["labels"] == [-100, 7, 8]


def test_completion_keeps_the_generated_leading_whitespace():
    assert completion_text("  Hello ###Human: hi", "Hello", None) == "  Hello"
    assert completion_text("Hello", "Hello", None) == "Hello"
    assert completion_text(" Hello", "Hello", "\n") == "\nHello"


# ------------------------------------------------------------------------------ guards
def test_guards_warn_on_collapsing_diversity_and_climbing_cleaner_rate():
    first = {"distinct_2": 0.40, "cleaned_rate": 0.10}
    c = RaftConfig()
    assert guards.check(first, {"distinct_2": 0.30, "cleaned_rate": 0.25}, c) == []
    msgs = guards.check(first, {"distinct_2": 0.22, "cleaned_rate": 0.5}, c)
    assert len(msgs) == 2 and "distinct-2 fell to 0.220" in msgs[0] and "50%" in msgs[1]
    off = RaftConfig(distinct2_warn_fraction=0.0)
    assert guards.check(first, {"distinct_2": 0.1, "cleaned_rate": 0.1}, off) == []
    assert guards.check(None, {"distinct_2": 0.0}, c) == []  # nothing to compare with


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoints_commit_atomically_and_prune(tmp_path):
    import logging

    torch = pytest.importorskip("torch")

    log = logging.getLogger("test_checkpoints")
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=2)
    assert ckpts.find_intact(log) == (None, None)
    for it in (1, 2, 3):
        ckpts.save(LoopState(iteration=it, first_record={"distinct_2": 0.5}),
                   {"policy": {"w": torch.full((2,), float(it))}})
    path, problem = ckpts.find_intact(log)
    state, _ = ckpts.load(path)
    assert path.name == "iter-0003" and state.iteration == 3 and problem is None
    assert state.first_record == {"distinct_2": 0.5}
    assert ckpts.load_algorithm_state(path)["policy"]["w"].tolist() == [3.0, 3.0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("iter-*")) == [
        "iter-0002", "iter-0003",
    ]
    # a kill in the middle of a save leaves a hidden temp dir: ignored, then cleaned up
    (tmp_path / "checkpoints" / ".iter-0004.tmp").mkdir()
    assert ckpts.find_intact(log)[0] == path
    ckpts.clean_partial()
    assert not (tmp_path / "checkpoints" / ".iter-0004.tmp").exists()
    # a truncated weights file is named, with the way out
    (path / "algorithm.safetensors").write_bytes(b"\x80\x02junk")
    with pytest.raises(UserError, match=r"cannot be read.*algorithm\.safetensors.*--restart-from"):
        ckpts.load_algorithm_state(path)


def test_unknown_builtin_model_is_a_user_error():
    from rlhfx.models import load_tokenizer

    with pytest.raises(UserError, match="known: builtin:tiny-gpt-neo"):
        load_tokenizer("builtin:huge-model")


def test_a_ranker_cannot_make_raft_train_on_discarded_samples(caplog):
    import logging

    from rlhfx import Sample

    class Careless:
        picks: ClassVar[list[int]] = [3, 0, 1]  # 1 is discarded

        def select(self, samples):
            return self.picks

    loop = Raft(RaftConfig())
    loop.ranker = Careless()  # type: ignore[assignment]
    loop.run = type("Run", (), {"log": logging.getLogger("rlhfx.test"),
                                "where": "r.toml: stages.align.algorithm"})()
    samples = [Sample(i, "p", "r", discarded=i == 1, reward=None if i == 1 else float(i))
               for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="rlhfx.test"):
        assert loop._select(samples) == [0, 3]
        assert loop._select(samples) == [0, 3]
    warnings = [r for r in caplog.records if "discarded" in r.getMessage()]
    assert len(warnings) == 1 and "1 discarded" in warnings[0].getMessage()
    Careless.picks = [0, 7]  # 7 does not exist: the ranker is named, with the recipe key
    with pytest.raises(UserError, match=r"r\.toml: stages\.align\.algorithm\.ranker: .*Careless"):
        loop._select(samples)


def test_pad_examples_pads_as_trls_collator_did():
    import torch

    from rlhfx.plugins.raft.train import pad_examples

    # TRL's collator (an internal module of TRL's) was what RAFT used before: the same batches.
    trl_sft = pytest.importorskip("trl.trainer.sft_trainer")

    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                {"input_ids": [8, 9, 10, 11, 12], "labels": [-100, -100, 10, 11, 12]},
                {"input_ids": [13], "labels": [13]}]
    ours = pad_examples(examples, pad_id=0)
    assert ours["labels"].tolist()[2] == [13, -100, -100, -100, -100]
    theirs = trl_sft.DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(ours[key], theirs[key]), key


def test_trimmed_logits_train_exactly_as_whole_ones():
    """RAFT's batches make logits only from the column before the first label on: the loss and
    every gradient match the untrimmed batch's; a label in column 0 leaves nothing to cut."""
    import torch

    from rlhfx.models import accepts_logits_to_keep
    from rlhfx.plugins.raft.train import pad_examples
    from rlhfx.tiny import tiny_causal_lm

    model = tiny_causal_lm("builtin:tiny-gpt-neo").train()
    for module in model.modules():  # dropout off: both passes must see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    assert accepts_logits_to_keep(model)
    examples = [{"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100] * 4 + [9, 10]},
                {"input_ids": [11, 12, 13, 14], "labels": [-100] * 3 + [14]},
                {"input_ids": [15, 16, 17, 18, 19, 20, 21, 22],
                 "labels": [-100] * 5 + [20, 21, 22]}]
    whole = pad_examples(examples, pad_id=0)
    cut = pad_examples(examples, pad_id=0, trim_logits=True)
    assert "logits_to_keep" not in whole
    assert cut["logits_to_keep"] == 8 - 3 + 1  # from the column before the first label (3)
    assert cut["labels"].shape == (3, 6) and torch.equal(cut["labels"], whole["labels"][:, 2:])

    def loss_and_grads(batch):
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        assert out.logits.shape[1] == batch.get("logits_to_keep", 8)
        return out.loss.detach(), [p.grad.clone() for p in model.parameters()]

    want, want_grads = loss_and_grads(whole)
    got, got_grads = loss_and_grads(cut)
    assert torch.allclose(got, want, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(g, w, atol=1e-6)

    on_prompt = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}]
    assert "logits_to_keep" not in pad_examples(on_prompt, pad_id=0, trim_logits=True)
    nothing = [{"input_ids": [5, 6, 7], "labels": [-100] * 3}]
    assert "logits_to_keep" not in pad_examples(nothing, pad_id=0, trim_logits=True)


def test_end_of_turn_weight_scales_only_the_eos_targets_loss():
    """Weight 1 is the model's own loss on a trimmed batch; weight w adds (w - 1) times each
    EOS target's cross-entropy to the sum before the same normalisation (worked by hand from
    the per-token losses); the Trainer's token count, when given, is the divisor."""
    import torch

    from rlhfx.plugins.raft.train import end_weighted_loss, pad_examples
    from rlhfx.tiny import tiny_causal_lm

    torch.manual_seed(0)
    model = tiny_causal_lm("builtin:tiny-gpt-neo").eval()
    eos = 3
    examples = [{"input_ids": [5, 6, 7, 8, 9, eos], "labels": [-100] * 4 + [9, eos]},
                {"input_ids": [11, 12, 13, 14], "labels": [-100] * 3 + [14]}]
    batch = pad_examples(examples, pad_id=eos, trim_logits=True)
    labels = batch.pop("labels")
    with torch.no_grad():
        outputs = model(**batch)
        own = model(**batch, labels=labels).loss
    assert float(end_weighted_loss(eos, 1.0)(outputs, labels)) == pytest.approx(float(own),
                                                                               rel=1e-5)
    # per-token losses of the three targets (9, EOS, 14), by hand from the log-softmax
    logp = torch.log_softmax(outputs.logits.float(), dim=-1)
    keep = batch["logits_to_keep"]  # columns 1..5 of the 6-wide batch
    col = 6 - keep
    nine = -logp[0, 4 - 1 - col, 9]
    end = -logp[0, 5 - 1 - col, eos]
    fourteen = -logp[1, 3 - 1 - col, 14]
    assert float(own) == pytest.approx(float((nine + end + fourteen) / 3), rel=1e-5)
    got = end_weighted_loss(eos, 4.0)(outputs, labels)
    assert float(got) == pytest.approx(float((nine + 4 * end + fourteen) / 3), rel=1e-5)
    got = end_weighted_loss(eos, 4.0)(outputs, labels, num_items_in_batch=torch.tensor(6))
    assert float(got) == pytest.approx(float((nine + 4 * end + fourteen) / 6), rel=1e-5)
    # the padding (EOS ids as input, -100 as labels) never counts as an end-of-turn target
    assert int((labels == eos).sum()) == 1
