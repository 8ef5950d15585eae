"""SIGTERM, what Slurm and Kubernetes send before they kill a job, stops a run without losing
its work.

Inside the alignment loop (`deferred()`), the first SIGTERM only sets a flag: the loop finishes
the current iteration, writes a checkpoint and raises `Terminated`, which the CLI turns into
exit status 143 and "resume with the same command". A second signal stops at once. Elsewhere
(the Trainer stages, which checkpoint on their own schedule) a SIGTERM stops at once, as Ctrl-C
does, and the run resumes from the stage's last checkpoint. Under torchrun every process calls
`stop_agreed()` at the same point of each iteration, so all stop after the same iteration even
when the signal reached only some of them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from rlhfx import distributed

#: The exit status of a process ended by SIGTERM (128 + 15), as shells report it.
EXIT_STATUS = 143
RESUME = "resume with the same command"


class Terminated(KeyboardInterrupt):
    """The run was stopped by SIGTERM; the message says what was kept."""

    exit_code = EXIT_STATUS


class _Flag:
    deferring = False
    requested = False
    exiting = False  # the checkpoint is written and the run is unwinding: nothing to add


def _on_sigterm(signum: int, frame: Any) -> None:
    if _Flag.exiting:  # e.g. torchrun's SIGTERM once another process has already stopped
        return
    if _Flag.deferring and not _Flag.requested:
        _Flag.requested = True  # the loop stops after this iteration, with a checkpoint
        return
    if distributed.world_size() > 1:  # torchrun stops every process when one fails
        raise Terminated(f"process {distributed.rank()} of {distributed.world_size()} stopped "
                         "by the launcher (SIGTERM: another process of this run failed or "
                         "was killed, or the job was stopped); run the same command again "
                         "to resume")
    raise Terminated(f"stopped by SIGTERM; {RESUME} (it continues from the last checkpoint)")


def install() -> Callable[[], None]:
    """Handle SIGTERM as above (main thread only; elsewhere the default stays). Returns what
    puts the previous handler back (a run inside a longer-lived process, e.g. tests)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    _Flag.exiting = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, the first SIGTERM waits for `stop_agreed()` instead of stopping at once."""
    _Flag.deferring, _Flag.requested = True, False
    try:
        yield
    finally:
        _Flag.deferring, _Flag.requested = False, False


def stopped_after(iteration: int, total: int) -> Terminated:
    """The error ending a run whose checkpoint of `iteration` was written after a SIGTERM;
    signals after it change nothing."""
    _Flag.exiting = True
    return Terminated(f"stopped by SIGTERM after iteration {iteration} of {total} (its "
                      f"checkpoint is written); {RESUME}")


def stop_agreed() -> bool:
    """Whether any process was asked to stop (collective under torchrun: every process
    calls it at the same point)."""
    if distributed.world_size() <= 1:
        return _Flag.requested
    return any(distributed.gather_objects(_Flag.requested))
