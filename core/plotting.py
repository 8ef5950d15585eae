"""Curves of an alignment run as PNG files (matplotlib's Agg backend: no display needed).

`reward_curve` draws one; `BackgroundPlotter` redraws them in a helper process, so a training
loop that updates its curves every iteration never waits for matplotlib (a draw costs a tenth
of a second or more of CPU: as much as a tiny model's whole training step).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: metric key -> legend label, in drawing order (the curves of the RAFT paper's figure).
DEFAULT_CURVES = {
    "reward_mean": "model reward (all samples)",
    "trained_reward_mean": "samples trained on",
    "eval_reward_mean": "eval prompts (low temperature)",
}
KL_CURVES = {"kl_mean": "mean KL per response (vs the reference)"}


def loop_figures(
    records: Sequence[Mapping[str, Any]], stage_dir: Path, algorithm: str
) -> list[dict[str, Any]]:
    """The alignment loop's figures: the reward curve, and the KL curve when there is a KL."""
    figures = [{"records": _only(records, DEFAULT_CURVES), "path": str(stage_dir /
                "reward_curve.png"), "title": f"{algorithm}: reward per iteration",
                "curves": DEFAULT_CURVES, "ylabel": "mean reward"}]
    if any(r.get("kl_mean") is not None for r in records):
        figures.append({"records": _only(records, KL_CURVES), "path": str(stage_dir /
                        "kl_curve.png"), "title": f"{algorithm}: KL to the reference",
                        "curves": KL_CURVES, "ylabel": "KL (nats per response)"})
    return figures


def _only(records: Sequence[Mapping[str, Any]], keys: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("step", *keys) if k in r} for r in records]


def reward_curve(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    curves: Mapping[str, str] = DEFAULT_CURVES,
    title: str = "reward per iteration",
    x_key: str = "step",
    ylabel: str = "mean reward",
) -> Path:
    """Draw each metric in `curves` against `x_key` (records without the metric are skipped).

    The file is replaced atomically, so a viewer (or a kill) never sees a half-written image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    # Fixed margins instead of tight_layout, which costs as much as the rest of the drawing.
    ax = fig.add_axes((0.1, 0.12, 0.86, 0.8))
    for key, label in curves.items():
        points = [(r[x_key], r[key]) for r in records if r.get(key) is not None and x_key in r]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 1})  # fast to encode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


class BackgroundPlotter:
    """Draws reward curves in a child process that reads one JSON request a line on stdin.

    The child skips to the newest request when several are waiting, and exits when its stdin
    closes, which also happens when the parent is killed. `close()` waits for the last
    drawing and, should the child have failed, draws it in this process instead.
    """

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._last: dict[str, Any] | None = None
        self._broken = False

    def submit(
        self, records: Sequence[Mapping[str, Any]], path: str | Path, title: str = "reward"
    ) -> None:
        self._last = {"figures": [{"records": [dict(r) for r in records], "path": str(path),
                                   "title": title}]}
        self._send()

    def submit_many(self, figures: Sequence[Mapping[str, Any]]) -> None:
        """Draw several figures (each a `reward_curve` keyword set) as one request, so the
        child's skipping to the newest request never drops one of them."""
        self._last = {"figures": [dict(f) for f in figures]}
        self._send()

    def _send(self) -> None:
        if self._broken:
            return
        try:
            if self._child is None:
                self._child = subprocess.Popen(
                    [sys.executable, "-c", "from rlhfx.plotting import _serve; _serve()"],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            assert self._child.stdin is not None
            line = json.dumps(self._last, default=str) + "\n"
            self._child.stdin.write(line.encode("utf-8"))
            self._child.stdin.flush()
        except OSError:
            self._broken = True

    def close(self, timeout: float = 60.0) -> None:
        child, self._child = self._child, None
        ok = False
        if child is not None:
            try:
                if child.stdin is not None:
                    child.stdin.close()
                ok = child.wait(timeout=timeout) == 0
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
        if self._last is not None and not ok:
            _draw(self._last)
        self._last = None


def _serve() -> None:
    """The child's loop: draw the newest waiting request; stop at end of input.

    It runs at a lower priority, so on a busy machine the training loop gets the CPU first
    and the curve lags a little instead.
    """
    import select

    with contextlib.suppress(OSError):
        os.nice(10)

    stream = sys.stdin.buffer
    while True:
        line = stream.readline()
        if not line:
            return
        while select.select([stream], [], [], 0)[0]:  # newer requests waiting: skip ahead
            newer = stream.readline()
            if not newer:
                break
            line = newer
        _draw(json.loads(line))


def _draw(request: Mapping[str, Any]) -> None:
    for figure in request["figures"]:
        reward_curve(**figure)
