"""Online DPO's own options. The options every algorithm shares (iterations, response lengths,
LoRA, dtype, eval, guards, checkpoints) come from `rlhfx.AlgorithmConfig`.

Imported at every CLI start, so nothing here may import torch or transformers.
"""

from __future__ import annotations

from pydantic import Field

from rlhfx import AlgorithmConfig


class OnlineDPOConfig(AlgorithmConfig):
    #: Prompts sampled per iteration, over all processes.
    batch_size: int = Field(default=16, ge=1)
    #: Responses sampled per prompt; the best and the worst of them form the prompt's pair
    #: (RLHFlow's iterative DPO samples 8).
    k: int = Field(default=4, ge=2)
    #: DPO's beta: how far the policy may move from the reference per unit of preference
    #: (the temperature of the implicit reward beta * log(pi / pi_ref)).
    beta: float = Field(default=0.1, gt=0)
    #: Passes over each iteration's pairs.
    epochs: int = Field(default=1, ge=1)
    #: Pairs per optimiser step over all processes (each process takes its share).
    mini_batch_size: int = Field(default=8, ge=1)
    #: AdamW's learning rate (constant) and weight decay.
    learning_rate: float = Field(default=5e-7, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    #: Clip the gradient norm to this; None: no clipping.
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    #: Turn every dropout off (the policy's and LoRA's), as DPO trainers do: the log-ratios
    #: to the reference are then exact, not dropout noise.
    disable_dropout: bool = True
