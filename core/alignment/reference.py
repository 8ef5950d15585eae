"""Log-probs under the reference policy: a frozen copy, or the LoRA base with adapters off.

With LoRA the reference costs no memory (the same network with the adapter switched off);
otherwise it is a frozen copy of the starting policy, stored in the compute dtype.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from typing import Any


def position_ids_for(attention_mask: Any) -> Any:
    """Positions counted over real tokens only, so padding on either side changes nothing."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


class ReferenceModel:
    """The starting policy for KL terms (`AlignmentSetup.reference(policy)`): the LoRA base
    with adapters off, or a frozen copy of the policy."""

    def __init__(self, policy: Any, dtype: Any = None, frozen: Any = None):
        """`frozen`: a ready frozen copy of the starting policy (a sharded one, say)."""
        self.policy = policy
        self.copy: Any = frozen
        if frozen is None and not hasattr(policy, "disable_adapter"):
            self.copy = copy.deepcopy(policy).eval()
            if dtype is not None:
                self.copy.to(dtype)
            for p in self.copy.parameters():
                p.requires_grad_(False)

    def context(self) -> AbstractContextManager[Any]:
        return self.policy.disable_adapter() if self.copy is None else nullcontext()

    def logits(self, input_ids: Any, attention_mask: Any) -> Any:
        """Logits of every position ([B, L, V], float32), without gradients."""
        import torch

        network = self.policy if self.copy is None else self.copy
        with torch.no_grad(), self.context():
            out = network(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_for(attention_mask),
                use_cache=False,
            )
        return out.logits.float()
