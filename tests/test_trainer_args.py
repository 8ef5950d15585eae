"""Trainer arguments built from recipe options (rlhfx.trainer_args): checks and precedence."""

from __future__ import annotations

import pytest

from rlhfx import UserError
from rlhfx.trainer_args import build_arguments, check_extra_options


def test_unknown_extra_option_names_the_recipe_key_and_the_closest_option():
    from transformers import TrainingArguments

    with pytest.raises(UserError) as caught:
        check_extra_options(TrainingArguments, {"learning_rat": 1e-4}, "r.toml: stages.sft")
    assert str(caught.value) == (
        "r.toml: stages.sft.training_args.learning_rat: not an option of "
        "transformers.TrainingArguments (did you mean 'learning_rate'?)"
    )


def test_extras_override_defaults_but_not_forced_settings(tmp_path):
    from transformers import TrainingArguments

    args = build_arguments(
        TrainingArguments, "r.toml: stages.sft",
        defaults={"learning_rate": 1e-5, "output_dir": str(tmp_path / "ignored")},
        extra={"learning_rate": 3e-4, "output_dir": str(tmp_path / "extra")},
        forced={"output_dir": str(tmp_path / "forced"), "use_cpu": True},
    )
    assert args.learning_rate == 3e-4
    assert args.output_dir == str(tmp_path / "forced")


def test_warmup_and_checkpointing_use_the_installed_names(tmp_path):
    import warnings

    from trl import RewardConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated name is set
        args = build_arguments(
            RewardConfig, "r.toml: stages.rm", defaults={"output_dir": str(tmp_path)},
            extra={}, forced={"use_cpu": True, "bf16": False}, warmup_ratio=0.25,
            activation_checkpointing=False,
        )
    # TRL's configs default checkpointing to on; the recipe's False must reach the trainer
    assert args.gradient_checkpointing is False
    ratio = getattr(args, "warmup_ratio", None)
    assert (ratio if ratio is not None else args.warmup_steps) == 0.25


def test_a_value_the_arguments_class_refuses_is_a_user_error(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(UserError, match=r"^r\.toml: stages\.sft\.training_args: "):
        build_arguments(TrainingArguments, "r.toml: stages.sft",
                        defaults={"output_dir": str(tmp_path)},
                        extra={"lr_scheduler_type": "no-such-schedule"}, forced={"use_cpu": True})
