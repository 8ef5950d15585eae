"""Base classes of the component kinds that plugins register.

A component is a class with a `name` (what a recipe writes) and a `Config` (a pydantic model
that rejects unknown keys). The core validates a recipe's table against `Config` long before it
constructs the component, so `rlhfx validate` never loads a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from rlhfx.context import StageContext


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


# --------------------------------------------------------------------------------------------
# Data that flows between rollouts, cleaners, rewards and rankers.


@dataclass
class Sample:
    """One generated response to one prompt, as it moves through clean -> score -> rank."""

    prompt_id: int  # index of the prompt in this batch; the k samples of a prompt share it
    prompt: str
    raw_response: str
    response: str = ""  # after the cleaners
    changed: bool = False  # a cleaner altered the text
    discarded: bool = False  # a cleaner ruled it out: never selected, never trained on
    discard_reason: str | None = None
    reward: float | None = None  # None while unscored or when discarded
    extra: dict[str, Any] = field(default_factory=dict)


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


class RewardSource(Component):
    """Scores (prompt, cleaned response) pairs as text, so any tokenizer may be used inside."""

    kind = "reward_source"
    #: True inside `frozen_statistics(reward)`: score without updating running statistics
    #: (evaluation must neither change nor depend on how often it ran).
    statistics_frozen: bool = False

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
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

    def select(self, samples: Sequence[Sample]) -> list[int]:
        """Return indices into `samples`; discarded samples must never be returned."""
        raise NotImplementedError


class AlignmentAlgorithm(Component):
    """An alignment loop (RAFT, PPO, ...) run by the `align` stage."""

    kind = "algorithm"

    def run(self, ctx: StageContext, setup: Any) -> dict[str, str]:
        """Run to completion (resuming if the stage directory holds a checkpoint).

        Returns the stage's outputs, e.g. `{"model": "<dir of the final policy>"}`.
        """
        raise NotImplementedError


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
