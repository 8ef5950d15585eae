"""Base classes of the component kinds that plugins register.

A component is a class with a `name` (what a recipe writes) and a `Config` (a pydantic model
that rejects unknown keys), given once as its base's type argument: `class Keywords(
RewardSource[KeywordsConfig])` sets `Keywords.Config` and types `self.config`. The core
validates a recipe's table against `Config` long before it constructs the component, so
`rlhfx validate` never loads a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast, get_args

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import random

    from rlhfx.alignment.batch import Batch
    from rlhfx.alignment.setup import AlignmentSetup
    from rlhfx.context import StageContext
    from rlhfx.rollouts import Rollout, SamplingSettings


#: Options of the shared alignment loop that may change when a run is resumed (more iterations
#: continue from the last checkpoint; cadences and warning thresholds change no result).
LOOP_RESUME_NEUTRAL = frozenset({
    "iterations", "torch_threads", "keep_checkpoints", "eval_every", "save_every",
    "save_samples", "distinct2_warn_fraction", "cleaner_rate_warn_increase",
    "discard_rate_warn", "kl_negative_tolerance", "kl_warn_above", "on_nonfinite",
})


class ComponentConfig(BaseModel):
    """Base for every component's config: unknown keys are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())


class EmptyConfig(ComponentConfig):
    """For components with nothing to configure."""


ConfigT = TypeVar("ConfigT", bound=ComponentConfig)


class Component(Generic[ConfigT]):
    """Something a plugin registers under a name, built from a validated config."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    #: Set from the base's type argument (`Stage[MyConfig]`); a class may also assign it.
    Config: ClassVar[type[ComponentConfig]] = EmptyConfig
    config: ConfigT
    #: Option keys that may change between a run and its resume without making earlier work
    #: stale (e.g. RAFT's `iterations` may grow). The runner leaves them out of a stage's
    #: fingerprint, and re-enters a completed stage when only these changed.
    resume_neutral: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" not in cls.__dict__:
            for base in cls.__dict__.get("__orig_bases__", ()):
                given = [a for a in get_args(base)
                         if isinstance(a, type) and issubclass(a, ComponentConfig)]
                if given:
                    cls.Config = given[0]
                    break

    def __init__(self, config: ConfigT | None = None):
        self.config = config if config is not None else cast(ConfigT, self.Config())

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def contract_problem(cls) -> str | None:
        """What keeps this class from running as its kind, or None. Checked when a recipe is
        validated, so `rlhfx validate` refuses what `rlhfx run` would (a kind whose runner
        needs more than `Config` and `name` says so by overriding this)."""
        return None


# --------------------------------------------------------------------------------------------
# Data that flows between rollouts, cleaners, rewards and rankers.


@dataclass
class Sample:
    """One generated response to one prompt, as it moves through clean -> score -> train.

    The alignment loop fills everything but `trained` (the algorithm marks what its update
    used) and `extra` (free for the algorithm; JSON-able values land in the samples file).
    """

    prompt_id: int  # index of the prompt in this iteration; the k samples of a prompt share it
    prompt: str
    raw_response: str
    response: str = ""  # after the cleaners
    changed: bool = False  # a cleaner altered the text
    discarded: bool = False  # a cleaner ruled it out: never selected, never trained on
    discard_reason: str | None = None
    reward: float | None = None  # None while unscored or when discarded
    extra: dict[str, Any] = field(default_factory=dict)
    #: which of its prompt's k samples this is (0-based)
    sample: int = 0
    #: extra fields of the prompt's row in the prompt file (e.g. a reference answer)
    fields: dict[str, Any] = field(default_factory=dict)
    #: the policy's token ids: the prompt as generation saw it, and the sampled response cut
    #: where the cleaned text ends (see `token_status`)
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    #: one flag per `response_ids` token: 1 where the policy sampled it, 0 where an environment
    #: or tool wrote it (a multi-turn episode). Such tokens are context only: no loss, KL,
    #: log-prob or value is taken at them. None means every response token is the policy's.
    action_mask: list[int] | None = None
    #: how `response_ids` relate to the cleaned text: "kept" (all sampled tokens), "cut"
    #: (a prefix of them), "retokenized" (a cleaner rewrote the text), "prefix" (a cleaner
    #: removed text before the response: those tokens cannot be cut away)
    token_status: str = "kept"
    #: the response ended by itself (EOS or a stop string), not at the length limit
    finished: bool = False
    #: the algorithm's update used this sample (RAFT: selected; PPO: kept)
    trained: bool = False

    def model_token_mask(self) -> list[int]:
        """1 at each response token the policy sampled, 0 where an environment wrote it."""
        if self.action_mask is None:
            return [1] * len(self.response_ids)
        return list(self.action_mask)


@dataclass
class CleanResult:
    """What a cleaner did to one response; `changed` feeds the cleaner-change-rate metric."""

    text: str
    changed: bool = False
    discard_reason: str | None = None  # set to discard the sample


class ResponseCleaner(Component[ConfigT]):
    """Turns a raw generation into the text that is scored and trained on."""

    kind = "cleaner"

    def clean(self, prompt: str, response: str) -> CleanResult:
        raise NotImplementedError

    def stop_strings(self) -> list[str]:
        """Strings at which generation may stop because this cleaner would cut there anyway
        (the loop's default `stop_strings` are every cleaner's, in recipe order)."""
        return []


class RewardSource(Component[ConfigT]):
    """Scores (prompt, cleaned response) pairs as text, so any tokenizer may be used inside."""

    kind = "reward_source"
    #: True inside `frozen_statistics(reward)`: score without updating running statistics
    #: (evaluation must neither change nor depend on how often it ran).
    statistics_frozen: bool = False

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def reads_policy_tokens(self, tokenizer: Any) -> bool:
        """Whether `score_tokens` may be given the policy's token ids instead of text: true
        only when this source would tokenize the text exactly as `tokenizer` does. Asked once
        per run; the default (False) keeps every source text-only."""
        return False

    def score_tokens(
        self, prompt_ids: Sequence[list[int]], response_ids: Sequence[list[int]]
    ) -> list[float]:
        """Scores of the policy's own prompt and response tokens (for sources whose
        `reads_policy_tokens` is true): no decode, join and re-tokenise, and the reward
        model reads exactly the tokens that were sampled (as TRL's PPO scores them)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State that scores depend on besides the config (e.g. running statistics), as JSON
        data; algorithms save it in their checkpoints so a resumed run scores the same."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


@contextmanager
def frozen_statistics(reward: RewardSource) -> Iterator[RewardSource]:
    """Within this block `reward` (and the sources inside it) score without updating their
    running statistics: use it for evaluation."""
    previous = reward.statistics_frozen
    reward.statistics_frozen = True
    try:
        yield reward
    finally:
        reward.statistics_frozen = previous


class Ranker(Component[ConfigT]):
    """Chooses which samples RAFT fine-tunes on."""

    kind = "ranker"
    #: How many samples the algorithm hopes to keep (RAFT's b); set before `select` is called.
    #: A ranker may use it as its default budget (the built-in `top` does).
    keep: int | None = None

    def samples_per_prompt(self, k: int) -> int:
        """How many samples of each prompt this ranker compares, given the algorithm's k.

        k (the default): it picks within each prompt's group (b prompts x k samples).
        1: it ranks single samples across prompts (b*k prompts, one sample each)."""
        return k

    def select(self, samples: Sequence[Sample]) -> list[int]:
        """Return indices into `samples`; discarded samples must never be returned."""
        raise NotImplementedError


class AlignmentAlgorithm(Component[ConfigT]):
    """An alignment algorithm (RAFT, PPO, GRPO, ...) run by the shared alignment loop.

    The loop (`rlhfx.alignment.loop`) owns the run: prompt schedule, seeding, generation,
    cleaning, scoring, guards, eval, checkpoints, metrics, plots and the final save. An
    algorithm says only what makes it that algorithm; see docs/algorithms.md. Its `Config`
    subclasses `rlhfx.AlgorithmConfig`, whose shared options the loop reads.
    """

    kind = "algorithm"
    resume_neutral = LOOP_RESUME_NEUTRAL
    #: The update trains on multi-turn episodes: it takes no loss, KL, log-prob or value at
    #: response tokens whose `Sample.action_mask` is 0. The align stage refuses an
    #: environment with an algorithm that does not say so.
    trains_episodes: ClassVar[bool] = False
    #: The policy the loop generates with, checkpoints and saves (set it in `setup`).
    policy: Any = None

    @classmethod
    def contract_problem(cls) -> str | None:
        """A Config that does not subclass AlgorithmConfig, or a loop method not written."""
        from rlhfx.alignment.config import AlgorithmConfig

        if not issubclass(cls.Config, AlgorithmConfig):
            return (f"'{cls.name}' has a Config that does not subclass rlhfx.AlgorithmConfig "
                    "(the alignment loop reads its shared options from there)")
        missing = [method for method in ("prompts_per_iteration", "setup", "update")
                   if getattr(cls, method) is getattr(AlignmentAlgorithm, method)]
        if missing:
            return (f"'{cls.name}' does not implement {', '.join(missing)} (the alignment "
                    "loop calls them; docs/algorithms.md)")
        return None

    def prompts_per_iteration(self) -> int:
        """Prompts the loop samples per iteration, over all processes."""
        raise NotImplementedError

    def samples_per_prompt(self) -> int:
        """Responses the loop samples for each prompt (k)."""
        return 1

    def setup(self, setup: AlignmentSetup) -> None:
        """Load what the algorithm trains (`self.policy = setup.load_policy()`, an optimizer,
        a reference model...). Called once per process, before a checkpoint is restored."""
        raise NotImplementedError

    def update(self, batch: Batch) -> Mapping[str, Any]:
        """Learn from one iteration's scored samples; mark the samples used
        (`sample.trained = True`) and return metrics (docs/metrics.md: names in the schema
        keep their meaning, any other name is shown as `<algorithm>/<name>`)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds for this algorithm (torch-saveable). Default: the policy's
        trainable weights; add optimizer state and the like when the update needs them."""
        from rlhfx.alignment.weights import trainable_state

        return {"policy": trainable_state(self.policy)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (called after `setup`)."""
        from rlhfx.alignment.weights import load_trainable_state

        load_trainable_state(self.policy, state["policy"])

    def final_model(self) -> Any:
        """The model the loop saves as the stage's output. Default: the policy, LoRA merged
        (a sharded one is merged when the loop saves it: it cannot merge in place)."""
        from rlhfx.sharding import is_sharded

        model = self.policy
        if hasattr(model, "merge_and_unload") and not is_sharded(model):
            return model.merge_and_unload()
        return model

    def save_extras(self, directory: Path) -> None:
        """Write files of the algorithm's own beside the final model (e.g. PPO's value head)."""


class Stage(Component[ConfigT]):
    """A step of the pipeline (data, sft, reward_model, align). Outputs are named paths."""

    kind = "stage"
    #: Output names a later stage may reference as `@stage_id.output`; the first is the default.
    outputs: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: StageContext) -> dict[str, str]:
        raise NotImplementedError


class DataFormat(Component[ConfigT]):
    """Reads preference or prompt data in one on-disk layout."""

    kind = "data_format"

    def sniff(self, record: dict[str, Any]) -> bool:
        """True when a record looks like this format (used when a recipe says `auto`)."""
        return False


@dataclass(frozen=True)
class EngineSetup:
    """Where a rollout engine runs: what `RolloutEngine.start` is told besides the model."""

    #: rows (prompts x samples) per generate call the recipe asks for
    batch_size: int
    #: where the policy trains: "cpu", "cuda", "cuda:0"
    device: str
    #: a folder the engine may write to (vLLM: the weights it loads)
    work_dir: Path


class RolloutEngine(Component[ConfigT]):
    """Samples responses for the alignment loop and the evaluate stage.

    Built as `Cls(config)` (cheap), then `start` once with the policy; `generate` per
    iteration, `sync_weights` after every policy update, `close` at the end.
    """

    kind = "rollout_engine"
    #: The engine keeps its own copy of the weights (vLLM), so the model it was started with
    #: may be freed while it lives; False: it samples from that model object itself.
    owns_weights: ClassVar[bool] = False

    def start(self, model: Any, tokenizer: Any, setup: EngineSetup) -> None:
        """Get ready to sample from `model` (a transformers causal LM, maybe a peft model)."""
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings, num_samples: int = 1,
                 stop_strings: Sequence[str] = (), rng: random.Random | None = None,
                 progress: Any = None, description: str = "generating",
                 prompt_ids: Sequence[list[int]] | None = None) -> list[Rollout]:
        """`num_samples` responses per prompt, prompt by prompt (`Rollout.prompt_id` indexes
        `prompts`). `rng` draws the response length when `sampling.length_range` is set;
        `progress` is a rich Progress to add a task to, or None. `prompt_ids`, when given,
        are the prompts' token ids to continue exactly as they are (an episode's later turns:
        its context is never re-tokenised from text)."""
        raise NotImplementedError

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from `model` (the updated policy; full or a peft model)."""

    def can_take(self, model: Any, tokenizer: Any) -> bool:
        """Whether `sync_weights(model)` may switch this engine to another model (same
        architecture and tokenizer), instead of starting a new engine for it."""
        return False

    def close(self) -> None:
        """Free what the engine holds (processes, memory)."""


class EnvironmentConfig(ComponentConfig):
    """Options every environment takes, besides its own: the limits of an episode."""

    #: Model turns per episode at most (the episode ends after the last one).
    max_turns: int = Field(default=4, ge=1)
    #: Tokens after the prompt at most, the model's and the environment's together; a turn
    #: that would go past it is cut there and ends the episode.
    max_episode_tokens: int = Field(default=256, ge=1)
    #: Seconds a tool call may take; a slower one becomes an error message to the model.
    tool_timeout: float = Field(default=5.0, gt=0)
    #: The prompts are plain questions: show each to the policy as a user message through its
    #: chat template, with the environment's tools (false: the prompt is used as written).
    chat_template: bool = False


@dataclass
class EnvStep:
    """An environment's answer to one model turn."""

    #: The message the model reads next (a tool result, the game's reply); may be empty.
    observation: str = ""
    #: Reward for this turn; the episode's rewards are summed.
    reward: float = 0.0
    #: The episode is over (the observation is then recorded but not shown to the model).
    done: bool = False
    #: The chat role the observation is shown under ("user", or "tool" for tool results).
    role: str = "user"


EnvironmentConfigT = TypeVar("EnvironmentConfigT", bound=EnvironmentConfig)


class Environment(Component[EnvironmentConfigT]):
    """What the policy talks to over several turns: a game, a simulated user, a tool box.

    One instance serves every episode of a run, so an episode's state lives in the object
    `reset` returns, never on the environment itself. The episode's reward is the sum of its
    turns' rewards plus `final_reward`, added to what the recipe's reward sources give the
    finished transcript.
    """

    kind = "environment"
    Config: ClassVar[type[ComponentConfig]] = EnvironmentConfig

    def tools(self) -> list[Callable[..., Any]]:
        """Plain functions the model may call (type hints and docstring become the schema its
        chat template shows). A reply with a well-formed tool call runs the tool instead of
        `step`; a reply without one goes to `step`."""
        return []

    def reset(self, prompt: str, fields: Mapping[str, Any], seed: int) -> Any:
        """Start an episode for a prompt row (`fields`: its other fields); returns the
        episode's state, handed back to `step`. `seed` makes a random start repeatable."""
        return None

    def step(self, state: Any, reply: str) -> EnvStep:
        """Answer one model turn (its text, special tokens removed)."""
        raise NotImplementedError

    def final_reward(self, state: Any) -> float | None:
        """A reward for the whole finished episode, or None (only the turns' rewards)."""
        return None


#: kind -> base class; the order is the order `rlhfx plugins list` shows.
KINDS: dict[str, type[Component[Any]]] = {
    "stage": Stage,
    "algorithm": AlignmentAlgorithm,
    "reward_source": RewardSource,
    "cleaner": ResponseCleaner,
    "ranker": Ranker,
    "data_format": DataFormat,
    "rollout_engine": RolloutEngine,
    "environment": Environment,
}

KIND_LABELS: dict[str, str] = {
    "stage": "stage",
    "algorithm": "alignment algorithm",
    "reward_source": "reward source",
    "cleaner": "response cleaner",
    "ranker": "ranker",
    "data_format": "data format",
    "rollout_engine": "rollout engine",
    "environment": "environment",
}
