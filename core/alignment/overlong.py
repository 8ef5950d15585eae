"""The training reward's penalty for answers that run to the length limit.

An answer cut at `max_new_tokens` loses `unfinished_penalty` (the hard form of DAPO's overlong
penalty, Yu et al. 2025). With `overlong_buffer = B` an answer that ended by itself within the
last B tokens before the limit loses a share of it growing linearly with its length (DAPO's soft
overlong punishment): RAFT then keeps answers that end with room to spare, rather than ones
that only just fit and, sampled again, often do not.
"""

from __future__ import annotations


def overlong_penalty(tokens: int, finished: bool, limit: int, buffer: int,
                     penalty: float) -> float:
    """What the reward loses: `penalty` when cut at the limit; for an answer that ended by
    itself after `limit - buffer` tokens, `penalty * (tokens - (limit - buffer)) / buffer`
    (at most `penalty`); otherwise 0."""
    if not finished:
        return penalty
    start = limit - buffer
    if buffer <= 0 or tokens <= start:
        return 0.0
    return penalty * min(tokens - start, buffer) / buffer
