"""A component's Config comes from its base's type argument (or an assignment in its body)."""

from typing import TypeVar

import pytest
from pydantic import ValidationError

from rlhfx import ComponentConfig, EmptyConfig, RewardSource


class Bonus(ComponentConfig):
    bonus: float = 1.0


class Scale(ComponentConfig):
    factor: float = 2.0


class Polite(RewardSource[Bonus]):
    name = "polite"

    def score(self, prompts, responses):
        return [self.config.bonus * r.count("please") for r in responses]


def test_the_type_argument_is_the_config():
    assert Polite.Config is Bonus
    assert Polite().config == Bonus()
    assert Polite(Bonus(bonus=3.0)).score(["p"], ["please, please"]) == [6.0]
    with pytest.raises(ValidationError):
        Polite.Config(bonus=1.0, bonsu=2.0)  # unknown keys are still refused


C = TypeVar("C", bound=Bonus)


class Family(RewardSource[C]):
    """A base of its own that leaves the config open: its subclasses name it."""

    Config = Bonus

    def score(self, prompts, responses):
        return [self.config.bonus for _ in responses]


class Louder(Bonus):
    volume: int = 3


class Member(Family[Louder]):
    name = "member"


def test_a_generic_base_keeps_its_config_and_its_subclass_names_its_own():
    assert Family.Config is Bonus
    assert Member.Config is Louder
    assert Member().config.volume == 3


def test_no_argument_means_no_options_and_an_assignment_wins():
    class Plain(RewardSource):
        name = "plain"

    class Assigned(RewardSource[Bonus]):
        name = "assigned"
        Config = Scale

    assert Plain.Config is EmptyConfig
    assert Assigned.Config is Scale


def test_built_ins_get_their_configs_from_the_argument():
    from rlhfx.alignment.critic_free import CriticFreeAlgorithm
    from rlhfx.alignment.critic_free_config import CriticFreeConfig
    from rlhfx.plugins.grpo import GRPO, GRPOConfig
    from rlhfx.plugins.sft import SFTOptions, SFTStage

    assert GRPO.Config is GRPOConfig
    assert CriticFreeAlgorithm.Config is CriticFreeConfig
    assert SFTStage.Config is SFTOptions  # TrainerStage[options, job]: the options
