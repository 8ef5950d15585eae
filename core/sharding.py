"""FSDP2 sharding for rlhfx's own training loops (PyTorch's `fully_shard`).

With `parallelism = "fsdp"` every process keeps only its slice of each weight, of its gradient
and of the optimizer state: per-process memory for these falls roughly with the number of
processes. Each transformer block is one unit (its weights are gathered just before its forward
or backward and freed after), then the root module takes what is left (embeddings, final
norm, head; tied weights stay together there).

How a loop uses it (every function is collective: all processes call it, in the same order):

    model = shard_model(model, settings, device)        # before building the optimizer
    optimizer = torch.optim.AdamW(model.parameters())
    ...train as usual: loss.backward(); optimizer.step()...
    save_training_state(model, optimizer, folder)        # sharded checkpoint (resume)
    load_training_state(model, optimizer, folder)        # exact resume, any process count
    save_hf_checkpoint(model, target, tokenizer)         # final plain Hugging Face model
    with gathered_weights(model): model.generate(...)    # full weights for sampling

Checkpoints while training are sharded (torch.distributed.checkpoint: one file per process and
a `.metadata` index in one folder, which every process must see: a shared filesystem across
machines). Nothing is gathered for them, so they cost no extra memory, and they load back
exactly, also into another number of processes. The final model is gathered once, on the main
process (on the CPU when `cpu_offload` is set), and saved as a plain checkpoint.

Torch is imported inside the functions: the settings model is read when a recipe is validated.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlhfx import distributed

PARALLELISM = ("ddp", "fsdp")


class FsdpSettings(BaseModel):
    """`[run.fsdp]` (or `[stages.<id>.fsdp]`): how FSDP2 shards, offloads and casts."""

    model_config = ConfigDict(extra="forbid")
    #: Keep the sharded weights, gradients and optimizer state in CPU memory; the optimizer
    #: step runs on the CPU. Saves GPU memory for a slower step (no effect on a CPU run).
    cpu_offload: bool = False
    #: Compute dtype of the gathered weights in forward/backward; gradients are reduced and
    #: the sharded master weights kept in float32. `no`: the model's own dtype throughout.
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    #: Free each block's gathered weights after its forward (gathered again for backward):
    #: the least memory. `false` keeps them until backward: less communication, more memory.
    reshard_after_forward: bool = True
    #: Class names of the modules to shard as units (e.g. ["LlamaDecoderLayer"]). Empty: the
    #: blocks of the model's largest list of identical layers (its transformer blocks).
    layer_classes: list[str] = Field(default_factory=list)


class Parallelism(BaseModel):
    """What a stage runs with: `ctx.parallelism` (from `[run]`, overridden by the stage table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: `ddp`: every process holds the whole model (gradients averaged); `fsdp`: sharded.
    mode: Literal["ddp", "fsdp"] = "ddp"
    fsdp: FsdpSettings = Field(default_factory=FsdpSettings)

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp"


def merged(base: Parallelism, mode: str | None, fsdp: FsdpSettings | None) -> Parallelism:
    """`base` with a stage's own `parallelism` and the `fsdp` keys it set on top."""
    settings = base.fsdp
    if fsdp is not None:
        settings = base.fsdp.model_copy(update={k: getattr(fsdp, k) for k in fsdp.model_fields_set})
    return Parallelism(mode=mode or base.mode, fsdp=settings)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ sharding


def transformer_blocks(model: Any, layer_classes: list[str] | tuple[str, ...] = ()) -> list[Any]:
    """The modules FSDP shards as units.

    Named classes when given; otherwise the children of the `ModuleList` of identical modules
    holding the most parameters (GPT-Neo's `transformer.h`, Llama's `model.layers`, ...).
    """
    import torch

    if layer_classes:
        wanted = set(layer_classes)
        return [m for m in model.modules() if type(m).__name__ in wanted]
    best: list[Any] = []
    best_size = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        kinds = {type(child) for child in module}
        if len(kinds) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = list(module), size
    return best


def device_mesh(device: str = "cpu") -> Any:
    """A one-dimensional mesh over every process (gloo on the CPU, NCCL on GPUs)."""
    from torch.distributed.device_mesh import init_device_mesh

    distributed.ensure_group(device)
    return init_device_mesh(device, (distributed.world_size(),))


def shard_model(model: Any, settings: FsdpSettings | None = None, device: str = "cpu") -> Any:
    """Shard `model` in place with FSDP2 and return it (call before creating its optimizer).

    Works with one process too (a one-process group is made when none exists): the model then
    holds its full weights but runs the same code path, which is what a one-GPU check needs.
    The model's parameters should already be on `device` (or on the CPU with `cpu_offload`).
    """
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    settings = settings or FsdpSettings()
    mesh = device_mesh(device)
    options: dict[str, Any] = {"mesh": mesh}
    if settings.mixed_precision != "no":
        dtype = torch.bfloat16 if settings.mixed_precision == "bf16" else torch.float16
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    if settings.cpu_offload and device != "cpu":
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
    blocks = transformer_blocks(model, settings.layer_classes)
    if settings.layer_classes and not blocks:
        from rlhfx.errors import UserError

        raise UserError(
            f"fsdp.layer_classes: no module of the model is a {', '.join(settings.layer_classes)}"
        )
    for block in blocks:
        fully_shard(block, reshard_after_forward=settings.reshard_after_forward, **options)
    # The root keeps its weights gathered after forward: backward needs them first anyway.
    fully_shard(model, reshard_after_forward=False, **options)
    model._rlhfx_reshard = settings.reshard_after_forward  # restored by gathered_weights
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def holds_shards(model: Any) -> bool:
    """True when the model or any module inside it is sharded (PPO's policy with its value
    head is a plain module over two sharded ones)."""
    return bool(_fsdp_units(model))


def _fsdp_units(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered_weights(model: Any) -> Iterator[Any]:
    """Full weights on every process inside the block, for sampling without collectives.

    Inside, each process may call `model.generate(...)` on its own prompts for as many steps
    as it likes: nothing is gathered per forward (calling generate on the sharded model instead
    gathers every block at every token and would hang as soon as two processes stop at
    different lengths). Costs one full copy of the weights per process while inside.
    Gradients must not be computed inside.
    """
    if not is_sharded(model):
        yield model
        return
    import torch

    units = _fsdp_units(model)
    for unit in units:
        unit.unshard()
    # Keep them gathered across forwards; restored (and resharded) on the way out.
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        with torch.no_grad():
            yield model
    finally:
        for unit in units:
            unit.reshard()
        _restore_reshard(model, units)


def gathered_weights_of(*models: Any) -> AbstractContextManager[Any]:
    """`gathered_weights` of several models at once (None and unsharded ones skipped): the
    policy and its reference copy for a no-gradient pass whose number of forwards differs
    between processes. Collective: every process enters it, with data or not."""
    stack = ExitStack()
    for model in models:
        if model is not None and is_sharded(model):
            stack.enter_context(gathered_weights(model))
    return stack


def _restore_reshard(model: Any, units: list[Any]) -> None:
    for unit in units:
        # The root keeps its weights after forward (see shard_model); blocks free theirs
        # unless the settings said otherwise (recorded on the module when sharded).
        keep = unit is model or not getattr(model, "_rlhfx_reshard", True)
        unit.set_reshard_after_forward(not keep, recurse=False)


# ------------------------------------------------------------------------------ state


def full_state_dict(model: Any) -> dict[str, Any]:
    """Every full weight, as CPU tensors, on the main process ({} on the others).

    Gathered one tensor at a time onto the CPU, so the GPU never holds the whole model.
    """
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return state if distributed.is_main() else {}


def without_tied_copies(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """`state` less the second names of tied weights (an LM head tied to the embeddings).

    Gathered, a tied weight comes out once per name; a saved checkpoint holds it once, and
    `from_pretrained` ties it again.
    """
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    kept = {name for name, _ in model.named_parameters()}
    return {k: v for k, v in state.items() if k not in every - kept}


def load_full_state_dict(model: Any, state: dict[str, Any]) -> None:
    """Load full weights held by the main process into the sharded model (others pass {})."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # A copy: loading replaces the dict's tensors with the model's shards in place.
    set_model_state_dict(
        model, dict(state),
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )


def save_hf_checkpoint(model: Any, target: str | Path, tokenizer: Any = None) -> Path | None:
    """The gathered model as a plain Hugging Face checkpoint in `target` (main process only).

    Written beside `target` and renamed into place, so a kill never leaves half a model.
    Returns `target` on the main process, None on the others.
    """
    target = Path(target)
    lora = is_sharded(model) and hasattr(model, "merge_and_unload")
    state: dict[str, Any] | None = full_state_dict(model)
    if not distributed.is_main():
        return None
    if lora:  # LoRA over a sharded base: merged in a plain copy, which saves itself
        assert state is not None
        model, state = merged_lora_copy(model, state), None
    else:
        state = without_tied_copies(model, state or {})
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, state_dict=state)
    name_plain_class(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def merged_lora_copy(model: Any, state: dict[str, Any]) -> Any:
    """A plain (unsharded) copy of a sharded LoRA model from its gathered `state`, with the
    adapters merged into the base weights (main process; the copy is on the CPU).

    A sharded model cannot merge in place: each process holds a slice of every weight.
    """
    merged = plain_lora_copy(model, state).merge_and_unload()
    if getattr(model, "generation_config", None) is not None:
        merged.generation_config = model.generation_config
    return merged


def plain_lora_copy(model: Any, state: dict[str, Any]) -> Any:
    """A plain (unsharded) peft model like the sharded `model`, holding the gathered `state`
    (main process; on the CPU): it can save its adapter and merge."""
    import torch
    from peft import get_peft_model

    base = model.get_base_model()
    with torch.device("cpu"):
        plain = plain_class(base)(base.config)
    plain.to(next(iter(state.values())).dtype)
    wrapped = get_peft_model(plain, model.peft_config[model.active_adapter])
    wrapped.load_state_dict(state)
    return wrapped


def plain_class(model: Any) -> type:
    """The model's own class (FSDP2 makes a sharded module an instance of a subclass)."""
    return _unwrapped_class(model) if is_sharded(model) else type(model)


def name_plain_class(model: Any, folder: Path) -> None:
    """Make a saved config name the model's own class, not FSDP's wrapper around it."""
    if not is_sharded(model):
        return
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["architectures"] = [_unwrapped_class(model).__name__]
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _unwrapped_class(model: Any) -> type:
    from torch.distributed.fsdp import FSDPModule

    for cls in type(model).__mro__[1:]:
        if not issubclass(cls, FSDPModule):
            return cls
    return type(model)  # pragma: no cover


def save_training_state(model: Any, optimizer: Any, folder: str | Path) -> None:
    """The sharded weights and optimizer state in `folder` (each process writes its part).

    Written into `folder.partial` then renamed by the main process, so a kill mid-save leaves
    the previous checkpoint usable.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    if distributed.is_main() and tmp.exists():
        shutil.rmtree(tmp)
    distributed.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
    distributed.barrier()
    if distributed.is_main():
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    distributed.barrier()


def load_training_state(model: Any, optimizer: Any, folder: str | Path) -> None:
    """Restore what `save_training_state` wrote: the same numbers, bit for bit."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])


# ------------------------------------------------------------------------------ memory


def local_bytes(tensor: Any) -> int:
    """Bytes this process holds for `tensor` (its shard, for a sharded tensor)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return int(tensor.numel() * tensor.element_size())


def local_parameter_bytes(model: Any, optimizer: Any = None) -> int:
    """Parameter plus optimizer-state bytes held by this process (shards, not full tensors).

    Counted from the tensors themselves, so it is what sharding saves, whatever the device.
    Tied weights count once.
    """
    import torch

    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += local_bytes(param)
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    total += local_bytes(value)
    return total
