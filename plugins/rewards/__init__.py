"""The built-in reward sources: rules that need no model (`rules`: pattern penalties, length,
repetition, weighted sums) and sequence-classification reward models (`reward_model`: a model
the reward_model stage trained, any such checkpoint, or the seed's GPT-Neo HH model)."""

from rlhfx import hookimpl


@hookimpl
def rlhfx_register_reward_sources(register):
    from .reward_model import GptNeoRM, SequenceReward
    from .rules import LengthReward, PatternPenalty, RepetitionPenalty, WeightedReward

    for source in (PatternPenalty, LengthReward, RepetitionPenalty, WeightedReward, GptNeoRM,
                   SequenceReward):
        register(source)
