"""What a component's options are, read from its config model: for `rlhfx components show`,
`rlhfx validate --explain` and `rlhfx schema`.

Help text comes from `Field(description=...)` or, as most configs here write it, from the `#:`
comment lines right above a field in the config class's source (read with `inspect`, so configs
stay as they are). Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import json
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from rlhfx.config import ComponentRef

_FIELD_LINE = re.compile(r"^\s+([A-Za-z_]\w*)\s*:")


@dataclass
class OptionDoc:
    name: str
    type: str
    default: Any  # JSON-able; `REQUIRED` when the option must be given
    required: bool
    constraints: list[str]
    help: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "required": self.required,
                "default": None if self.required else self.default,
                "constraints": self.constraints, "help": self.help}


def comment_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the `#:` comment above it, from the model and the models it extends."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            out.update(class_comments(cls))
    return out


def class_comments(cls: type, beside: bool = False) -> dict[str, str]:
    """Field name -> the `#:` comment lines above it in `cls`'s own source (and, with
    `beside`, the `#` comment on its line); {} when the source cannot be read (a class
    defined in a REPL or built dynamically)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = _FIELD_LINE.match(line)
        if m and not line.startswith("        "):
            note = line.split("  # ", 1)[1].strip() if beside and "  # " in line else ""
            text = " ".join([*pending, note]).strip()
            if text:
                out[m[1]] = text
        pending = []
    return out


def type_name(annotation: Any, info: FieldInfo | None = None) -> str:
    """A short, readable type: `int`, `list[str]`, `"each" | "once"`, `reward source`."""
    for meta in (info.metadata if info is not None else []):
        func = getattr(getattr(meta, "func", None), "__name__", "")
        if func == "_as_model_source":
            return "model source"
        if func == "_as_data_source":
            return "data source"
        if func == "_existing_file":
            return "path"
    return _type_name(annotation)


def _type_name(annotation: Any) -> str:
    from rlhfx.components import KIND_LABELS

    if annotation is None or annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, ComponentRef):
        kind: str = getattr(annotation, "kind", "")
        return KIND_LABELS.get(kind, kind)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def plain(value: Any) -> Any:
    """JSON/TOML-able data: component refs and models become tables."""
    if isinstance(value, ComponentRef):
        try:
            return {"name": value.name, **plain(value.config)}
        except RuntimeError:  # not resolved: its options as written
            return {"name": value.name, **plain(value.options)}
    if isinstance(value, BaseModel):
        return {k: plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def default_of(info: FieldInfo) -> tuple[bool, Any]:
    """(required, default) of a field; a default factory is called (they build plain data)."""
    if info.default is not PydanticUndefined:
        return False, plain(info.default)
    if info.default_factory is not None:
        return False, plain(info.default_factory())  # type: ignore[call-arg]
    return True, None


def constraints_of(info: FieldInfo) -> list[str]:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length",
             "max_length": "max length", "multiple_of": "multiple of"}
    out = []
    for meta in info.metadata:
        for attr, word in words.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{word} {value}")
    return out


def option_docs(model: type[BaseModel]) -> list[OptionDoc]:
    comments = comment_docs(model)
    out = []
    for name, info in model.model_fields.items():
        required, default = default_of(info)
        out.append(OptionDoc(
            name=name,
            type=type_name(info.annotation, info),
            default=default,
            required=required,
            constraints=constraints_of(info),
            help=info.description or comments.get(name, ""),
        ))
    return out


# ------------------------------------------------------------------------------- TOML out


def without_unset(data: Any, path: str, unset: list[str]) -> Any:
    """`data` with None values left out (TOML has no null); their dotted keys go to `unset`."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            if value is None:
                unset.append(where)
            else:
                out[key] = without_unset(value, where, unset)
        return out
    if isinstance(data, list):
        return [without_unset(v, f"{path}[{i}]", unset) for i, v in enumerate(data)
                if v is not None]
    return data


def explain_recipe(loaded: Any) -> str:
    """A validated recipe as TOML with every default filled in (default cleaner chains too)."""
    recipe = loaded.recipe
    data: dict[str, Any] = {"run": plain(recipe.run), "stages": {}}
    for stage_id, ref in recipe.stages.items():
        data["stages"][stage_id] = plain(ref)
    import tomli_w

    unset: list[str] = []
    body = tomli_w.dumps(without_unset(data, "", unset))
    notes = f"{loaded.path} with every default filled in (rlhfx validate --explain)"
    if unset:
        notes += "\nnot set (left empty): " + ", ".join(unset)
    # Every line of the notes a comment, whatever the recipe's path or keys hold.
    lines = [line for note in notes.splitlines() for line in textwrap.wrap(note, 96) or [""]]
    return "".join(f"# {line}\n" for line in lines) + "\n" + body
