"""LoRA options shared by every stage and algorithm that can train adapters (peft).

One definition, so `lora = { r = 16, alpha = 32 }` means the same in the sft, reward_model,
raft and ppo tables. Defaults are the seed's reward-model LoRA (r=16, alpha=32, dropout=0.1).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rlhfx.components import ComponentConfig


class LoraSettings(ComponentConfig):
    """LoRA adapters (peft) instead of full fine-tuning; merged into a full model at the end."""

    #: Rank of the update matrices.
    r: int = Field(default=16, ge=1)
    #: Scaling numerator: the update is scaled by alpha / r (an integer, as peft stores it).
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    #: Module names to adapt; unset lets peft pick the usual ones for the architecture.
    target_modules: list[str] | None = None

    def peft_config(self, task_type: str) -> Any:
        """The `peft.LoraConfig` for a task type ("CAUSAL_LM" or "SEQ_CLS")."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type=task_type,
        )

    def wrap(self, model: Any, task_type: str = "CAUSAL_LM", where: str = "lora") -> Any:
        """`model` with LoRA adapters (peft's get_peft_model).

        peft rejects settings that do not fit the model (target modules it cannot find, say)
        with a ValueError; that is the user's to fix, so it becomes a one-line UserError
        starting with `where` (a recipe key, or just "lora").
        """
        from peft import get_peft_model

        from rlhfx.errors import UserError

        try:
            return get_peft_model(model, self.peft_config(task_type))
        except ValueError as exc:  # peft's NoMatchingPeftModuleError is a ValueError too
            message = " ".join(str(exc).split())
            raise UserError(f"{where}: {message}") from None
