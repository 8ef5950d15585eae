"""What an algorithm's `update` is handed: one iteration's scored samples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby

from rlhfx.components import Sample


@dataclass
class Batch:
    """One iteration's samples from every process, ordered by (prompt_id, sample).

    Each process holds the same `samples`. `mine` are the ones this process generated: a
    data-parallel update trains on those; an update that decides once for all (RAFT's
    selection) may use `samples` and split the training work itself.
    """

    iteration: int
    samples: list[Sample]
    #: samples per prompt (k) and prompts this iteration, over all processes
    k: int
    num_prompts: int
    rank: int
    world_size: int
    #: this process's seed for the iteration (shuffles of this process's own data)
    seed: int
    #: the iteration's seed, the same on every process (what all processes must agree on)
    shared_seed: int

    @property
    def mine(self) -> list[Sample]:
        """The samples this process generated (prompts are dealt round robin)."""
        return [s for s in self.samples if s.prompt_id % self.world_size == self.rank]

    def groups(self, samples: list[Sample] | None = None) -> Iterator[list[Sample]]:
        """The samples of each prompt together (of `samples`, default all)."""
        for _, group in groupby(samples if samples is not None else self.samples,
                                key=lambda s: s.prompt_id):
            yield list(group)

    @staticmethod
    def usable(sample: Sample) -> bool:
        """Scored with a finite reward and not discarded: fit to learn from."""
        return not sample.discarded and sample.reward is not None
