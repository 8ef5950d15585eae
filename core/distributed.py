"""Process-group helpers for runs under `torchrun` (one process per device or CPU worker).

A single process needs none of this: every helper degrades to the obvious local answer.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group torchrun set up (gloo on the CPU, nccl on GPUs)."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order, on every process."""
    if world_size() <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """The main process's `obj` on every process (one consistent decision)."""
    if world_size() <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard(items: list[Any]) -> list[Any]:
    """This process's share of `items` (round robin, so shares differ by at most one)."""
    return items[rank() :: world_size()]
