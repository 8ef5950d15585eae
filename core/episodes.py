"""Multi-turn episodes: the policy and an environment take turns until the episode ends.

For a batch of prompts x k samples, every live episode's next model turn is generated in one
batched call through the rollout engine (hf or vLLM alike), then the environment (or a tool)
answers each. An episode ends when the environment says done, after `max_turns` model turns,
or when `max_episode_tokens` is reached. Its tokens are the first prompt's ids, then every
later token in order: the model's as sampled (`action_mask` 1), the environment's as the chat
template renders them (`action_mask` 0: context only, never trained on).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rlhfx.components import Environment, EnvironmentConfig, EnvStep, Sample
from rlhfx.episode_text import TurnRenderer
from rlhfx.rollouts import RolloutEngine, SamplingSettings, encode_prompts
from rlhfx.tools import MalformedCall, call_tool, parse_tool_call

#: How an episode ended.
DONE, MAX_TURNS, MAX_TOKENS = "done", "max_turns", "max_tokens"


@dataclass
class Episode:
    prompt_index: int  # into the prompts given to `run_episodes`
    sample: int
    prompt: str  # as the model read it
    prompt_ids: list[int]
    state: Any
    response_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)
    #: the turn-by-turn record: {"role", "text"} and, for environment turns, "reward" and
    #: "tool" (how a tool call went)
    turns: list[dict[str, Any]] = field(default_factory=list)
    env_reward: float = 0.0
    end: str = ""
    finished: bool = False  # the last model turn ended by itself (EOS or a stop string)
    tools: Counter[str] = field(default_factory=Counter)

    @property
    def model_turns(self) -> int:
        return sum(1 for t in self.turns if t["role"] == "assistant")


def episode_seed(seed: int, prompt_index: int, sample: int) -> int:
    """The seed an episode's `reset` gets: fixed by the run's seed and the episode's place."""
    return random.Random(f"{seed}:{prompt_index}:{sample}").randrange(2**32)


def run_episodes(
    engine: RolloutEngine,
    tokenizer: Any,
    environment: Environment,
    prompts: Sequence[str],
    fields: Sequence[Mapping[str, Any]],
    sampling: SamplingSettings,
    *,
    num_samples: int = 1,
    stop_strings: Sequence[str] = (),
    rng: random.Random | None = None,
    seed: int = 0,
    prompt_keys: Sequence[int] | None = None,
    where: str = "environment",
    progress: Any = None,
    description: str = "episodes",
) -> list[Episode]:
    """`num_samples` episodes for each prompt, ordered prompt by prompt.

    `prompt_keys` identify the prompts for the episodes' seeds (default: their positions);
    `where` is the recipe key of the environment, for error messages.
    """
    from rlhfx.faults import call_plugin

    config = environment.config
    assert isinstance(config, EnvironmentConfig)
    rng = rng or random.Random(0)
    keys = list(prompt_keys) if prompt_keys is not None else list(range(len(prompts)))
    renderer = TurnRenderer(tokenizer)
    tools: list[Callable[..., Any]] = list(call_plugin(environment, where, environment.tools))
    shown = ([renderer.opening(p, tools) for p in prompts] if config.chat_template
             else list(prompts))
    opening_ids = encode_prompts(tokenizer, shown)
    episodes: list[Episode] = []
    for p, prompt in enumerate(shown):
        for j in range(num_samples):
            state = call_plugin(environment, where, environment.reset, prompts[p],
                                dict(fields[p]) if fields else {},
                                episode_seed(seed, keys[p], j))
            episodes.append(Episode(p, j, prompt, list(opening_ids[p]), state))

    live = list(episodes)
    for turn in range(config.max_turns):
        if not live:
            break
        if turn == 0:  # one prefill per prompt for its k samples
            rollouts = engine.generate(shown, sampling, num_samples=num_samples,
                                       stop_strings=stop_strings, rng=rng, progress=progress,
                                       description=f"{description}: turn 1",
                                       prompt_ids=opening_ids) if shown else []
        else:
            rollouts = engine.generate([e.prompt for e in live], sampling, num_samples=1,
                                       stop_strings=stop_strings, rng=rng, progress=progress,
                                       description=f"{description}: turn {turn + 1}",
                                       prompt_ids=[e.prompt_ids + e.response_ids for e in live])
        still = []
        for episode, rollout in zip(live, rollouts, strict=True):
            if _take_turn(episode, list(rollout.response_ids), turn, tokenizer, renderer,
                          environment, tools, stop_strings, where):
                still.append(episode)
        live = still

    for episode in episodes:
        final = call_plugin(environment, where, environment.final_reward, episode.state)
        if final is not None:
            episode.env_reward += _number(final, environment, where, "final_reward")
    return episodes


def _take_turn(
    episode: Episode, reply_ids: list[int], turn: int, tokenizer: Any, renderer: TurnRenderer,
    environment: Environment, tools: list[Callable[..., Any]], stop_strings: Sequence[str],
    where: str,
) -> bool:
    """Add one model turn and the environment's answer; True while the episode goes on."""
    config = environment.config
    assert isinstance(config, EnvironmentConfig)
    room = config.max_episode_tokens - len(episode.response_ids)
    cut = len(reply_ids) > room
    reply_ids = reply_ids[:room]
    text = tokenizer.decode(reply_ids, skip_special_tokens=True)
    episode.response_ids += reply_ids
    episode.action_mask += [1] * len(reply_ids)
    eos = tokenizer.eos_token_id
    episode.finished = not cut and bool(reply_ids) and (
        reply_ids[-1] == eos or any(s in text for s in stop_strings))
    episode.turns.append({"role": "assistant", "text": text})

    step = _answer(episode, text, environment, tools, config.tool_timeout, where)
    episode.env_reward += step.reward
    record: dict[str, Any] = {"role": step.role, "text": step.observation, "reward": step.reward}
    if episode.turns and "tool" in episode.turns[-1]:
        record["tool"] = episode.turns[-1].pop("tool")
    if step.observation or step.reward or "tool" in record or not step.done:
        episode.turns.append(record)  # an ending that says nothing is not a turn
    if step.done:
        episode.end = DONE
        return False
    if cut or turn + 1 >= config.max_turns:
        episode.end = MAX_TOKENS if cut else MAX_TURNS
        return False
    message = renderer.message_ids(step.role, step.observation, reply_ids)
    if len(episode.response_ids) + len(message) >= config.max_episode_tokens:
        episode.end = MAX_TOKENS  # no room left for another model turn
        return False
    episode.response_ids += message
    episode.action_mask += [0] * len(message)
    return True


def _answer(episode: Episode, text: str, environment: Environment,
            tools: list[Callable[..., Any]], timeout: float, where: str) -> EnvStep:
    """A tool's result when the reply calls one; otherwise the environment's `step`."""
    from rlhfx.faults import PluginFault, call_plugin, describe

    if tools:
        try:
            call = parse_tool_call(text)
        except MalformedCall as exc:
            return _tool_step(episode, f"error: tool call not understood: {exc}", "malformed")
        if call is not None:
            result = call_tool(tools, call, timeout)
            return _tool_step(episode, result.text, result.status)
    step = call_plugin(environment, where, environment.step, episode.state, text)
    if not isinstance(step, EnvStep):
        raise PluginFault(f"{where}: {describe(environment)}: step() returned "
                          f"{type(step).__name__}, not an rlhfx.EnvStep", environment, where)
    reward = _number(step.reward, environment, where, "step")
    return replace(step, reward=reward, observation=str(step.observation))


def _tool_step(episode: Episode, text: str, status: str) -> EnvStep:
    episode.tools["calls"] += 1
    if status != "ok":
        episode.tools["errors"] += 1
        episode.tools[status] += 1
    episode.turns[-1]["tool"] = status
    return EnvStep(text, role="tool")


def _number(value: Any, environment: Environment, where: str, method: str) -> float:
    from rlhfx.faults import PluginFault, describe

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise PluginFault(f"{where}: {describe(environment)}: {method}() gave the reward "
                          f"{value!r}, not a finite number", environment, where)
    return float(value)


def episode_metrics(episodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-iteration figures of episodes (each given as its sample's `extra`)."""
    n = len(episodes)
    if not n:
        return {}

    def total(key: str) -> int:
        return sum(int(e.get("episode_tools", {}).get(key, 0)) for e in episodes)

    return {
        "episode_turns_mean": sum(e["episode_model_turns"] for e in episodes) / n,
        "episode_env_reward_mean": sum(e["episode_env_reward"] for e in episodes) / n,
        "episode_done_rate": sum(e["episode_end"] == DONE for e in episodes) / n,
        "episode_max_tokens_rate": sum(e["episode_end"] == MAX_TOKENS for e in episodes) / n,
        "tool_calls": total("calls"),
        "tool_errors": total("errors"),
        "tool_timeouts": total("timeout"),
    }


def episode_extra(episode: Episode) -> dict[str, Any]:
    """What a sample's `extra` keeps of its episode (the samples file shows it)."""
    return {
        "turns": episode.turns, "episode_end": episode.end,
        "episode_model_turns": episode.model_turns, "episode_env_reward": episode.env_reward,
        "episode_tools": dict(episode.tools),
    }


def episode_sample(episode: Episode, prompt_id: int, fields: Mapping[str, Any],
                   tokenizer: Any) -> Sample:
    """One sample for a whole episode: the readable transcript as its response text, every
    token after the first prompt as its response ids, the model's marked in `action_mask`."""
    return Sample(
        prompt_id=prompt_id, prompt=episode.prompt,
        raw_response=tokenizer.decode(episode.response_ids, skip_special_tokens=True),
        sample=episode.sample, fields=dict(fields), prompt_ids=list(episode.prompt_ids),
        response_ids=list(episode.response_ids), action_mask=list(episode.action_mask),
        finished=episode.finished, extra=episode_extra(episode),
    )


def add_environment_rewards(samples: Sequence[Sample]) -> None:
    """Add each scored episode's environment rewards to what the reward sources gave it."""
    for s in samples:
        if s.reward is not None:
            s.reward += float(s.extra.get("episode_env_reward", 0.0))
