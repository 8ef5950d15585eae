"""Warnings for reward hacking and broken estimates, the same for every algorithm.

LMFlow's HH run without a `#` rule lost half its responses to `#` and distinct-2 fell from 0.39
to 0.22; PPO on the same reward learned to spam `:)`; a KL estimate that turns negative means
the sampled tokens were not drawn from the policy as it is. Each shows up in one number of the
iteration's record long before anyone reads the samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlhfx.alignment.config import AlgorithmConfig


def check(
    first: Mapping[str, Any] | None, record: Mapping[str, Any], c: AlgorithmConfig
) -> list[str]:
    """Messages for `record`, compared with the first iteration's record where that matters."""
    messages: list[str] = []
    if first is not None:
        d0, d = first.get("distinct_2"), record.get("distinct_2")
        fraction = c.distinct2_warn_fraction
        if fraction > 0 and d0 and d is not None and d < fraction * d0:
            messages.append(
                f"distinct-2 fell to {d:.3f}, below {fraction:g} x its first value {d0:.3f}: "
                "the policy may be repeating itself to please the reward"
            )
        r0, r = first.get("cleaned_rate", 0.0), record.get("cleaned_rate", 0.0)
        if r - r0 > c.cleaner_rate_warn_increase:
            messages.append(
                f"cleaners changed or discarded {r:.0%} of responses (first iteration: "
                f"{r0:.0%}): the policy may be learning a pattern the cleaners exist to catch"
            )
    discarded = record.get("discarded_rate", 0.0)
    if c.discard_rate_warn < 1 and discarded > c.discard_rate_warn:
        messages.append(f"{discarded:.0%} of the samples were discarded: little is left to "
                        "learn from (see the samples file's discard_reason)")
    nonfinite = record.get("nonfinite_rewards", 0)
    if nonfinite:
        messages.append(f"{nonfinite} samples had a NaN or infinite reward and were dropped")
    kl = record.get("kl_mean")
    if isinstance(kl, int | float):
        if kl < -c.kl_negative_tolerance:
            messages.append(
                f"mean KL {kl:.3f} is below -{c.kl_negative_tolerance:g}. The estimate assumes "
                "every trained token was sampled from the policy as it is; likely causes: "
                "changed sampling settings (min_length, top_k/top_p, temperature, repetition "
                "penalty) or tokens that differ from the sampled ones. With a negative KL the "
                "penalty turns into a bonus and the policy drifts."
            )
        elif c.kl_warn_above is not None and kl > c.kl_warn_above:
            messages.append(f"mean KL {kl:.3f} is above kl_warn_above ({c.kl_warn_above:g}): "
                            "the policy is moving far from the reference")
    return messages
