"""Reward and KL curves of a PPO run, redrawn after every step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfx.plotting import reward_curve

REWARD_CURVES = {
    "env/reward_mean": "mean score of the step's responses",
    "eval/reward_mean": "eval prompts (low temperature)",
}
KL_CURVES = {"objective/kl": "mean KL per response (vs reference)"}


def draw(records: Sequence[Mapping[str, Any]], stage_dir: Path) -> None:
    reward_curve(records, stage_dir / "reward_curve.png", REWARD_CURVES,
                 title="PPO: reward per step", x_key="step")
    _kl_curve(records, stage_dir / "kl_curve.png")


def _kl_curve(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    # core's reward_curve labels its y axis "mean reward"; the KL plot needs its own axes,
    # with the coefficient the adaptive controller set on a second scale.
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    points = [(r["step"], r["objective/kl"]) for r in records if r.get("objective/kl") is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, label=KL_CURVES["objective/kl"])
    coef = [(r["step"], r["objective/kl_coef"]) for r in records
            if r.get("objective/kl_coef") is not None]
    if coef:
        twin = ax.twinx()
        xs, ys = zip(*coef, strict=True)
        twin.plot(xs, ys, color="tab:red", linestyle="--", label="KL coefficient")
        twin.set_ylabel("KL coefficient", color="tab:red")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("PPO step")
    ax.set_ylabel("KL (nats per response)")
    ax.set_title("PPO: KL to the reference policy")
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
