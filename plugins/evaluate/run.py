"""Answering a prompt set with each model, judging the answers, comparing the models.

Under `torchrun` each process answers its share of the prompts (round robin) with every model
and scores them (the judge's `score` is called on every process, as during a run), then the
main process gathers the rows, computes the statistics and writes the files.

The answers come from a rollout engine (`rollouts = { engine = "vllm" }` as on the align
stage; `hf` by default). A vLLM engine is started once and given each later model's weights
when that model has the first one's architecture and tokenizer (seconds, not a restart).
"""

from __future__ import annotations

import gc
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfx import ResponseCleaner, RewardSource, distributed
from rlhfx.rollouts import RolloutEngine, RolloutSettings

from . import stats


@dataclass
class EvalSettings:
    max_new_tokens: int = 64
    temperature: float = 0.1  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0
    apply_chat_template: bool = False
    device: str = "cpu"
    resamples: int = 2000
    level: float = 0.95
    #: Which engine answers (and vLLM's settings); `work_dir` holds what it writes (vLLM:
    #: the weights it loads; unset: a temporary folder).
    rollouts: RolloutSettings = field(default_factory=RolloutSettings)
    work_dir: str | None = None
    #: Play each prompt as an episode with this environment (`--environment`), and the prompt
    #: rows' other fields (aligned with the prompts) for its `reset` and the judge.
    environment: Any = None
    fields: list[dict[str, Any]] = field(default_factory=list)


def default_cleaners(tokenizer: Any) -> list[ResponseCleaner]:
    """The align stage's default chain (stop_markers, strip, discard), with the model's own
    end-of-turn markers added to the stop markers when it has a chat template."""
    from rlhfx import CleanerRef
    from rlhfx.chat import answer_stop_markers

    return [
        CleanerRef(name="stop_markers", markers=answer_stop_markers(tokenizer)).build(),
        CleanerRef(name="strip").build(),
        CleanerRef(name="discard").build(),
    ]


class Engines:
    """The engine answering for the current model; reused for the next one when it can be."""

    def __init__(self, settings: EvalSettings, work_dir: Path):
        self.settings, self.work_dir = settings, work_dir
        self.engine: RolloutEngine | None = None

    def for_model(self, model: Any, tokenizer: Any) -> RolloutEngine:
        from rlhfx.rollouts import make_engine

        if self.engine is not None and self.engine.can_take(model, tokenizer):
            self.engine.sync_weights(model)
            return self.engine
        self.close()
        self.engine = make_engine(
            self.settings.rollouts, model, tokenizer, batch_size=self.settings.batch_size,
            device=self.settings.device, work_dir=self.work_dir,
        )
        return self.engine

    def release(self) -> None:
        """Done with the current model: an engine that samples from the model object itself
        goes with it (the next model is not loaded beside it); one with its own copy of the
        weights stays for the next model."""
        if self.engine is not None and not self.engine.owns_weights:
            self.close()

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()


def answer_and_score(
    source: str, prompts: Sequence[str], indices: Sequence[int], judge: RewardSource,
    settings: EvalSettings, engines: Engines,
) -> list[dict[str, Any]]:
    """This process's rows for one model: prompt index, raw answer, cleaned answer, reward."""
    import torch

    from rlhfx.chat import chat_prompt, end_of_turn_token_ids, has_chat_template
    from rlhfx.components import Sample, frozen_statistics
    from rlhfx.loading import loading
    from rlhfx.models import load_causal_lm, load_tokenizer
    from rlhfx.rollouts import SamplingSettings
    from rlhfx.scoring import clean_and_score

    with loading(source):
        tokenizer = load_tokenizer(source)
        model = load_causal_lm(source, device=settings.device)
    mine = [prompts[i] for i in indices]
    shown = mine
    if settings.apply_chat_template and has_chat_template(tokenizer):
        shown = [chat_prompt(tokenizer, p) for p in mine]
    cleaners = default_cleaners(tokenizer)
    sampling = SamplingSettings(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature if settings.temperature > 0 else 1.0,
        top_p=settings.top_p,
        do_sample=settings.temperature > 0,
    )
    engine = engines.for_model(model, tokenizer)
    if settings.environment is not None:
        samples = _episodes(engine, tokenizer, mine, indices, judge, cleaners, sampling,
                            settings)
        engines.release()
        del model, engine
        gc.collect()
        return [_row(indices[s.prompt_id], s) for s in samples]
    # Each process draws from its own stream (one seed everywhere would repeat the same draws
    # in every shard); greedy answers (temperature 0) do not depend on it at all.
    torch.manual_seed(settings.seed + distributed.rank())
    rollouts = engine.generate(
        shown, sampling, num_samples=1,
        stop_strings=list(getattr(cleaners[0].config, "markers", [])),
        rng=random.Random(settings.seed),
    )
    samples = [
        Sample(prompt_id=r.prompt_id, prompt=mine[r.prompt_id], raw_response=r.text)
        for r in rollouts
    ]
    ends = end_of_turn_token_ids(tokenizer)
    stops = list(getattr(cleaners[0].config, "markers", []))
    finished = [ended_by_itself(r, settings.max_new_tokens, ends, stops) for r in rollouts]
    with frozen_statistics(judge):
        clean_and_score(samples, cleaners, judge)
    engines.release()
    del model, engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next model gets the memory back
    return [
        {
            "index": indices[s.prompt_id],
            "raw": s.raw_response,
            "response": s.response,
            "reward": s.reward,
            "discarded": s.discard_reason,
            "finished": done,
        }
        for s, done in zip(samples, finished, strict=True)
    ]


def ended_by_itself(
    rollout: Any, limit: int, end_ids: Sequence[int], stop_strings: Sequence[str]
) -> bool:
    """Whether an answer ended on its own (EOS, end of turn or a stop string) rather than at
    the length limit: shorter than the limit, or its last token ends a turn, or a stop
    string is in its text."""
    ids = rollout.response_ids
    if len(ids) < limit or (ids and ids[-1] in end_ids):
        return True
    return any(stop in rollout.text for stop in stop_strings)


def evaluate(
    sources: Sequence[str], labels: Sequence[str], prompts: Sequence[str], judge: RewardSource,
    settings: EvalSettings, against_first: bool = False,
) -> dict[str, Any] | None:
    """Rows and statistics on the main process; None on the others.

    Comparisons: every earlier model over every later one, or, with `against_first`, each
    later model over the first (a baseline: "after" over "before")."""
    from rlhfx.rollouts import check_engine

    check_engine(settings.rollouts)
    indices = distributed.shard(list(range(len(prompts))))
    per_model: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="rlhfx-eval-") as scratch:
        engines = Engines(settings, Path(settings.work_dir or scratch))
        try:
            for source, label in zip(sources, labels, strict=True):
                mine = answer_and_score(source, prompts, indices, judge, settings, engines)
                gathered = [row for part in distributed.gather_objects(mine) for row in part]
                per_model[label] = sorted(gathered, key=lambda r: r["index"])
        finally:
            engines.close()
    if not distributed.is_main():
        return None
    rows = [
        {"prompt": prompt, "answers": {label: _answer(per_model[label][i]) for label in labels}}
        for i, prompt in enumerate(prompts)
    ]
    models = []
    for source, label in zip(sources, labels, strict=True):
        rewards = [r["reward"] for r in per_model[label]]
        scored = [float(x) for x in rewards if x is not None]
        finished = sum(1 for r in per_model[label] if r.get("finished"))
        models.append({
            "label": label,
            "source": source,
            "mean_reward": sum(scored) / len(scored) if scored else None,
            "scored": len(scored),
            "discarded": len(rewards) - len(scored),
            # answers that ended by themselves, not at max_new_tokens
            "finished": finished,
            "finished_rate": finished / len(rewards) if rewards else None,
            "mean_length": (sum(answer_length(r) for r in per_model[label]) / len(rewards)
                            if rewards else None),
        })
    if against_first:
        pairs = [(b, labels[0]) for b in labels[1:]]
    else:
        pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    comparisons = [
        stats.compare(
            a, b, [r["reward"] for r in per_model[a]], [r["reward"] for r in per_model[b]],
            level=settings.level, resamples=settings.resamples, seed=settings.seed,
            lengths_a=[answer_length(r) for r in per_model[a]],
            lengths_b=[answer_length(r) for r in per_model[b]],
        ).as_dict()
        for a, b in pairs
    ]
    return {"num_prompts": len(prompts), "models": models, "comparisons": comparisons,
            "rows": rows}


def answer_length(row: dict[str, Any]) -> int:
    """Characters of the answer the judge read (the raw text where cleaning left none)."""
    return len(row.get("response") or row.get("raw") or "")


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("raw", "response", "reward", "discarded", "finished", "turns", "episode_end")
    return {k: row[k] for k in keys if k in row}


def _episodes(engine: Any, tokenizer: Any, mine: list[str], indices: Sequence[int],
              judge: RewardSource, cleaners: list[ResponseCleaner], sampling: Any,
              settings: EvalSettings) -> list[Any]:
    """This process's prompts played as episodes, judged with the environment's rewards."""
    import torch

    from rlhfx.components import frozen_statistics
    from rlhfx.episodes import add_environment_rewards, episode_sample, run_episodes
    from rlhfx.scoring import clean_and_score

    fields = [dict(settings.fields[i]) if settings.fields else {} for i in indices]
    torch.manual_seed(settings.seed + distributed.rank())
    episodes = run_episodes(engine, tokenizer, settings.environment, mine, fields, sampling,
                            rng=random.Random(settings.seed), seed=settings.seed,
                            prompt_keys=list(indices), where="--environment")
    samples = [episode_sample(e, e.prompt_index, fields[e.prompt_index], tokenizer)
               for e in episodes]
    with frozen_statistics(judge):
        clean_and_score(samples, cleaners, judge)
    add_environment_rewards(samples)
    return samples


def _row(index: int, s: Any) -> dict[str, Any]:
    return {"index": index, "raw": s.raw_response, "response": s.response, "reward": s.reward,
            "discarded": s.discard_reason, "finished": s.finished,
            "turns": s.extra.get("turns", []), "episode_end": s.extra.get("episode_end")}
