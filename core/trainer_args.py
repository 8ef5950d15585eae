"""Trainer arguments from recipe options, built one way for every Trainer-based step.

The SFT and reward-model stages (TRL's SFTConfig / RewardConfig) and RAFT's fine-tuning step
(transformers' TrainingArguments) each set their own values, but share the rules here: the
recipe's free-form `training_args` are checked against the arguments class first (a typo is a
one-line error naming the recipe key, not a TypeError from deep inside transformers), names
that moved between transformers releases are picked for the installed one, and the recipe's
extras override defaults but never the settings a step depends on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rlhfx.errors import UserError


def option_names(args_cls: Any) -> set[str]:
    """The keyword arguments `args_cls(...)` accepts."""
    return {f.name for f in dataclasses.fields(args_cls) if f.init}


def check_extra_options(args_cls: Any, extra: Mapping[str, Any], where: str) -> None:
    """Refuse `training_args` keys that `args_cls` does not take; `where` is the recipe key
    that holds them (`recipe.toml: stages.align.algorithm`)."""
    names = option_names(args_cls)
    unknown = sorted(set(extra) - names)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        others = f" (also: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise UserError(
            f"{where}.training_args.{unknown[0]}: not an option of "
            f"{args_cls.__module__.split('.')[0]}.{args_cls.__name__}{hint}{others}"
        )


def warmup_setting(args_cls: Any, ratio: float) -> dict[str, float]:
    """The warmup ratio under the installed name: transformers 5 folded `warmup_ratio` into a
    fractional `warmup_steps`; 4.x has both."""
    if not ratio:
        return {}
    return {"warmup_ratio" if "warmup_ratio" in option_names(args_cls) else "warmup_steps": ratio}


def build_arguments(
    args_cls: Any,
    where: str,
    defaults: Mapping[str, Any],
    extra: Mapping[str, Any],
    forced: Mapping[str, Any] | None = None,
    warmup_ratio: float = 0.0,
    activation_checkpointing: bool | None = None,
) -> Any:
    """`args_cls(**defaults, **extra, **forced)`, the version-dependent names filled in.

    `defaults`: what the recipe's typed options say (the extras may override them);
    `forced`: what the step relies on (output dir, no Trainer checkpoints, ...).

    transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` (setting the
    old name warns, and the new one wins when both are set); 4.x has only the old name. TRL's
    configs default checkpointing to on, so stages pass their option always; a recipe extra
    under either name overrides it.
    """
    check_extra_options(args_cls, extra, where)
    names = option_names(args_cls)
    values = {**defaults, **warmup_setting(args_cls, warmup_ratio)}
    extra = dict(extra)
    new, old = "activation_checkpointing", "gradient_checkpointing"
    if new in names and old in extra:  # the old name from a recipe: say it the new way
        extra.setdefault(new, extra.pop(old))
    if activation_checkpointing is not None:
        values[new if new in names else old] = activation_checkpointing
    try:
        return args_cls(**{**values, **extra, **(forced or {})})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}.training_args: {exc}") from None


def fsdp_arguments(args_cls: Any, settings: Any) -> dict[str, Any]:
    """Trainer arguments for FSDP2 through accelerate, from `[run.fsdp]` settings.

    Each transformer block is one unit (accelerate wraps the model's `_no_split_modules`
    classes unless `layer_classes` names others). Checkpoints are saved sharded (each process
    its part, no gathering; they resume exactly); the stage gathers the final model itself.
    transformers 5 takes `fsdp=True` with everything in `fsdp_config`; 4.x takes option words.
    """
    config: dict[str, Any] = {
        "version": 2,
        "reshard_after_forward": settings.reshard_after_forward,
        "cpu_offload": settings.cpu_offload,
        "state_dict_type": "SHARDED_STATE_DICT",
    }
    if settings.layer_classes:
        config["transformer_layer_cls_to_wrap"] = list(settings.layer_classes)
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        fsdp: Any = True
    else:
        fsdp = "full_shard auto_wrap" + (" offload" if settings.cpu_offload else "")
    out: dict[str, Any] = {"fsdp": fsdp, "fsdp_config": config}
    if settings.mixed_precision != "no":
        out[settings.mixed_precision] = True  # bf16 / fp16: accelerate's mixed precision
    return out


def fsdp_on_cpu(trainer_cls: Any) -> Any:
    """`trainer_cls` that also shards with FSDP2 when training on the CPU.

    accelerate turns its FSDP plugin on only for GPU-like devices: on the CPU (gloo) it
    silently falls back to DDP. FSDP2 itself trains fine there, so after the accelerator is
    made its state is switched to FSDP with the plugin the arguments asked for. A GPU run
    is left exactly as accelerate sets it up.
    """

    class Sharded(trainer_cls):
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            state = self.accelerator.state
            plugin_args = getattr(self.args, "fsdp_plugin_args", None)
            if plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
                return
            plugin = FullyShardedDataParallelPlugin(**plugin_args)
            if state.mixed_precision != "no":
                plugin.set_mixed_precision(state.mixed_precision)
            state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = plugin
            self.is_fsdp_enabled = True

    Sharded.__name__ = Sharded.__qualname__ = trainer_cls.__name__
    return Sharded
