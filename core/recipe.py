"""Reading and validating a recipe: TOML -> typed models -> every component checked.

Validation is complete and cheap: it resolves every component name against the plugin tables
and checks each component's options with its own config model, without importing torch models
or reading data. Every problem found is reported with the recipe file and its dotted key path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from rlhfx.config import ComponentRef, SourceStr, StageRef
from rlhfx.errors import RecipeError, RecipeErrors
from rlhfx.registry import PluginSystem, UnknownComponentError, get_plugins
from rlhfx.sharding import FsdpSettings, Parallelism, merged
from rlhfx.strict_types import MAX_SEED, strict_type_errors

STAGE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: `[run] report_to` names: transformers' Trainer integrations (its INTEGRATION_TO_CALLBACK
#: keys; listed here so that validating a recipe never imports transformers).
REPORT_TARGETS = frozenset({
    "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
    "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb",
})


class RunSection(BaseModel):
    """`[run]`: where a run writes and how it is seeded."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    #: Relative paths are taken from the current directory. Default: runs/<recipe file stem>.
    output_dir: str | None = None
    #: numpy (and the HF Trainer's `set_seed`) take 32-bit seeds; the stages add their index.
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: `auto` uses CUDA when present, else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Experiment trackers that also receive the metrics (metrics.jsonl is always written).
    #: `tensorboard`, `wandb` (offline unless WANDB_MODE says otherwise), `mlflow` (a file
    #: store in the run directory unless MLFLOW_TRACKING_URI is set) and `trackio` (local)
    #: get every stage's records under the metrics.jsonl names, one tracker run per stage
    #: (each needs its package: `pip install "rlhfx[wandb]"`, ...). Stages built on the HF
    #: Trainer pass the other names (any transformers integration) to their Trainer.
    report_to: list[str] = Field(default_factory=list)
    #: How training is spread over the processes of a `torchrun` launch: `ddp` (each holds
    #: the whole model) or `fsdp` (parameters, gradients and optimizer state sharded per
    #: transformer block; `[run.fsdp]` options). A stage table may set its own `parallelism`
    #: and `[stages.<id>.fsdp]` keys. DeepSpeed ZeRO stays a `training_args` option of the
    #: Trainer stages (`deepspeed = "ds_config.json"`), for GPUs.
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    fsdp: FsdpSettings = Field(default_factory=FsdpSettings)
    #: Seconds a process waits in a collective (for a process that died or hangs) before it
    #: stops with an error. The environment variable RLHFX_TIMEOUT_S overrides it.
    timeout_s: float = Field(default=1800.0, gt=0)

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in REPORT_TARGETS]
        if unknown:
            raise ValueError(
                f"unknown tracker '{unknown[0]}' (known: {', '.join(sorted(REPORT_TARGETS))})"
            )
        from rlhfx.trackers import missing_package

        for name in value:  # the package is looked for, not imported: validation stays fast
            problem = missing_package(name)
            if problem:
                raise ValueError(problem)
        return list(dict.fromkeys(value))

    @field_validator("output_dir")
    @classmethod
    def _usable_output_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = output_dir_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def output_dir_problem(value: str) -> str | None:
    """Why a run could not write to `value`, found without creating anything; None if it can."""
    if not value.strip():
        return "must not be empty (leave it out for the default, runs/<recipe name>)"
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{value} is an existing file, not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{value}: no permission to write in this directory"
        problem = _cannot_make_dir(path / f".rlhfx-write-check-{os.getpid()}")
        return f"{value}: cannot write in this directory ({problem})" if problem else None
    missing = path.absolute()
    while not missing.parent.exists():
        missing = missing.parent
    parent = missing.parent
    if not parent.is_dir():
        return f"cannot create {value}: {parent} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {value}: no permission to write in {parent}"
    # probed under a name of this process's own: several processes of one run (torchrun)
    # check the same output folder at once, and one's probe must not fail another's
    problem = _cannot_make_dir(parent / f".rlhfx-write-check-{os.getpid()}")
    if problem:
        return (f"cannot create {value}: {parent} takes no new directory ({problem}; a "
                "read-only or virtual filesystem?)")
    return None


def _cannot_make_dir(path: Path) -> str | None:
    """Why a directory cannot be made at `path` (tried, then removed at once), or None.

    Permissions are not the only reason: a read-only or virtual filesystem (/proc, /sys)
    refuses too, and only trying tells.
    """
    try:
        path.mkdir()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    path.rmdir()
    return None


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: RunSection = Field(default_factory=RunSection)
    stages: dict[str, StageRef]

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_names_default_to_keys(cls, value: Any) -> Any:
        # `[stages.sft]` means the `sft` stage unless the table says `name = ...`.
        if isinstance(value, dict):
            return {
                k: ({"name": k, **v} if isinstance(v, dict) and "name" not in v else v)
                for k, v in value.items()
            }
        return value

    @field_validator("stages")
    @classmethod
    def _non_empty(cls, value: dict[str, StageRef]) -> dict[str, StageRef]:
        if not value:
            raise ValueError("a recipe needs at least one stage")
        for key in value:
            if not STAGE_ID.match(key):
                raise ValueError(f"stage id '{key}' must be letters, digits, '_' or '-'")
        return value


class LoadedRecipe:
    """A validated recipe with the text it came from (copied into the run directory)."""

    def __init__(self, path: Path, text: str, data: dict[str, Any], recipe: Recipe,
                 settings: dict[str, Any] | None = None):
        self.path, self.text, self.data, self.recipe = path, text, data, recipe
        #: `--set` values applied over the file (already in `data` and `text`).
        self.settings: dict[str, Any] = dict(settings or {})

    def parallelism(self, stage_id: str) -> Parallelism:
        """What `stage_id` runs with: `[run]`'s choice, with the stage table's on top."""
        run = self.recipe.run
        ref = self.recipe.stages[stage_id]
        return merged(Parallelism(mode=run.parallelism, fsdp=run.fsdp), ref.parallelism, ref.fsdp)

    @property
    def output_dir(self) -> Path:
        out = self.recipe.run.output_dir or f"runs/{self.path.stem}"
        return Path(out).expanduser()

    def stage_fingerprint(self, stage_id: str, exact: bool = False) -> str:
        """Hash of a stage's table and the run seed; a completed stage with another is stale.

        Keys the stage's component (or a component named in one of its fields, such as the
        align stage's `algorithm`) declares `resume_neutral` are left out unless `exact`.
        """
        table = self.data["stages"][stage_id]
        if not exact:
            table = _without_neutral_keys(table, self.recipe.stages[stage_id])
        body = {"stage": table, "seed": self.recipe.run.seed}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _neutral_keys(ref: ComponentRef) -> frozenset[str]:
    try:
        return frozenset(getattr(ref.component_class, "resume_neutral", frozenset()))
    except RuntimeError:  # not resolved (a recipe that was not validated)
        return frozenset()


def _without_neutral_keys(table: Any, ref: ComponentRef) -> Any:
    """The stage table less its component's resume-neutral keys, and likewise for each
    component ref among its fields (one level deep: `algorithm = { name = "raft", ... }`)."""
    if not isinstance(table, dict):
        return table
    neutral = _neutral_keys(ref)
    try:
        config = ref.config
    except RuntimeError:
        config = None
    out = {}
    for key, value in table.items():
        if key in neutral:
            continue
        sub = getattr(config, key, None) if config is not None else None
        if isinstance(sub, ComponentRef) and isinstance(value, dict):
            sub_neutral = _neutral_keys(sub)
            value = {k: v for k, v in value.items() if k not in sub_neutral}
        out[key] = value
    return out


def dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def pydantic_messages(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> list[tuple[tuple, str]]:
    """(location, message) pairs in words a recipe author understands."""
    out: list[tuple[tuple, str]] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind = err["type"]
        if kind == "missing":
            msg = "required value is missing"
        elif kind == "extra_forbidden":
            msg = "unknown key"
            valid = _valid_keys(model, loc[:-1])
            if valid:
                msg += f" (valid keys: {', '.join(valid)})"
        else:
            got = err.get("input")
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if kind not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)):
                msg += f" (got {got!r})"
        out.append((loc, msg))
    return out


def _valid_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the model found by following `loc` (best effort, for the hint)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        if isinstance(part, int) or part not in current.model_fields:
            return []
        current = _inner_model(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


class _Resolver:
    """Walks a validated recipe, binding every ComponentRef and checking every source."""

    def __init__(self, file: str, system: PluginSystem, stages: dict[str, StageRef]):
        self.file, self.system = file, system
        self.stages = stages
        self.errors: list[RecipeError] = []
        self.earlier: list[str] = []
        self.current: str | None = None

    def err(self, path: str, message: str) -> None:
        self.errors.append(RecipeError(self.file, path, message))

    def run(self) -> None:
        for stage_id, ref in self.stages.items():
            self.current = stage_id
            self.walk(ref, f"stages.{stage_id}")
            self.earlier.append(stage_id)

    def walk(self, value: Any, path: str) -> None:
        if isinstance(value, ComponentRef):
            self.bind(value, path)
        elif isinstance(value, BaseModel):
            for field_name in type(value).model_fields:
                self.walk(getattr(value, field_name), f"{path}.{field_name}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                self.walk(item, f"{path}.{key}")
        elif isinstance(value, SourceStr):
            self.check_source(value, path)

    def bind(self, ref: ComponentRef, path: str) -> None:
        try:
            entry = self.system.get(ref.kind, ref.name)
        except UnknownComponentError as exc:
            self.err(f"{path}.{ref.name_key}", exc.short)
            return
        problem = entry.cls.contract_problem()
        if problem:
            self.err(path, problem)
            return
        model = entry.cls.Config
        messages = strict_type_errors(model, ref.options)
        try:
            config = model.model_validate(ref.options)
        except ValidationError as exc:
            messages += pydantic_messages(exc, model)
        if messages:
            reported: set[tuple] = set()
            for loc, msg in messages:
                if loc in reported:  # one problem per key: ours first, then pydantic's
                    continue
                reported.add(loc)
                self.err(f"{path}.{dotted(loc)}" if loc else path, msg)
            self.walk_valid_fields(model, ref.options, {loc[0] for loc, _ in messages if loc}, path)
            return
        ref.bind(entry, config)
        self.walk(config, path)

    def walk_valid_fields(
        self, model: type[BaseModel], options: dict[str, Any], bad: set[Any], path: str
    ) -> None:
        """Check the fields that did validate, so one pass reports nested problems too."""
        for name, info in model.model_fields.items():
            if name in bad or name not in options:
                continue
            try:
                value = TypeAdapter(info.rebuild_annotation()).validate_python(options[name])
            except Exception:  # the field depends on another (a model validator): skip it
                continue
            self.walk(value, f"{path}.{name}")

    def check_source(self, value: SourceStr, path: str) -> None:
        stage_ref = value.stage_ref
        if stage_ref is not None:
            stage, output = stage_ref
            if stage not in self.earlier:
                if stage == self.current:
                    where = "this stage itself"
                elif stage in self.stages:
                    where = "a later stage"
                else:
                    where = "not a stage of this recipe"
                earlier = ", ".join(self.earlier) or "none"
                self.err(
                    path,
                    f"'@{stage}' is {where}; only an earlier stage's output can be used "
                    f"(earlier stages: {earlier})",
                )
                return
            target = self.stages[stage]
            entry = self.system.components["stage"].get(target.name)
            if entry is None:
                return  # its name is unknown: reported already
            outputs: tuple[str, ...] = getattr(entry.cls, "outputs", ())
            if not outputs:
                self.err(path, f"stage '{stage}' ({target.name}) has no outputs to use")
            elif output is not None and output not in outputs:
                self.err(
                    path,
                    f"stage '{stage}' has no output '{output}' (outputs: {', '.join(outputs)})",
                )
            return
        missing = value.missing_local_file()
        if missing:
            self.err(path, missing)


def parse_toml(path: Path) -> tuple[str, dict[str, Any]]:
    file = str(path)
    if not path.exists():
        raise RecipeError(file, "", "recipe file does not exist")
    if path.is_dir():
        raise RecipeError(file, "", "is a directory, not a recipe file")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is dropped, not an error.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(file, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's message already ends in "(at line L, column C)".
        raise RecipeError(file, "", f"invalid TOML: {exc}") from None
    return text, data


def load_recipe(
    path: str | Path, system: PluginSystem | None = None,
    settings: dict[str, Any] | None = None,
) -> LoadedRecipe:
    """Parse and fully validate a recipe; raise RecipeError(s) naming file and key path.

    Every problem is collected in one pass: a bad `[run]` table does not hide the stages'.
    `settings` (`--set` on the command line) are applied over the file first, so they are
    checked exactly as the file is; `text` is then the recipe as run, with them in it.
    """
    path = Path(path)
    file = str(path)
    text, data = parse_toml(path)
    if settings:
        from rlhfx.overrides import apply_settings, with_settings_text

        data = apply_settings(data, settings, file)
        text = with_settings_text(file, data, settings)
    errors: list[RecipeError] = []
    recipe: Recipe | None = None
    strict = strict_type_errors(RunSection, data.get("run"), ("run",))
    errors += [RecipeError(file, dotted(loc), msg) for loc, msg in strict]
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        errors += [
            RecipeError(file, dotted(loc), msg) for loc, msg in pydantic_messages(exc, Recipe)
            if loc not in {s[0] for s in strict}
        ]
    if recipe is not None and not strict:
        last = recipe.run.seed + len(recipe.stages) - 1
        if last > MAX_SEED:
            errors.append(RecipeError(
                file, "run.seed", f"at most {MAX_SEED - len(recipe.stages) + 1} with "
                f"{len(recipe.stages)} stages (stage i is seeded with seed + i, and numpy takes "
                f"seeds up to 2**32 - 1)",
            ))
    if strict:
        recipe = None  # a value pydantic converted: the recipe does not say what it means
    stages = recipe.stages if recipe is not None else _stages_alone(data)
    if stages:
        resolver = _Resolver(file, system or get_plugins(), stages)
        resolver.run()
        errors += resolver.errors
    if errors:
        raise (errors[0] if len(errors) == 1 else RecipeErrors(errors)) from None
    assert recipe is not None
    return LoadedRecipe(path, text, data, recipe, settings)


def _stages_alone(data: dict[str, Any]) -> dict[str, StageRef] | None:
    """The stages of a recipe whose other tables are broken, or None if they are broken too."""
    if "stages" not in data:
        return None
    try:
        return Recipe.model_validate({"stages": data["stages"]}).stages
    except ValidationError:
        return None
