"""The report's figures: PNG files drawn with matplotlib's Agg canvas (no display needed).

Each function draws one figure for one stage and returns None when the stage has nothing to
show for it, so a run that stopped early (or an algorithm that logs other figures) simply gets
fewer figures.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .collect import RunData, StageData

Points = list[tuple[int, float]]


@dataclass
class Chart:
    stage: str
    title: str
    path: Path
    caption: str = ""


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Any, ax: Any, path: Path, legend: bool = True) -> Path:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, _ = ax.get_legend_handles_labels()
    if legend and handles:
        ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)  # a browser showing the old report never sees half an image
    return path


def _line(ax: Any, points: Points, label: str, band: Points | None = None, **style: Any) -> bool:
    if not points:
        return False
    xs, ys = zip(*points, strict=True)
    marker = "o" if len(points) <= 40 else None
    (line,) = ax.plot(xs, ys, marker=marker, markersize=3, label=label, **style)
    if band:
        width = dict(band)
        lo = [y - width.get(x, 0.0) for x, y in points]
        hi = [y + width.get(x, 0.0) for x, y in points]
        ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color(), linewidth=0)
    return True


def _curves(
    stage: StageData, out: Path, key: str, title: str, ylabel: str,
    curves: Sequence[tuple[str, str, str | None]], caption: str = "", ylim: Any = None,
) -> Chart | None:
    """One figure with a line per (series, label, std series) that the stage has."""
    fig, ax = _figure(f"{stage.id}: {title}", _xlabel(stage), ylabel)
    drawn = [
        _line(ax, stage.series(name), label, stage.series(std) if std else None)
        for name, label, std in curves
    ]
    if not any(drawn):
        return None
    if ylim is not None:
        ax.set_ylim(*ylim)
    return Chart(stage.id, title, _save(fig, ax, out / _file(stage, key)), caption)


def _file(stage: StageData, key: str) -> str:
    """`<stage>-<figure>.png`, with any character a file name should not hold replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stage.id}-{key}") + ".png"


def _xlabel(stage: StageData) -> str:
    return "iteration" if stage.is_alignment else "step"


def reward_chart(stage: StageData, out: Path) -> Chart | None:
    return _curves(stage, out, "reward", "reward", "mean reward", [
        ("reward_mean", "all samples (±1 std)", "reward_std"),
        ("trained_reward_mean", "samples trained on", None),
        ("eval_reward_mean", "eval prompts (±1 std)", "eval_reward_std"),
    ], "Mean reward of every sampled response, of the ones the update trained on (RAFT: the "
       "selected ones), and of the held-out eval prompts. Step 0 is the policy before "
       "alignment.")


def diversity_chart(stage: StageData, out: Path) -> Chart | None:
    return _curves(stage, out, "distinct", "distinct-n", "unique n-grams / all n-grams", [
        ("distinct_1", "distinct-1 (samples)", None),
        ("distinct_2", "distinct-2 (samples)", None),
        ("eval_distinct_2", "distinct-2 (eval)", None),
    ], "A falling distinct-2 means the policy repeats itself to please the reward.",
       ylim=(0, 1.05))


def cleaner_chart(stage: StageData, out: Path) -> Chart | None:
    return _curves(stage, out, "cleaners", "cleaners", "share of responses", [
        ("changed_rate", "changed by a cleaner", None),
        ("edited_rate", "edited (not only cut or stripped)", None),
        ("discarded_rate", "discarded", None),
        ("eval_discarded_rate", "discarded (eval)", None),
    ], "How often the cleaners changed or discarded a response: a rising discard rate means "
       "the policy drifts toward what the guards reject.", ylim=(-0.02, 1.02))


def kl_chart(stage: StageData, out: Path) -> Chart | None:
    return _curves(stage, out, "kl", "KL to the reference policy", "KL (nats per response)", [
        ("kl_mean", "mean KL per response", None),
    ], "KL between the policy and the reference, summed over a response's tokens (algorithms "
       "with a reference). A negative value means the estimate is broken.")


def own_metrics_chart(stage: StageData, out: Path) -> Chart | None:
    """The algorithm's own metrics (`<algorithm>/...`), one small panel each: a third-party
    algorithm's figures appear without report code."""
    names = stage.own_metrics()
    if not names:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(max(6.4, 3.2 * cols), 2.2 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    prefix = f"{stage.algorithm}/"
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        _line(ax, stage.series(name), name)
        ax.set_title(name.removeprefix(prefix), fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.3)
    path = out / _file(stage, "own-metrics")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return Chart(stage.id, f"{stage.algorithm}'s own metrics", path,
                 f"Every metric the algorithm reports besides the shared ones "
                 f"({prefix}..., per iteration).")


def length_chart(stage: StageData, out: Path) -> Chart | None:
    return _curves(stage, out, "length", "response length", "tokens per response", [
        ("response_tokens_mean", "mean response length", None),
    ], "Responses that grow longer step after step are a common form of reward hacking.")


def phase_chart(stage: StageData, out: Path) -> Chart | None:
    phases = stage.phases()
    if not phases:
        return None
    fig, ax = _figure(f"{stage.id}: time per phase", _xlabel(stage), "seconds")
    steps = sorted({s for points in phases.values() for s, _ in points})
    bottom = dict.fromkeys(steps, 0.0)
    for name, points in sorted(phases.items(), key=lambda kv: -sum(v for _, v in kv[1])):
        values = dict(points)
        heights = [values.get(s, 0.0) for s in steps]
        ax.bar(steps, heights, bottom=[bottom[s] for s in steps], label=name, width=0.8)
        for s, h in zip(steps, heights, strict=True):
            bottom[s] += h
    path = _save(fig, ax, out / _file(stage, "phases"))
    total = {name: sum(v for _, v in points) for name, points in phases.items()}
    summary = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(total.items(), key=lambda kv: -kv[1]))
    return Chart(stage.id, "time per phase", path, f"Seconds per phase and step ({summary}).")


def training_chart(stage: StageData, out: Path) -> Chart | None:
    """Loss (and accuracy, for a reward model) of a Trainer-based stage."""
    loss = stage.series("loss")
    if not loss or stage.is_alignment:
        return None
    fig, ax = _figure(f"{stage.id}: training", "step", "loss")
    _line(ax, loss, "training loss", color="tab:blue")
    accuracy = stage.series("accuracy")
    if accuracy:
        right = ax.twinx()
        right.set_ylabel("accuracy")
        right.set_ylim(-0.02, 1.02)
        _line(right, accuracy, "pairwise accuracy (training batches)", color="tab:green")
        a, b = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
        right.legend(a[0] + b[0], a[1] + b[1], loc="best", fontsize="small")
    path = _save(fig, ax, out / _file(stage, "training"), legend=not accuracy)
    return Chart(stage.id, "training", path)


def stage_time_chart(run: RunData, out: Path) -> Chart | None:
    timed = [(s.id, s.seconds, s.status) for s in run.stages if s.seconds is not None]
    if not timed:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 0.6 + 0.45 * len(timed)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [f"{i} ({st})" if st != "completed" else i for i, _, st in timed][::-1]
    values = [sec for _, sec, _ in timed][::-1]
    ax.barh(names, values, color="tab:blue")
    for y, v in enumerate(values):
        ax.annotate(f"{v:.1f} s", (v, y), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize="small")
    ax.set_xlabel("seconds")
    ax.set_title("wall time per stage", fontsize="medium")
    ax.margins(x=0.15)
    path = out / "run-stage-times.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return Chart("", "wall time per stage", path)


STAGE_CHARTS = (reward_chart, diversity_chart, cleaner_chart, kl_chart, length_chart,
                phase_chart, own_metrics_chart, training_chart)


def draw_all(run: RunData, out: Path) -> list[Chart]:
    """Every figure the run has data for, run-level first, then stage by stage."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    charts = [c for c in [stage_time_chart(run, out)] if c]
    for stage in run.stages:
        charts += [c for c in (draw(stage, out) for draw in STAGE_CHARTS) if c is not None]
    return charts
