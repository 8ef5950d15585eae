"""Warnings for reward hacking seen in earlier runs: collapsing diversity, climbing cleaner rates.

LMFlow's HH run without a `#` rule lost half its responses to `#` and distinct-2 fell from 0.39
to 0.22; PPO on the same reward learned to spam `:)`. Both show up in these two numbers long
before anyone reads the samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def cleaner_rate(record: Mapping[str, Any]) -> float:
    """Share of responses a cleaner discarded or changed beyond surrounding whitespace."""
    return float(record.get("cleaned_rate", 0.0))


def check(
    history: Sequence[Mapping[str, Any]],
    record: Mapping[str, Any],
    distinct2_fraction: float,
    rate_increase: float,
) -> list[str]:
    """Messages for `record` compared with the first iteration's record in `history`."""
    first = next((r for r in history if r.get("step", 0) >= 1), None)
    if first is None:
        return []
    messages = []
    d0, d = first.get("distinct_2"), record.get("distinct_2")
    if distinct2_fraction > 0 and d0 and d is not None and d < distinct2_fraction * d0:
        messages.append(
            f"distinct-2 fell to {d:.3f}, below {distinct2_fraction:g} x its first value "
            f"{d0:.3f}: the policy may be repeating itself to please the reward"
        )
    r0, r = cleaner_rate(first), cleaner_rate(record)
    if r - r0 > rate_increase:
        messages.append(
            f"cleaners changed or discarded {r:.0%} of responses (first iteration: {r0:.0%}): "
            f"the policy may be learning a pattern the cleaners exist to catch"
        )
    return messages
