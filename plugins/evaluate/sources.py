"""What `rlhfx eval` is told to load: models named in several ways, and the judge.

A model is a run directory (its last alignment stage's final model), a stage directory (its `model`
folder), a model directory or file, a hub id, `pkg:...` or `builtin:...`. The judge is any
reward source: written inline as TOML (`--judge '{ name = "length", unit = "chars" }'` or just
`--judge length`), or taken from a recipe or a run (`--judge-from RUN_OR_RECIPE`), where the
first stage with a `reward` table gives it and `@stage.output` sources resolve to that run's
outputs.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from rlhfx import RewardSource, RewardSourceRef, UserError

STATE_FILE = "run_state.json"
RECIPE_COPY = "recipe.toml"
_STAGE_REF = re.compile(r"^@(?P<stage>[A-Za-z_][A-Za-z0-9_-]*)(?:\.(?P<output>[A-Za-z0-9_-]+))?$")


# ------------------------------------------------------------------------------- models


def _run_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stages = data["stages"]
        if not isinstance(stages, dict):
            raise TypeError("'stages' is not a table")
        return stages
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable run state ({exc})") from None


def _ran_the_alignment_loop(run_dir: Path, stage_id: str) -> bool:
    """Whether the stage aligned a policy: the alignment loop marks its stage directory, so
    any stage that runs it counts (`align` or another stage built on the loop)."""
    from rlhfx.alignment.loop import MARKER

    return (run_dir / "stages" / stage_id / MARKER).is_file()


def run_outputs(run_dir: Path) -> dict[str, dict[str, str]]:
    """Each completed stage's outputs as absolute paths."""
    out: dict[str, dict[str, str]] = {}
    for stage_id, info in _run_state(run_dir).items():
        if not isinstance(info, dict) or info.get("status") != "completed":
            continue
        outputs = info.get("outputs") or {}
        out[stage_id] = {
            k: str(v if Path(v).is_absolute() else run_dir / v) for k, v in outputs.items()
        }
    return out


def resolve_model(spec: str) -> str:
    """The loadable source behind what the user typed (see the module docstring)."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        return spec
    if (path / STATE_FILE).exists():
        outputs = run_outputs(path)
        aligned = [s for s in outputs
                   if "model" in outputs[s] and _ran_the_alignment_loop(path, s)]
        if not aligned:
            done = ", ".join(outputs) or "none"
            raise UserError(
                f"{spec}: this run has no completed alignment stage with a model "
                f"(completed stages: {done}); name a model directory instead"
            )
        return outputs[aligned[-1]]["model"]
    if not (path / "config.json").exists() and (path / "model" / "config.json").exists():
        return str(path / "model")  # a stage directory
    return str(path)


def resolve_prompts(source: str) -> str:
    """A prompt set as the align stage reads it: `pkg:` files found inside their package."""
    if source.startswith("pkg:"):
        from rlhfx.model_sources import package_path

        return str(package_path(source))
    return str(Path(source).expanduser()) if source.startswith("~") else source


def labels_for(specs: list[str]) -> list[str]:
    """Short, distinct names for the models, for tables and the JSON result."""
    labels: list[str] = []
    for spec in specs:
        label = spec.rstrip("/") or spec
        if label in labels:
            label = f"{label} #{specs[: len(labels)].count(spec) + 1}"
        labels.append(label)
    return labels


# ------------------------------------------------------------------------------- judge


def parse_inline_judge(text: str) -> dict[str, Any]:
    """`length` or `{ name = "length", unit = "chars" }` -> the reward table."""
    return parse_inline_table(text, "--judge", "reward source", "name",
                              '{ name = "length", unit = "chars" }')


def parse_inline_engine(text: str) -> dict[str, Any]:
    """`vllm` or `{ engine = "vllm", dtype = "float32" }` -> the `rollouts` table."""
    return parse_inline_table(text, "--engine", "rollout engine", "engine",
                              '{ engine = "vllm", dtype = "float32" }')


def parse_inline_table(
    text: str, option: str, what: str, key: str, example: str
) -> dict[str, Any]:
    """A component's name or an inline TOML table naming it under `key`, given on the
    command line as `option`."""
    text = text.strip()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", text):
        return {key: text}
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise UserError(
            f"{option}: not a {what} name or an inline TOML table ({exc}); "
            f"e.g. {option} '{example}'"
        ) from None
    if not isinstance(value, dict) or not isinstance(value.get(key), str):
        raise UserError(f"{option}: give a table with a `{key}`, e.g. '{example}'")
    return value


def judge_from(source: str, key: str | None) -> dict[str, Any]:
    """The reward table at `key` (default: the first stage's `reward`) of a recipe or run, with
    `@stage.output` sources replaced by that run's outputs."""
    path = Path(source).expanduser()
    run_dir = path if path.is_dir() else None
    recipe_path = path / RECIPE_COPY if run_dir else path
    if not recipe_path.is_file():
        raise UserError(f"--judge-from {source}: no recipe file there ({recipe_path})")
    try:
        data = tomllib.loads(recipe_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{recipe_path}: invalid TOML: {exc}") from None
    if key is None:
        stages = data.get("stages", {})
        found = [k for k, v in stages.items() if isinstance(v, dict) and "reward" in v]
        if not found:
            raise UserError(f"{recipe_path}: no stage has a `reward`; give --judge-key")
        key = f"stages.{found[0]}.reward"
    table: Any = data
    for part in key.split("."):
        if not isinstance(table, dict) or part not in table:
            raise UserError(f"{recipe_path}: no key '{key}' (--judge-key)")
        table = table[part]
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict) or "name" not in table:
        raise UserError(f"{recipe_path}: {key} is not a reward source table")
    if run_dir is None:
        run_dir = _recipe_run_dir(data, recipe_path)
    outputs = run_outputs(run_dir) if run_dir is not None and (run_dir / STATE_FILE).exists() \
        else {}
    return _with_outputs(table, outputs, f"{recipe_path}: {key}")


def _recipe_run_dir(data: dict[str, Any], recipe_path: Path) -> Path | None:
    out = (data.get("run") or {}).get("output_dir") or f"runs/{recipe_path.stem}"
    path = Path(out).expanduser()
    return path if path.is_dir() else None


def _with_outputs(value: Any, outputs: dict[str, dict[str, str]], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _with_outputs(v, outputs, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_outputs(v, outputs, where) for v in value]
    if isinstance(value, str):
        m = _STAGE_REF.match(value)
        if m is None:
            return value
        produced = outputs.get(m["stage"])
        if not produced:
            raise UserError(
                f"{where}: '{value}' names the output of stage '{m['stage']}', which has not "
                "completed in this run (give the run directory with --judge-from)"
            )
        name = m["output"] or next(iter(produced))
        if name not in produced:
            raise UserError(f"{where}: stage '{m['stage']}' has no output '{name}'")
        return produced[name]
    return value


def build_judge(table: dict[str, Any], where: str) -> RewardSource:
    return _built(RewardSourceRef, table, where)


def _built(ref_cls: Any, table: Any, where: str) -> Any:
    """The component a command-line table names, built; a bad table is a one-line error."""
    try:
        ref = ref_cls.model_validate(table)
        ref.resolve()
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    except Exception as exc:  # pydantic's ValidationError on a malformed table
        raise UserError(f"{where}: {exc}".splitlines()[0]) from None
    return ref.build()


def build_environment(text: str) -> Any:
    """`--environment`: a name or an inline table, built (a bad one is a one-line error)."""
    from rlhfx.config import EnvironmentRef

    text = text.strip()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", text):
        table: Any = {"name": text}
    else:
        try:
            table = tomllib.loads(f"environment = {text}")["environment"]
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"--environment: not a name or an inline TOML table ({exc})"
                            ) from None
    return _built(EnvironmentRef, table, "--environment")
