"""Trainer arguments built from recipe options (rlhfx.trainer_args): checks and precedence."""

from __future__ import annotations

import pytest

from rlhfx import UserError
from rlhfx.trainer_args import build_arguments, check_extra_options


def test_unknown_extra_option_names_the_recipe_key_and_the_closest_option():
    from transformers import TrainingArguments

    with pytest.raises(UserError) as caught:
        check_extra_options(TrainingArguments, {"learning_rat": 1e-4, "zzz": 1, "output_dir": ""},
                            "r.toml: stages.sft")
    assert str(caught.value) == (
        "r.toml: stages.sft.training_args.learning_rat: not an option of "
        "transformers.TrainingArguments (did you mean 'learning_rate'?) (also: zzz)"
    )


@pytest.mark.parametrize("name", ["gradient_checkpointing", "activation_checkpointing"])
def test_checkpointing_from_the_recipe_extras_beats_the_typed_option(tmp_path, name):
    import dataclasses
    import warnings

    from trl import SFTConfig

    if name not in {f.name for f in dataclasses.fields(SFTConfig)}:
        pytest.skip(f"this transformers has no `{name}` yet (renamed after 5.16)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the old name is passed on the new way
        args = build_arguments(
            SFTConfig, "r.toml: stages.sft", defaults={"output_dir": str(tmp_path)},
            extra={name: True}, forced={"use_cpu": True, "bf16": False},
            activation_checkpointing=False,
        )
    assert args.gradient_checkpointing is True


def test_raft_settings_win_over_its_training_args_extras(tmp_path):
    from rlhfx.plugins.raft.config import RaftConfig
    from rlhfx.plugins.raft.train import training_arguments

    config = RaftConfig(warmup_ratio=0.1, learning_rate=1e-3,
                        training_args={"warmup_steps": 5, "learning_rate": 9.0, "adam_beta2": 0.9})
    args = training_arguments(config, tmp_path, seed=1, device="cpu", dtype="float32")
    ratio = getattr(args, "warmup_ratio", None)
    assert (ratio if ratio is not None else args.warmup_steps) == 0.1
    assert args.learning_rate == 1e-3
    assert args.adam_beta2 == 0.9  # an extra RAFT does not set itself goes through


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


def test_fsdp_arguments_ask_accelerate_for_fsdp2_with_sharded_checkpoints(tmp_path):
    from transformers import TrainingArguments

    from rlhfx.sharding import FsdpSettings
    from rlhfx.trainer_args import build_arguments, fsdp_arguments

    settings = FsdpSettings(cpu_offload=True, mixed_precision="bf16",
                            reshard_after_forward=False, layer_classes=["GPTNeoBlock"])
    extra = fsdp_arguments(TrainingArguments, settings)
    assert extra["bf16"] is True
    args = build_arguments(TrainingArguments, "r.toml: stages.sft",
                           defaults={"output_dir": str(tmp_path), "use_cpu": True, **extra},
                           extra={})
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2
    assert plugin["cpu_offload"] is True and plugin["reshard_after_forward"] is False
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert plugin["transformer_cls_names_to_wrap"] == "GPTNeoBlock"
    plain = fsdp_arguments(TrainingArguments, FsdpSettings())
    assert "bf16" not in plain and "fp16" not in plain


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_bf16_where_the_device_computes_it(tmp_path, monkeypatch,
                                                                     native):
    """Trainer stages (`precision = "auto"`, the default) and RAFT (`dtype = "auto"`) train
    under bf16 autocast where the device has native bf16, a CPU with AVX512-BF16 included, and
    in float32 elsewhere; an explicit choice stands whatever the hardware."""
    from types import SimpleNamespace

    from trl import RewardConfig

    from rlhfx import hardware
    from rlhfx.alignment.setup import AlignmentSetup
    from rlhfx.hf_training import TrainingOptions, trainer_arguments
    from rlhfx.plugins.raft.config import RaftConfig
    from rlhfx.plugins.raft.train import training_arguments

    asked: list[str] = []

    def answer(device: str) -> bool:
        asked.append(device)
        return native

    monkeypatch.setattr(hardware, "has_native_bf16", answer)
    ctx = SimpleNamespace(stage_dir=tmp_path, device="cpu", report_to=(), seed=1,
                          parallelism=SimpleNamespace(sharded=False), recipe_file="r.toml",
                          stage_id="reward_model")
    needed = {"model": "builtin:tiny-gpt-neo", "data": "pairs.jsonl"}
    args = trainer_arguments(RewardConfig, TrainingOptions(**needed), ctx)
    assert (args.bf16, args.fp16, asked) == (native, False, ["cpu"])
    assert not trainer_arguments(RewardConfig, TrainingOptions(**needed, precision="no"),
                                 ctx).bf16

    setup = AlignmentSetup(RaftConfig(dtype="auto"), "builtin:tiny-gpt-neo", None, [], [], [],
                           None, [], tmp_path, "cpu", "r.toml: stages.align.algorithm")
    raft = training_arguments(setup.config, tmp_path, 1, "cpu", setup.compute_dtype)
    assert raft.bf16 is native
    asked.clear()
    setup.config = RaftConfig()
    assert not training_arguments(setup.config, tmp_path, 1, "cpu", setup.compute_dtype).bf16
    assert asked == []  # float32, the default, never asks
