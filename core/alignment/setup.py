"""What an alignment algorithm is given: everything built, resolved and loaded once.

An algorithm's `setup(setup)` loads what it trains through these methods, so every algorithm
loads policies, references and precision the same way (and a sharded or offloaded run changes
only here).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfx import distributed
from rlhfx.alignment.config import AlgorithmConfig
from rlhfx.alignment.reference import ReferenceModel
from rlhfx.components import Environment, ResponseCleaner, RewardSource, Sample
from rlhfx.errors import UserError
from rlhfx.rollouts import RolloutSettings
from rlhfx.sharding import Parallelism


@dataclass
class AlignmentSetup:
    """The run an algorithm is part of.

    Attributes an algorithm reads: `config` (its own validated options), `tokenizer`,
    `prompts` / `eval_prompts` (text, long prompts already dropped), `cleaners`, `reward`,
    `stop_strings`, `stage_dir`, `log`, `device`, `rank`, `world_size`, `where` (the recipe
    key prefix for error messages: `recipe.toml: stages.align.algorithm`).
    """

    config: AlgorithmConfig
    policy_source: str  # a resolved path, a hub id or `builtin:` name
    tokenizer: Any
    prompts: list[str]
    eval_prompts: list[str]
    cleaners: list[ResponseCleaner]
    reward: RewardSource
    stop_strings: list[str]
    stage_dir: Path
    device: str
    where: str
    #: the stage's seed (the algorithm's `seed` option, else the run's seed for the stage)
    seed: int = 0
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("rlhfx"))
    #: extra fields of each training prompt's row (reference answers...), aligned with prompts
    prompt_fields: list[dict[str, Any]] = field(default_factory=list)
    #: the same for the eval prompts, aligned with eval_prompts
    eval_prompt_fields: list[dict[str, Any]] = field(default_factory=list)
    #: which engine samples the rollouts (the align stage's `rollouts`)
    rollouts: RolloutSettings = field(default_factory=RolloutSettings)
    #: `ddp` (every process holds the whole policy) or `fsdp` (sharded): the stage's choice
    parallelism: Parallelism = field(default_factory=Parallelism)
    #: the environment of multi-turn episodes (None: one reply per prompt), and its recipe key
    environment: Environment | None = None
    environment_key: str = "environment"

    # ------------------------------------------------------------------ processes
    @property
    def rank(self) -> int:
        return distributed.rank()

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    @property
    def is_main(self) -> bool:
        return distributed.is_main()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        return distributed.gather_objects(obj)

    def broadcast(self, obj: Any) -> Any:
        """The main process's `obj` on every process."""
        return distributed.broadcast_object(obj)

    def barrier(self) -> None:
        distributed.barrier()

    # ------------------------------------------------------------------ models
    @property
    def compute_dtype(self) -> str:
        """The algorithm's `dtype` made concrete for this device ("auto" resolved)."""
        from rlhfx.hardware import resolve_dtype

        return resolve_dtype(self.config.dtype, self.device)

    def load_policy(self, frozen_base_dtype: str | None = None, shard: bool = True) -> Any:
        """The policy to train, on this process's device, with float32 weights (small updates
        vanish in half-precision weights; `compute_dtype` is the compute precision, see
        `autocast`). With `config.lora`, LoRA adapters (float32, the same initial values on
        every process) over a frozen base stored in `frozen_base_dtype` (default
        `compute_dtype`: it never trains).

        Under `parallelism = "fsdp"` the policy comes back sharded (FSDP2, after the LoRA
        wrapping): build its optimizer from it afterwards. `shard=False` leaves that to the
        algorithm (`shard`), for one that wraps the policy in a module of its own first."""
        import torch

        from rlhfx.dropout import use_bits_dropout
        from rlhfx.models import load_causal_lm

        c = self.config
        if self.compute_dtype == "float16" and not self.device.startswith("cuda"):
            raise UserError(f"{self.where}.dtype: float16 needs a CUDA device (its gradients "
                            "need loss scaling); use bfloat16 on the CPU")
        dtype = "float32" if c.lora is None else (frozen_base_dtype or self.compute_dtype)
        policy = load_causal_lm(self.policy_source, dtype=dtype, device=self.device)
        if c.lora is not None:
            torch.manual_seed(self.seed)  # the same adapter initialisation on every process
            policy = c.lora.wrap(policy, "CAUSAL_LM", where=f"{self.where}.lora")
        use_bits_dropout(policy)
        return self.shard(policy) if shard else policy

    @property
    def sharded(self) -> bool:
        """True under `parallelism = "fsdp"`: the policy (and the reference copy) are sharded."""
        return self.parallelism.sharded

    def shard(self, model: Any, small: bool = False) -> Any:
        """`model` sharded with FSDP2 per the stage's `fsdp` settings (unchanged under `ddp`).
        `small`: a module without transformer blocks (a value head), sharded as one unit
        whatever `fsdp.layer_classes` names. Collective: every process calls it, before
        building the optimizer."""
        if not self.sharded:
            return model
        from rlhfx.sharding import shard_model

        settings = self.parallelism.fsdp
        if small:
            settings = settings.model_copy(update={"layer_classes": []})
        return shard_model(model, settings, _mesh_device(self.device))

    def reference(self, policy: Any) -> ReferenceModel:
        """Log-probs under the starting policy: the LoRA base with adapters off (no copy),
        or a frozen copy stored in the compute dtype. Make it before the first update.

        Under `fsdp` the frozen copy is loaded again from the policy's source (a sharded model
        cannot be copied) and sharded like the policy; collective: every process calls it."""
        import torch

        from rlhfx.models import load_causal_lm

        dtype = getattr(torch, self.compute_dtype)
        if not self.sharded or hasattr(policy, "disable_adapter"):
            return ReferenceModel(policy, dtype)
        frozen = load_causal_lm(self.policy_source, dtype="float32", device=self.device)
        frozen.eval().to(dtype)
        for p in frozen.parameters():
            p.requires_grad_(False)
        return ReferenceModel(policy, dtype, frozen=self.shard(frozen))

    def autocast(self) -> AbstractContextManager[Any]:
        """Forward passes in `compute_dtype` over float32 weights (a no-op for float32).
        On the CPU autocast knows only bfloat16."""
        import torch

        dtype = self.compute_dtype
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        if dtype == "float32" or (device_type == "cpu" and dtype != "bfloat16"):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))

    # ------------------------------------------------------------------ scoring
    def clean_and_score(self, samples: Sequence[Sample]) -> None:
        """Clean and score samples the algorithm made itself, as the loop does its own.
        Under several processes every process must call it (a reward may gather)."""
        from rlhfx.scoring import clean_and_score

        stage = self.where.rsplit(".", 1)[0]  # `recipe.toml: stages.align`
        clean_and_score(samples, self.cleaners, self.reward, where=f"{stage}.reward")


def _mesh_device(device: str) -> str:
    """The device type a mesh is built over ("cuda:1" -> "cuda")."""
    return device.split(":", 1)[0]
