"""Process-group helpers for runs under `torchrun` (one process per device or CPU worker).

A single process needs none of this: every helper degrades to the obvious local answer.

Several machines: start one `torchrun` per machine with the same `--nnodes`, `--rdzv_endpoint`
and a distinct `--node_rank`. `RANK` is then the global rank (the main process, rank 0, writes
the run's files) and `LOCAL_RANK` the rank on this machine. Per-machine caches (the converted
GGUF model) are made once per cache directory: one process converts under a lock file while
the others wait (model_sources.materialize_gguf), so once per machine, or once in all when
the cache is on a shared filesystem.

A process that dies (killed, out of memory) must not leave the others waiting forever in a
collective: the group is created with a timeout (`[run] timeout_s`, or the environment
variable `RLHFX_TIMEOUT_S`, which wins; default 1800 s), after which a waiting process fails
with a one-line message instead of hanging. Under `torchrun` the launcher notices the dead
process sooner and stops the others itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import time
from datetime import timedelta
from typing import Any

TIMEOUT_ENV = "RLHFX_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
# seconds an exiting process waits for gloo's worker threads (see _leave_group)
_WORKERS_SETTLE_S = 0.2


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """The rank among this machine's processes (0 on a single-process run)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def node_rank() -> int:
    return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0")))


def is_main() -> bool:
    return rank() == 0


def is_local_main() -> bool:
    """The first process on this machine: the one that fills machine-local caches."""
    return local_rank() == 0


def timeout_seconds(configured: float | None = None) -> float:
    """`RLHFX_TIMEOUT_S` when set, else the recipe's `[run] timeout_s`, else 1800."""
    from rlhfx.errors import UserError

    raw = os.environ.get(TIMEOUT_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{TIMEOUT_ENV}={raw!r}: not a number of seconds") from None
        if value <= 0:
            raise UserError(f"{TIMEOUT_ENV}={raw!r}: must be more than 0 seconds")
        return value
    return float(configured) if configured else DEFAULT_TIMEOUT_S


def init(timeout_s: float | None = None) -> None:
    """Join the process group torchrun set up (gloo on the CPU, nccl on GPUs).

    `timeout_s` bounds how long a collective waits for a process that stopped answering.
    """
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(
            backend=backend, timeout=timedelta(seconds=timeout_seconds(timeout_s))
        )
        atexit.register(_leave_group)
        if backend == "nccl":
            torch.cuda.set_device(local_rank())


def _leave_group() -> None:
    """Give gloo's worker threads a moment, then leave the group, before the interpreter exits.

    A worker thread lets go of a collective's tensors a moment after the caller has woken.
    Letting go of a tensor Python has seen takes the GIL, and a thread that asks a finalizing
    interpreter for it is ended in a way C++ answers with std::terminate: SIGABRT ("terminate
    called without an active exception") in a process whose work was done, whenever the last
    collective came just before the exit. Leaving the group does not join those threads, so
    the pause is what closes the gap.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        time.sleep(_WORKERS_SETTLE_S)
        with contextlib.suppress(Exception):  # exiting anyway; a peer may be gone
            dist.destroy_process_group()


def ensure_group(device: str = "cpu") -> None:
    """A process group for code that needs one (FSDP), also in a single process.

    Under torchrun this is `init()`; a lone process gets a one-member group (gloo on the CPU,
    NCCL on a GPU) that needs no launcher.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if world_size() > 1:
        init()
        return
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend, store=dist.HashStore(), rank=0, world_size=1,
        timeout=timedelta(seconds=timeout_seconds()),
    )


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


def lost_contact(exc: BaseException) -> Exception | None:
    """A one-line error for a collective that failed because another process is gone.

    gloo and NCCL raise as soon as a peer's connection closes (a killed process), or after
    the group's timeout when a peer stops answering; either way the run cannot go on, and
    the next launch resumes it.
    """
    if world_size() <= 1:
        return None
    import torch.distributed as dist

    text = str(exc)
    gone = isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError)
        and any(s in text for s in ("Connection closed by peer", "Connection reset by peer",
                                    "Timed out waiting", "gloo", "NCCL"))
    )
    if not gone:
        return None
    from rlhfx.errors import UserError

    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # gloo's source location
    return UserError(
        f"process {rank()} of {world_size()} lost contact with the others (one died, was "
        f"killed or stopped answering): {first[:200]}; run the same command again to resume"
    )
