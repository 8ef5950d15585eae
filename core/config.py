"""Typed pieces that component configs are built from.

`*Ref` fields name another component (`{ name = "local" }` or just `"local"`) and carry that
component's options inline; the recipe validator resolves them against the plugin tables and
checks the options with the component's own `Config`. `ModelSource` and `DataSource` fields hold
a local path, a hub id, or `@stage.output` (an earlier stage's output).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, model_validator

from rlhfx.components import Component, ComponentConfig

# ------------------------------------------------------------------------- component refs


class ComponentRef(BaseModel):
    """`{ name = "...", <options> }`: a component chosen by name, its options inline."""

    model_config = ConfigDict(extra="allow")
    kind: ClassVar[str] = ""
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

    def build(self) -> Any:
        """Construct the component from its validated config."""
        return self.component_class(self.config)


class StageRef(ComponentRef):
    kind = "stage"


class AlgorithmRef(ComponentRef):
    kind = "algorithm"


class RewardSourceRef(ComponentRef):
    kind = "reward_source"


class CleanerRef(ComponentRef):
    kind = "cleaner"


class RankerRef(ComponentRef):
    kind = "ranker"


class DataFormatRef(ComponentRef):
    kind = "data_format"


# ------------------------------------------------------------------------- sources

STAGE_REF = re.compile(r"^@(?P<stage>[A-Za-z_][A-Za-z0-9_-]*)(?:\.(?P<output>[A-Za-z0-9_-]+))?$")
_LOCAL_HINT = ("./", "../", "/", "~", ".\\")


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
        if self.stage_ref or not self.looks_local:
            return None
        path = Path(self).expanduser()
        return None if path.exists() else f"file or directory does not exist: {path}"


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


ModelSource = Annotated[str, AfterValidator(_as_model_source)]
DataSource = Annotated[str, AfterValidator(_as_data_source)]


def _existing_file(value: str) -> str:
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"file does not exist: {path}")
    return value


ExistingPath = Annotated[str, AfterValidator(_existing_file)]
