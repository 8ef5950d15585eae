"""Reward curves as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: metric key -> legend label, in drawing order (the curves of the RAFT paper's figure).
DEFAULT_CURVES = {
    "reward_mean": "model reward (all samples)",
    "selected_reward_mean": "selected samples",
    "eval_reward_mean": "eval prompts (low temperature)",
}


def reward_curve(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    curves: Mapping[str, str] = DEFAULT_CURVES,
    title: str = "reward per iteration",
    x_key: str = "step",
) -> Path:
    """Draw each metric in `curves` against `x_key` (records without the metric are skipped).

    The file is replaced atomically, so a viewer (or a kill) never sees a half-written image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for key, label in curves.items():
        points = [(r[x_key], r[key]) for r in records if r.get(key) is not None and x_key in r]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean reward")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
