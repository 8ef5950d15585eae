"""The alignment loop's metric schema: one record per iteration in `metrics.jsonl`.

The loop writes these names for every algorithm and the report reads only them (plus the
algorithm's own metrics, which carry the algorithm's name as a prefix: `ppo/loss/value`).
docs/metrics.md lists the same table; tests/test_docs.py keeps the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlhfx.components import Sample
from rlhfx.metrics import distinct_n, mean_std, rate

#: Written in `alignment.json` beside the metrics: the report refuses other versions.
SCHEMA_VERSION = 2

#: name -> (meaning, unit). Per iteration unless the meaning says otherwise.
METRICS: dict[str, tuple[str, str]] = {
    "step": ("the iteration the record belongs to (0: the initial policy's eval)", "count"),
    "iteration": ("the same as step, for readers of the file", "count"),
    "time": ("when the record was written (Unix time)", "s"),
    "num_prompts": ("prompts sampled this iteration, all processes", "count"),
    "num_samples": ("responses sampled this iteration (prompts x k)", "count"),
    "num_trained": ("samples the algorithm's update used (RAFT: selected)", "count"),
    "reward_mean": ("mean reward of the scored samples (discarded ones have none)", "reward"),
    "reward_std": ("population standard deviation of those rewards", "reward"),
    "reward_min": ("lowest reward of the scored samples", "reward"),
    "reward_max": ("highest reward of the scored samples", "reward"),
    "trained_reward_mean": ("mean reward of the samples the update used", "reward"),
    "discarded_rate": ("share of samples a cleaner discarded (or a non-finite reward dropped)",
                       "fraction"),
    "changed_rate": ("share of samples a cleaner reported as changed", "fraction"),
    "edited_rate": ("share of kept samples changed beyond surrounding whitespace", "fraction"),
    "cleaned_rate": ("share discarded or edited: what the cleaner-rate guard watches",
                     "fraction"),
    "nonfinite_rewards": ("samples whose reward was NaN or infinite (dropped)", "count"),
    "nonfinite_skipped_steps": ("optimizer steps left out for a NaN or infinite gradient norm "
                                "(on_nonfinite = \"skip\")", "count"),
    "reward_length_slope": ("the reward's least-squares trend per answer token, taken out of "
                            "the samples' rewards (length_control = true)", "reward/token"),
    "distinct_1": ("unique words / all words over the cleaned samples", "fraction"),
    "distinct_2": ("unique word pairs / all word pairs (falls when a policy repeats itself)",
                   "fraction"),
    "response_tokens_mean": ("mean sampled response length, cut to the cleaned text",
                             "tokens"),
    "finished_rate": ("share of responses that ended by themselves (EOS or a stop string)",
                      "fraction"),
    "train_loss": ("the update's training loss (algorithm-defined)", "loss"),
    "learning_rate": ("the optimiser's learning rate at the end of the update", "1"),
    "kl_mean": ("mean KL to the reference per response, summed over its tokens (algorithms "
                "with a reference)", "nats"),
    "eval_reward_mean": ("mean reward of the eval prompts' answers (low temperature)",
                         "reward"),
    "eval_reward_std": ("population standard deviation of the eval rewards", "reward"),
    "eval_discarded_rate": ("share of eval answers a cleaner discarded", "fraction"),
    "eval_distinct_2": ("distinct-2 of the eval answers", "fraction"),
    "seconds_generate": ("generating the samples (slowest process)", "s"),
    "seconds_score": ("cleaning and scoring them", "s"),
    "seconds_update": ("the algorithm's update", "s"),
    "seconds_eval": ("the held-out eval, when it ran", "s"),
    "seconds_iteration": ("the whole iteration, checkpoint excluded", "s"),
    "warnings": ("guard warnings raised this iteration (list of strings)", "text"),
    "episode_turns_mean": ("runs with an environment: mean model turns per episode", "count"),
    "episode_env_reward_mean": ("runs with an environment: mean of the rewards the environment "
                                "gave an episode (in reward_mean too)", "reward"),
    "episode_done_rate": ("runs with an environment: share of episodes the environment ended "
                          "(not a limit)", "fraction"),
    "episode_max_tokens_rate": ("runs with an environment: share of episodes cut by "
                                "max_episode_tokens", "fraction"),
    "tool_calls": ("runs with an environment: tool calls in this iteration's episodes",
                   "count"),
    "tool_errors": ("tool calls that failed (raised, timed out, unknown tool, unreadable call, "
                    "garbage result); the model read an error message", "count"),
    "tool_timeouts": ("tool calls stopped by tool_timeout (in tool_errors too)", "count"),
}


def algorithm_metric_name(algorithm: str, key: str) -> str:
    """A key an algorithm returned, as written: schema names as they are, others prefixed."""
    if key in METRICS or key.startswith(f"{algorithm}/"):
        return key
    return f"{algorithm}/{key}"


def _edited(sample: Sample) -> bool:
    return sample.changed and sample.response.strip() != sample.raw_response.strip()


def sample_metrics(samples: Sequence[Sample]) -> dict[str, Any]:
    """The schema's sample figures of one iteration (every process's samples)."""
    mean, std = mean_std(s.reward for s in samples)
    rewards = [s.reward for s in samples if s.reward is not None]
    trained_mean, _ = mean_std(s.reward for s in samples if s.trained)
    responses = [s.response for s in samples]
    lengths = [len(s.response_ids) for s in samples]
    return {
        "num_samples": len(samples),
        "num_trained": sum(1 for s in samples if s.trained),
        "reward_mean": mean,
        "reward_std": std,
        "reward_min": min(rewards) if rewards else None,
        "reward_max": max(rewards) if rewards else None,
        "trained_reward_mean": trained_mean,
        "discarded_rate": rate(s.discarded for s in samples),
        "changed_rate": rate(s.changed for s in samples),
        "edited_rate": rate(not s.discarded and _edited(s) for s in samples),
        "cleaned_rate": rate(s.discarded or _edited(s) for s in samples),
        "nonfinite_rewards": sum(1 for s in samples if s.extra.get("nonfinite_reward")),
        "distinct_1": distinct_n(responses, 1),
        "distinct_2": distinct_n(responses, 2),
        "response_tokens_mean": sum(lengths) / len(lengths) if lengths else 0.0,
        "finished_rate": rate(s.finished for s in samples),
    }


def clean_record(record: Mapping[str, Any], digits: int = 8) -> dict[str, Any]:
    """Floats rounded for a readable file; NaN and infinities written as None (valid JSON)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, float):
            value = round(value, digits) if math.isfinite(value) else None
        out[key] = value
    return out
