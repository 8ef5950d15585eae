"""Base classes of the component kinds that plugins register.

A component is a class with a `name` (what a recipe writes) and a `Config` (a pydantic model
that rejects unknown keys). The core validates a recipe's table against `Config` long before it
constructs the component, so `rlhfx validate` never loads a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from rlhfx.alignment.batch import Batch
    from rlhfx.alignment.setup import AlignmentSetup
    from rlhfx.context import StageContext


#: Options of the shared alignment loop that may change when a run is resumed (more iterations
#: continue from the last checkpoint; cadences and warning thresholds change no result).
LOOP_RESUME_NEUTRAL = frozenset({
    "iterations", "torch_threads", "keep_checkpoints", "eval_every", "save_every",
    "save_samples", "distinct2_warn_fraction", "cleaner_rate_warn_increase",
    "discard_rate_warn", "kl_negative_tolerance", "kl_warn_above",
})


class ComponentConfig(BaseModel):
    """Base for every component's config: unknown keys are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())


class EmptyConfig(ComponentConfig):
    """For components with nothing to configure."""


class Component:
    """Something a plugin registers under a name, built from a validated config."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Config: ClassVar[type[ComponentConfig]] = EmptyConfig
    #: Option keys that may change between a run and its resume without making earlier work
    #: stale (e.g. RAFT's `iterations` may grow). The runner leaves them out of a stage's
    #: fingerprint, and re-enters a completed stage when only these changed.
    resume_neutral: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ComponentConfig | None = None):
        self.config = config if config is not None else self.Config()

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


@dataclass
class CleanResult:
    """What a cleaner did to one response; `changed` feeds the cleaner-change-rate metric."""

    text: str
    changed: bool = False
    discard_reason: str | None = None  # set to discard the sample


class ResponseCleaner(Component):
    """Turns a raw generation into the text that is scored and trained on."""

    kind = "cleaner"

    def clean(self, prompt: str, response: str) -> CleanResult:
        raise NotImplementedError

    def stop_strings(self) -> list[str]:
        """Strings at which generation may stop because this cleaner would cut there anyway
        (the loop's default `stop_strings` are every cleaner's, in recipe order)."""
        return []


class RewardSource(Component):
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


class Ranker(Component):
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


class AlignmentAlgorithm(Component):
    """An alignment algorithm (RAFT, PPO, GRPO, ...) run by the shared alignment loop.

    The loop (`rlhfx.alignment.loop`) owns the run: prompt schedule, seeding, generation,
    cleaning, scoring, guards, eval, checkpoints, metrics, plots and the final save. An
    algorithm says only what makes it that algorithm; see docs/algorithms.md. Its `Config`
    subclasses `rlhfx.AlgorithmConfig`, whose shared options the loop reads.
    """

    kind = "algorithm"
    resume_neutral = LOOP_RESUME_NEUTRAL
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
        """The model the loop saves as the stage's output. Default: the policy, LoRA merged."""
        model = self.policy
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    def save_extras(self, directory: Path) -> None:
        """Write files of the algorithm's own beside the final model (e.g. PPO's value head)."""


class Stage(Component):
    """A step of the pipeline (data, sft, reward_model, align). Outputs are named paths."""

    kind = "stage"
    #: Output names a later stage may reference as `@stage_id.output`; the first is the default.
    outputs: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: StageContext) -> dict[str, str]:
        raise NotImplementedError


class DataFormat(Component):
    """Reads preference or prompt data in one on-disk layout."""

    kind = "data_format"

    def sniff(self, record: dict[str, Any]) -> bool:
        """True when a record looks like this format (used when a recipe says `auto`)."""
        return False


#: kind -> base class; the order is the order `rlhfx plugins list` shows.
KINDS: dict[str, type[Component]] = {
    "stage": Stage,
    "algorithm": AlignmentAlgorithm,
    "reward_source": RewardSource,
    "cleaner": ResponseCleaner,
    "ranker": Ranker,
    "data_format": DataFormat,
}

KIND_LABELS: dict[str, str] = {
    "stage": "stage",
    "algorithm": "alignment algorithm",
    "reward_source": "reward source",
    "cleaner": "response cleaner",
    "ranker": "ranker",
    "data_format": "data format",
}
