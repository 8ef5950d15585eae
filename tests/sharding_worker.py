"""Run under `torchrun --nproc_per_node 2` by tests/test_sharding.py (not a test itself).

Shards the built-in tiny GPT-Neo with FSDP2, trains it with AdamW, and writes what the test
checks into OUT: each rank's memory figures, the gathered model after 2 steps (a plain HF
checkpoint), the weights after steps 3-4 trained straight through and after resuming from a
sharded checkpoint, and greedy samples drawn with gathered weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from rlhfx import distributed, sharding
from rlhfx.tiny import tiny_causal_lm

BATCH, LENGTH, LR = 8, 12, 1e-3


def batch(step: int) -> torch.Tensor:
    """The same full batch on every process (and in the test's one-process reference)."""
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randint(2, 300, (BATCH, LENGTH), generator=generator)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    ids = batch(step)
    share = ids.chunk(distributed.world_size())[distributed.rank()]  # this process's half
    loss = model(input_ids=share, labels=share).loss
    loss.backward()  # FSDP averages the gradients over processes: the full batch's mean
    optimizer.step()
    optimizer.zero_grad()


def fresh(settings: sharding.FsdpSettings) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = sharding.shard_model(tiny_causal_lm("builtin:tiny-gpt-neo").train(), settings)
    return model, torch.optim.AdamW(model.parameters(), lr=LR)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    distributed.init(timeout_s=120)
    rank = distributed.rank()
    settings = sharding.FsdpSettings()
    model, optimizer = fresh(settings)
    figures = {
        "blocks": len(sharding.transformer_blocks(tiny_causal_lm("builtin:tiny-gpt-neo"))),
        "params_bytes": sharding.local_parameter_bytes(model),
    }
    for step in (1, 2):
        train_step(model, optimizer, step)
    figures["params_and_adam_bytes"] = sharding.local_parameter_bytes(model, optimizer)

    sharding.save_hf_checkpoint(model, out / "after2")
    sharding.save_training_state(model, optimizer, out / "state2")
    for step in (3, 4):
        train_step(model, optimizer, step)
    straight = sharding.full_state_dict(model)

    # A new process would start like this: a fresh model, then the sharded checkpoint.
    resumed, resumed_optimizer = fresh(settings)
    sharding.load_training_state(resumed, resumed_optimizer, out / "state2")
    for step in (3, 4):
        train_step(resumed, resumed_optimizer, step)
    again = sharding.full_state_dict(resumed)

    # Full weights into a sharded model and back out unchanged.
    reloaded, _ = fresh(settings)
    sharding.load_full_state_dict(reloaded, straight)
    round_trip = sharding.full_state_dict(reloaded)

    # Sampling with gathered weights: the processes stop at different lengths, no hang.
    prompt = batch(0)[:2, :4]
    with sharding.gathered_weights(model):
        sample = model.generate(prompt, do_sample=False, max_new_tokens=3 + 4 * rank,
                                min_new_tokens=3 + 4 * rank, pad_token_id=0)
    figures["sample"] = sample.tolist()
    # After the block the model is sharded again and trains on.
    train_step(model, optimizer, 5)
    figures["params_after_sampling"] = sharding.local_parameter_bytes(model)

    if distributed.is_main():
        torch.save(straight, out / "straight.pt")
        torch.save(again, out / "resumed.pt")
        torch.save(round_trip, out / "round_trip.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(figures), encoding="utf-8")
    distributed.barrier()


if __name__ == "__main__":
    main()
