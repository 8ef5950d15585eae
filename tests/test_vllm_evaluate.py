"""`rlhfx eval` and the evaluate stage answering with vLLM, on two tiny LLaMAs.

Skipped unless vLLM imports (its own environment, as tests/test_vllm_engine.py). A module of
its own: that module's engine is closed before this one starts its own.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from test_vllm_engine import PROMPTS, tiny_llama  # noqa: E402

from rlhfx.rollouts import RolloutSettings  # noqa: E402


def test_two_models_of_one_architecture_share_one_engine(tmp_path, monkeypatch):
    from rlhfx.models import load_tokenizer
    from rlhfx.plugins.evaluate.run import EvalSettings, evaluate
    from rlhfx.plugins.rewards.rules import LengthReward
    from rlhfx.plugins.rollout_engines.vllm import VLLMEngine

    tok = load_tokenizer("builtin:tiny-gpt-neo")
    first = tiny_llama(len(tok))
    second = tiny_llama(len(tok))
    with torch.no_grad():
        for p in second.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # the same architecture, other answers
    sources = []
    for name, model in (("first", first), ("second", second)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        sources.append(str(tmp_path / name))
    starts: list[int] = []
    real_start = VLLMEngine.start

    def counted(self, *args, **kwargs):
        starts.append(1)
        real_start(self, *args, **kwargs)

    monkeypatch.setattr(VLLMEngine, "start", counted)
    judge = LengthReward(LengthReward.Config(unit="chars"))
    answers = {}
    VLLM_OPTIONS = {"vllm": {"dtype": "float32", "kv_cache_gib": 1, "max_model_len": 256}}
    for engine in ("vllm", "hf"):
        settings = EvalSettings(
            max_new_tokens=8, temperature=0, batch_size=8, work_dir=str(tmp_path / engine),
            rollouts=RolloutSettings(engine=engine, **VLLM_OPTIONS.get(engine, {})),
        )
        result = evaluate(sources, ["first", "second"], PROMPTS, judge, settings,
                          against_first=True)
        assert result is not None
        answers[engine] = {label: [row["answers"][label]["raw"] for row in result["rows"]]
                           for label in ("first", "second")}
    assert starts == [1]  # one engine; the second model's weights were loaded into it
    assert answers["vllm"]["second"] != answers["vllm"]["first"]
    for label in ("first", "second"):  # float32 both; kernels differ: allow one near-tie
        same = sum(a == b for a, b in zip(answers["vllm"][label], answers["hf"][label],
                                          strict=True))
        assert same >= 2, (label, answers)
