"""Read what a run left in its directory, for the report.

Everything here tolerates a run that is still going or was killed: a missing or half-written
file is treated as absent, a torn last line of a JSON-lines file is skipped, and a stage the
recipe lists but that never started is reported as such. Nothing is imported beyond the
standard library, so reading a run is fast and needs no model.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

#: The alignment loop's marker file: its algorithm and metric-schema version. The report reads
#: an alignment stage by that schema only (docs/metrics.md), whatever the algorithm.
MARKER = "alignment.json"
SCHEMA_VERSION = 2

#: Per-iteration timings are `seconds_<phase>`; the total would double-count the phases.
_PHASE = re.compile(r"^seconds_(?P<phase>.+)$")
_TOTALS = ("iteration",)

EVAL_FILES = ("iterations/*/eval.jsonl",)
SAMPLE_FILES = ("iterations/*/samples.jsonl",)


@dataclass
class Snapshot:
    """Responses to a set of prompts at one step (an eval or one step's training samples)."""

    step: int
    path: Path
    rows: list[dict[str, Any]]


@dataclass
class StageData:
    id: str
    #: The stage component (`align`, `sft`, ...), from the recipe.
    component: str
    #: The alignment algorithm (`raft`, `ppo`, ...) when the stage runs one (from its marker).
    algorithm: str | None
    #: completed, running (or interrupted), not started
    status: str
    seconds: float | None
    outputs: dict[str, str]
    #: One merged record per step, in step order.
    records: list[dict[str, Any]]
    evals: list[Snapshot] = field(default_factory=list)
    rm_eval: dict[str, Any] | None = None
    #: A judge's verdict on models (an `eval.json` of `rlhfx eval` or the evaluate stage),
    #: without its per-prompt rows.
    verdict: dict[str, Any] | None = None
    directory: Path | None = None
    #: Why the stage cannot be reported (an alignment stage written by an older rlhfx).
    unsupported: str | None = None

    @cached_property
    def samples(self) -> list[Snapshot]:
        """Every step's training samples; read only when a figure or table needs them."""
        return read_snapshots(self.directory, SAMPLE_FILES) if self.directory else []

    def series(self, name: str) -> list[tuple[int, float]]:
        """(step, value) of one metric, by its name in the schema (or a Trainer stage's)."""
        return [(r["step"], float(r[name])) for r in self.records if _number(r.get(name))]

    def own_metrics(self) -> list[str]:
        """The algorithm's own numeric metrics (`<algorithm>/<name>`), in first-seen order."""
        if not self.algorithm:
            return []
        prefix = f"{self.algorithm}/"
        names: dict[str, None] = {}
        for record in self.records:
            for key, value in record.items():
                if key.startswith(prefix) and _number(value):
                    names[key] = None
        return list(names)

    def phases(self) -> dict[str, list[tuple[int, float]]]:
        """Seconds spent in each phase, per step (generation, scoring, training, ...)."""
        out: dict[str, list[tuple[int, float]]] = {}
        for record in self.records:
            for key, value in record.items():
                match = _PHASE.match(key)
                if match and match["phase"] not in _TOTALS and _number(value):
                    out.setdefault(match["phase"], []).append((record["step"], float(value)))
        return out

    @property
    def is_alignment(self) -> bool:
        return bool(self.algorithm)

    @property
    def last_step(self) -> int | None:
        return self.records[-1]["step"] if self.records else None


@dataclass
class RunData:
    directory: Path
    recipe_text: str | None
    recipe: dict[str, Any]
    stages: list[StageData]

    @property
    def name(self) -> str:
        return str(self.recipe.get("run", {}).get("name") or self.directory.resolve().name)

    @property
    def status(self) -> str:
        statuses = {s.status for s in self.stages}
        if not self.stages:
            return "no stages found"
        if statuses == {"completed"}:
            return "completed"
        if "running" in statuses:
            return "running or interrupted"
        return "incomplete"


# --------------------------------------------------------------------------- reading files


def read_records(path: Path) -> list[dict[str, Any]]:
    """JSON objects, one a line; a torn or garbled line (a kill mid-write) is skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return None


def merge_by_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step: a step logged twice (a resumed run, or a trainer's summary beside
    its eval) keeps every key, later values winning."""
    merged: dict[int, dict[str, Any]] = {}
    for record in records:
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float):
            continue
        merged.setdefault(int(step), {}).update(record)
        merged[int(step)]["step"] = int(step)
    return [merged[k] for k in sorted(merged)]


def _dict(value: Any) -> dict[str, Any]:
    """`value` if it is a table, else an empty one (a hand-edited or foreign file)."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _step_of(path: Path) -> int | None:
    """`iter-0003/eval.jsonl` -> 3, `step_000012.jsonl` -> 12 (the last number in the path)."""
    numbers = re.findall(r"\d+", str(path.relative_to(path.parents[1])))
    return int(numbers[-1]) if numbers else None


def read_snapshots(stage_dir: Path, patterns: tuple[str, ...]) -> list[Snapshot]:
    """The first pattern that matches any file wins (a stage writes one layout)."""
    for pattern in patterns:
        found = []
        for path in stage_dir.glob(pattern):
            step = _step_of(path)
            if step is None:
                continue
            rows = read_records(path)
            if rows:
                found.append(Snapshot(step, path, rows))
        if found:
            return sorted(found, key=lambda s: s.step)
    return []


def read_recipe(run_dir: Path) -> tuple[str | None, dict[str, Any]]:
    path = run_dir / "recipe.toml"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, {}
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return text, {}


def _stage_order(recipe: dict[str, Any], state: dict[str, Any], run_dir: Path) -> list[str]:
    """The recipe's order, then stages only the state file or the directory knows about."""
    order = list(recipe.get("stages", {}) or {})
    order += [s for s in state if s not in order]
    stages_dir = run_dir / "stages"
    if stages_dir.is_dir():
        order += sorted(
            p.name for p in stages_dir.iterdir()
            if p.is_dir() and ".old-" not in p.name and p.name not in order
        )
    return order


def _alignment_marker(stage_dir: Path) -> tuple[str | None, str | None]:
    """(algorithm, why it cannot be reported) from the stage's marker file."""
    marker = _dict(read_json(stage_dir / MARKER))
    if marker:
        version = marker.get("schema_version")
        if version != SCHEMA_VERSION:
            return None, (f"{stage_dir / MARKER}: metric schema {version!r}, this rlhfx reads "
                          f"{SCHEMA_VERSION}; rerun the stage with --restart-from to report it")
        name = marker.get("algorithm")
        return (name if isinstance(name, str) else None), None
    if any((stage_dir / d).is_dir() for d in ("iterations", "checkpoints", "eval", "samples")):
        return None, (f"{stage_dir}: written by an older rlhfx (no {MARKER}); rerun the "
                      "stage with --restart-from to report it")
    return None, None


def _rm_eval(stage_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A reward-model stage's pairwise accuracy: its eval.json, else its eval metrics."""
    data = read_json(stage_dir / "eval.json")
    if isinstance(data, dict) and any(
        isinstance(data.get(k), dict) and "accuracy" in data[k] for k in ("before", "after")
    ):
        return data
    found: dict[str, Any] = {}
    for record in records:
        for prefix, key in (("eval/", "after"), ("eval_before/", "before")):
            if _number(record.get(f"{prefix}accuracy")):
                found[key] = {k.removeprefix(prefix): v for k, v in record.items()
                              if k.startswith(prefix)}
    return found or None


def _verdict(stage_dir: Path) -> dict[str, Any] | None:
    """The models, judge and comparisons of an eval result in the stage directory."""
    data = read_json(stage_dir / "eval.json")
    if not (isinstance(data, dict) and isinstance(data.get("models"), list)
            and isinstance(data.get("comparisons"), list)):
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("label"), str) for m in data["models"]):
        return None
    return {k: v for k, v in data.items() if k != "rows"}


_STAGE_REF = re.compile(r"^@(?P<stage>[A-Za-z_][A-Za-z0-9_-]*)(?:\.(?P<output>[A-Za-z0-9_-]+))?$")


@dataclass
class TrainingView:
    """A model's mean eval reward under the reward an alignment stage optimised."""

    stage: str
    step: int
    value: float


def training_views(run: RunData, stage: StageData) -> dict[str, TrainingView]:
    """For each model of `stage`'s verdict that an alignment stage of this run produced or
    started from: its eval reward under that stage's own (training) reward.

    A model is matched through the recipe: `@<stage>.model` (or `@<stage>`) of an alignment
    stage is its final policy (the last eval); the same text as that stage's `policy` is its
    starting policy (the first eval, before any update). Failing that, a model whose source
    is an alignment stage's `model` output counts as its final policy."""
    if not stage.verdict:
        return {}
    aligned = {s.id: s for s in run.stages if s.is_alignment and s.series("eval_reward_mean")}
    if not aligned:
        return {}
    specs = _dict(_dict(run.recipe.get("stages")).get(stage.id)).get("models")
    models = stage.verdict["models"]
    specs = specs if isinstance(specs, list) and len(specs) == len(models) else [None] * len(
        models)
    views: dict[str, TrainingView] = {}
    for model, spec in zip(models, specs, strict=True):
        found = _match(run, aligned, spec, str(model.get("source", "")))
        if found is not None:
            views[model["label"]] = found
    return views


def _match(run: RunData, aligned: dict[str, StageData], spec: Any,
           source: str) -> TrainingView | None:
    def view(s: StageData, last: bool) -> TrainingView:
        step, value = s.series("eval_reward_mean")[-1 if last else 0]
        return TrainingView(s.id, step, value)

    if isinstance(spec, str):
        ref = _STAGE_REF.match(spec)
        if ref and ref["stage"] in aligned and ref["output"] in (None, "model"):
            return view(aligned[ref["stage"]], last=True)
        tables = _dict(run.recipe.get("stages"))
        for stage_id, s in aligned.items():
            if _dict(tables.get(stage_id)).get("policy") == spec:
                return view(s, last=False)
    for s in aligned.values():
        output = s.outputs.get("model")
        if output and source and _same_path(run.directory, output, source):
            return view(s, last=True)
    return None


def _same_path(run_dir: Path, output: str, source: str) -> bool:
    path = Path(output) if Path(output).is_absolute() else run_dir / output
    try:
        return path.resolve() == Path(source).resolve()
    except OSError:
        return False


def collect_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    text, recipe = read_recipe(run_dir)
    state = _dict(_dict(read_json(run_dir / "run_state.json")).get("stages"))
    tables = _dict(recipe.get("stages"))
    stages = []
    for stage_id in _stage_order({"stages": tables}, state, run_dir):
        table, entry = _dict(tables.get(stage_id)), _dict(state.get(stage_id))
        stage_dir = run_dir / "stages" / stage_id
        records = merge_by_step(read_records(stage_dir / "metrics.jsonl"))
        status = entry.get("status") or ("running" if stage_dir.is_dir() else "not started")
        seconds = entry.get("seconds")
        if status != "completed" and _number(entry.get("started")) and records:
            last = records[-1].get("time")
            seconds = last - entry["started"] if _number(last) else None
        algorithm, unsupported = _alignment_marker(stage_dir)
        if unsupported:
            records = []
        stages.append(StageData(
            id=stage_id,
            component=str(table.get("name") or stage_id),
            algorithm=algorithm,
            unsupported=unsupported,
            status=status,
            seconds=seconds if _number(seconds) else None,
            outputs={k: str(v) for k, v in _dict(entry.get("outputs")).items()},
            records=records,
            evals=[] if unsupported else read_snapshots(stage_dir, EVAL_FILES),
            rm_eval=_rm_eval(stage_dir, records),
            verdict=_verdict(stage_dir),
            directory=stage_dir if stage_dir.is_dir() else None,
        ))
    return RunData(run_dir, text, recipe, stages)
