"""A JSON Schema for recipes, generated from the installed components.

Each component kind becomes a definition that accepts a component's name (the shorthand
`ranker = "local"`) or a table `{ name = ..., <options> }` whose options are checked against
that component's config model (`if name == X then X's options`). Stage tables may leave `name`
out when their key is a stage name (`[stages.align]`). Draft 7, which TOML editor extensions
(taplo / Even Better TOML) understand.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from rlhfx.components import KINDS
from rlhfx.config import ComponentRef
from rlhfx.config_docs import comment_docs
from rlhfx.recipe import RunSection

DRAFT = "http://json-schema.org/draft-07/schema#"


def _ref_titles() -> dict[str, str]:
    """Title of each ComponentRef subclass in pydantic's schema -> its kind."""
    return {cls.__name__: cls.kind for cls in ComponentRef.__subclasses__()}


def _name_keys() -> dict[str, str]:
    """Kind -> the key its tables name the component with (`name`; `engine` for rollouts)."""
    return {cls.kind: cls.name_key for cls in ComponentRef.__subclasses__()}


def _default_names() -> dict[str, str]:
    """Kind -> the component a table without a name means, for kinds that have one."""
    out = {}
    for cls in ComponentRef.__subclasses__():
        default = cls.model_fields["name"].default
        if isinstance(default, str):
            out[cls.kind] = default
    return out


def _model_schema(model: type[BaseModel], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """`model`'s schema with its own `$defs` moved into `defs` under `prefix`, component refs
    pointing at the kind definitions, and `#:` comments as descriptions."""
    schema = model.model_json_schema(mode="validation")
    local = schema.pop("$defs", {})
    refs = _ref_titles()
    renamed = {name: f"{prefix}.{name}" for name in local if name not in refs}

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str) and target.startswith("#/$defs/"):
                name = target[len("#/$defs/"):]
                if name in refs:
                    return {**{k: v for k, v in node.items() if k != "$ref"},
                            "$ref": f"#/definitions/{refs[name]}"}
                node = {**node, "$ref": f"#/definitions/{renamed[name]}"}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    for name, body in local.items():
        if name in renamed:
            defs[renamed[name]] = fix(body)
    schema = fix(schema)
    _describe(schema, model)
    return schema


def _describe(schema: dict[str, Any], model: type[BaseModel]) -> None:
    comments = comment_docs(model)
    for name, prop in schema.get("properties", {}).items():
        if name in comments and "description" not in prop:
            prop["description"] = comments[name]


def _component_options(entry: Any, defs: dict[str, Any]) -> dict[str, Any]:
    schema = _model_schema(entry.cls.Config, f"{entry.kind}.{entry.name}", defs)
    schema.setdefault("properties", {})
    key = _name_keys().get(entry.kind, "name")
    schema["properties"] = {key: {"const": entry.name}, **schema["properties"]}
    schema["additionalProperties"] = False
    if entry.cls.summary():
        schema["description"] = entry.cls.summary()
    return schema


def _kind_definition(kind: str, names: list[str], shorthand: bool) -> dict[str, Any]:
    key = _name_keys().get(kind, "name")
    table: dict[str, Any] = {
        "type": "object",
        "required": [key],
        "properties": {key: {"enum": names}},
        "allOf": [
            {"if": {"properties": {key: {"const": n}}, "required": [key]},
             "then": {"$ref": f"#/definitions/{kind}.{n}"}}
            for n in names
        ],
    }
    default = _default_names().get(kind)
    if default in names:  # the name may be left out
        table.pop("required")
        table["allOf"].append({"if": {"not": {"required": [key]}},
                               "then": {"$ref": f"#/definitions/{kind}.{default}"}})
    if not shorthand:
        return table
    return {"anyOf": [{"type": "string", "enum": names}, table]}


def _stage_with_default(name: str, names: list[str]) -> dict[str, Any]:
    """`[stages.<name>]`: the table may omit `name`, which then means `<name>`."""
    schema = copy.deepcopy(_kind_definition("stage", names, shorthand=False))
    schema.pop("required")
    schema["allOf"].append({
        "if": {"not": {"required": ["name"]}},
        "then": {"$ref": f"#/definitions/stage.{name}"},
    })
    return schema


def recipe_schema(system: Any) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    for kind in KINDS:
        for name, entry in sorted(system.components[kind].items()):
            defs[f"{kind}.{name}"] = _component_options(entry, defs)
        names = sorted(system.components[kind])
        defs[kind] = _kind_definition(kind, names, shorthand=kind != "stage")
    stage_names = sorted(system.components["stage"])
    run = _model_schema(RunSection, "run", defs)
    return {
        "$schema": DRAFT,
        "title": "rlhfx recipe",
        "description": "An rlhfx recipe: [run] and [stages.<id>] tables (rlhfx schema).",
        "type": "object",
        "additionalProperties": False,
        "required": ["stages"],
        "properties": {
            "run": run,
            "stages": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
                "properties": {n: _stage_with_default(n, stage_names) for n in stage_names},
                "additionalProperties": {"$ref": "#/definitions/stage"},
            },
        },
        "definitions": defs,
    }
