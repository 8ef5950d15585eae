"""Typed pieces that component configs are built from.

`*Ref` fields name another component (`{ name = "local" }` or just `"local"`) and carry that
component's options inline; the recipe validator resolves them against the plugin tables and
checks the options with the component's own `Config`. `ModelSource` and `DataSource` fields hold
a local path, a hub id, or `@stage.output` (an earlier stage's output).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, model_validator

from rlhfx.components import Component, ComponentConfig
from rlhfx.errors import UserError
from rlhfx.sharding import FsdpSettings

# ------------------------------------------------------------------------- component refs


class ComponentRef(BaseModel):
    """`{ name = "...", <options> }`: a component chosen by name, its options inline."""

    model_config = ConfigDict(extra="allow")
    kind: ClassVar[str] = ""
    #: The key a recipe names the component with (`name`; a rollout engine's is `engine`).
    name_key: ClassVar[str] = "name"
    name: str
    _entry: Any = PrivateAttr(default=None)
    _config: ComponentConfig | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def resolved(self) -> bool:
        return self._entry is not None

    @property
    def config(self) -> ComponentConfig:
        if self._config is None:
            raise RuntimeError(f"{self.kind} '{self.name}' used before the recipe was validated")
        return self._config

    @property
    def component_class(self) -> type[Component]:
        if self._entry is None:
            raise RuntimeError(f"{self.kind} '{self.name}' used before the recipe was validated")
        return self._entry.cls

    def bind(self, entry: Any, config: ComponentConfig) -> None:
        self._entry, self._config = entry, config

    def resolve(self, system: Any = None) -> None:
        """Look the name up and validate the options now (a ref built in code, not a recipe).

        Raises UserError naming the component when the name or an option is wrong.
        """
        from pydantic import ValidationError

        from rlhfx.registry import UnknownComponentError, get_plugins

        system = system or get_plugins()
        try:
            entry = system.get(self.kind, self.name)
        except UnknownComponentError as exc:
            raise UserError(exc.short) from None
        problem = entry.cls.contract_problem()
        if problem:
            raise UserError(f"{self.kind} '{self.name}': {problem}")
        try:
            config = entry.cls.Config.model_validate(self.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            at = f"{where}: " if where else ""
            raise UserError(f"{self.kind} '{self.name}': {at}{message}") from None
        self.bind(entry, config)

    def build(self) -> Any:
        """Construct the component from its validated config (validating it first if needed)."""
        if self._entry is None:
            self.resolve()
        return self.component_class(self.config)


class StageRef(ComponentRef):
    """A stage table. Besides the stage's own options it may say how the stage is spread over
    processes (`parallelism`, `[stages.<id>.fsdp]`), overriding `[run]` for this stage; the
    core reads these two keys and the stage sees them as `ctx.parallelism`."""

    kind = "stage"
    parallelism: Literal["ddp", "fsdp"] | None = None
    fsdp: FsdpSettings | None = None


class AlgorithmRef(ComponentRef):
    """A recipe's `algorithm = { name = "...", <options> }`: an alignment algorithm by name."""

    kind = "algorithm"


class RewardSourceRef(ComponentRef):
    """A recipe's `reward = { name = "...", <options> }`: a reward source by name."""

    kind = "reward_source"


class CleanerRef(ComponentRef):
    """One entry of a recipe's `cleaners = [...]`: a response cleaner by name."""

    kind = "cleaner"


class RankerRef(ComponentRef):
    """A recipe's `ranker = { name = "...", <options> }`: a ranker by name."""

    kind = "ranker"


class DataFormatRef(ComponentRef):
    kind = "data_format"


class EnvironmentRef(ComponentRef):
    """A recipe's `environment = { name = "...", <options> }`: an environment by name."""

    kind = "environment"


# ------------------------------------------------------------------------- sources

STAGE_REF = re.compile(r"^@(?P<stage>[A-Za-z_][A-Za-z0-9_-]*)(?:\.(?P<output>[A-Za-z0-9_-]+))?$")
_LOCAL_HINT = ("./", "../", "/", "~", ".\\")
PKG_PREFIX = "pkg:"
BUILTIN_PREFIX = "builtin:"


def _unknown_builtin(value: str, source_kind: str) -> str | None:
    """An error message for `builtin:<name>` naming no built-in model (or prompt set)."""
    from rlhfx import tiny  # names only; builds nothing (no torch import)

    table = tiny.MODELS if source_kind == "model" else tiny.PROMPT_SETS
    what = "model" if source_kind == "model" else "prompt set"
    if value[len(BUILTIN_PREFIX):] in table:
        return None
    known = ", ".join(BUILTIN_PREFIX + name for name in table)
    return f"unknown built-in {what} '{value}' (known: {known})"


class SourceStr(str):
    """A string that names a model or data: a path, a hub id, or `@stage.output`."""

    #: "model" or "data"; data sources with a file extension must exist at validation time.
    source_kind: str = "model"

    @property
    def stage_ref(self) -> tuple[str, str | None] | None:
        m = STAGE_REF.match(self)
        return (m["stage"], m["output"]) if m else None

    @property
    def looks_local(self) -> bool:
        return self.startswith(_LOCAL_HINT) or Path(self).suffix in DATA_SUFFIXES

    def missing_local_file(self) -> str | None:
        """An error message when this clearly names a local path that does not exist."""
        if self.startswith(PKG_PREFIX):
            # A file shipped inside an installed Python package (found without importing it).
            from rlhfx.model_sources import check_model_source, package_path

            if self.source_kind == "model":
                return check_model_source(self)
            try:
                package_path(self)
            except UserError as exc:
                return str(exc)
            return None
        if self.startswith(BUILTIN_PREFIX):
            return _unknown_builtin(self, self.source_kind)
        if self.stage_ref or not self.looks_local:
            return None
        path = Path(self).expanduser()
        if self.source_kind == "data" and path.is_dir() and path.suffix in DATA_SUFFIXES:
            return f"{self} is a directory, not a data file; name the file itself"
        return _missing(self)


class ModelSourceStr(SourceStr):
    source_kind = "model"


class DataSourceStr(SourceStr):
    source_kind = "data"


DATA_SUFFIXES = {".jsonl", ".json", ".gz", ".parquet", ".csv", ".txt", ".gguf", ".toml"}


def _as_model_source(value: str) -> ModelSourceStr:
    if not value.strip():
        raise ValueError("must not be empty")
    return ModelSourceStr(value)


def _as_data_source(value: str) -> DataSourceStr:
    if not value.strip():
        raise ValueError("must not be empty")
    return DataSourceStr(value)


#: A config field naming a model: a hub id, a local directory or file, `builtin:<name>`,
#: `pkg:<package>/<path>` or an earlier stage's `@stage.output`. The recipe check looks local
#: ones up; the preflight reads their config, weights headers and tokenizer files.
ModelSource = Annotated[str, AfterValidator(_as_model_source)]
#: A config field naming data: a hub dataset id, a local file or directory, `builtin:<name>`,
#: `pkg:<package>/<path>` or an earlier stage's `@stage.output`.
DataSource = Annotated[str, AfterValidator(_as_data_source)]


def _missing(value: str) -> str | None:
    """'does not exist: ...' for a path that is absent (relative ones from the current dir)."""
    path = Path(value).expanduser()
    if path.exists():
        return None
    where = "" if path.is_absolute() else f" (relative to the current directory, {Path.cwd()})"
    return f"file or directory does not exist: {value}{where}"


def _existing_file(value: str) -> str:
    missing = _missing(value)
    if missing:
        raise ValueError(missing)
    return value


ExistingPath = Annotated[str, AfterValidator(_existing_file)]


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"bad regex {value!r}: {exc}") from None
    return value


#: A regular expression (Python's `re`), checked when the recipe is validated.
Regex = Annotated[str, AfterValidator(_compiles)]
