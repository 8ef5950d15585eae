"""The reference of what plugin authors import, generated from the code (signatures, docstrings,
options and fields), so that it cannot drift from it:

    python -m rlhfx.apidoc            # writes docs/api.md
    python -m rlhfx.apidoc --check    # exit 1 when docs/api.md is not what the code says

tests/test_apidoc.py fails when a name of the surface below has no docstring or the file is
stale. Importing this module imports torch (the modules documented do).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

#: Module -> the names of it that are API, or None: its `__all__`, else every public class and
#: function defined in it. The first two are what a plugin imports; the others are what
#: docs/algorithms.md sends algorithm authors to.
SURFACE: dict[str, tuple[str, ...] | None] = {
    "rlhfx": None,
    "rlhfx.testing": None,
    "rlhfx.alignment.critic_free": None,
    "rlhfx.alignment.critic_free_config": None,
    "rlhfx.alignment.policy_update": None,
    "rlhfx.alignment.weights": None,
    "rlhfx.alignment.reference": None,
    "rlhfx.sharding": ("gathered_weights", "gathered_weights_of"),
}
DEFAULT_OUTPUT = Path("docs/api.md")
HEADER = """# API reference

What a plugin imports: `rlhfx` (component bases, configs, the alignment contract), the pytest
fixtures of `rlhfx.testing`, and the helpers docs/algorithms.md names for algorithms. Generated
from the code by `python -m rlhfx.apidoc`; do not edit by hand (tests/test_apidoc.py fails when
it is stale or a name lacks a docstring). How the pieces fit: CONTRIBUTING.md, docs/hooks.md,
docs/algorithms.md, docs/testing.md.
"""
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def surface() -> Iterator[tuple[str, str, Any]]:
    """(module, name, object) for every documented name, in the order of SURFACE."""
    for module_name, names in SURFACE.items():
        module = importlib.import_module(module_name)
        if names is None:
            names = tuple(getattr(module, "__all__", ())) or tuple(
                name for name, obj in vars(module).items()
                if not name.startswith("_") and _defined_in(obj, module_name)
            )
        for name in names:
            obj = getattr(module, name)
            if not (isinstance(obj, (type, types.FunctionType)) or _is_fixture(obj)):
                obj = _Constant(name, obj)  # an alias or an instance: no docstring of its own
            yield module_name, name, obj


def _defined_in(obj: Any, module_name: str) -> bool:
    target = _function(obj)
    return (isinstance(target, (type, types.FunctionType))
            and target.__module__ == module_name)


def _function(obj: Any) -> Any:
    """A pytest fixture's own function, else the object."""
    return getattr(obj, "_fixture_function", None) or obj


def docstring(obj: Any) -> str:
    """The object's own docstring ('' when it has none; a class's is not inherited)."""
    if isinstance(obj, type):
        return inspect.cleandoc(obj.__dict__.get("__doc__") or "")
    target = _function(obj)
    if isinstance(target, (types.FunctionType, types.MethodType, property)):
        return inspect.getdoc(target) or ""
    if isinstance(obj, _Constant):
        return obj.__doc__ or ""
    return ""


def undocumented() -> list[str]:
    """Names of the surface without a docstring."""
    return [f"{module}.{name}" for module, name, obj in surface() if not docstring(obj).strip()]


class _Constant:
    """A type alias or an instance of the surface, documented by the `#:` comment above its
    assignment."""

    def __init__(self, name: str, value: Any):
        self.name, self.value = name, value
        self.__doc__ = self._comment()

    def _comment(self) -> str:
        for module in [m for m in list(sys.modules.values())
                       if getattr(m, "__name__", "").startswith("rlhfx")]:
            try:
                lines = inspect.getsource(module).splitlines()
            except (OSError, TypeError):
                continue
            for i, line in enumerate(lines):
                if line.startswith(f"{self.name} = "):
                    above: list[str] = []
                    for prev in reversed(lines[:i]):
                        if not prev.startswith("#:"):
                            break
                        above.insert(0, prev[2:].strip())
                    return " ".join(above)
        return ""

    def __str__(self) -> str:
        if typing.get_origin(self.value) is typing.Annotated:
            return f"{self.name} = Annotated[{typing.get_args(self.value)[0].__name__}, ...]"
        kind = type(self.value)
        where = "" if kind.__module__ == "builtins" else kind.__module__.split(".")[0] + "."
        return f"{self.name}: {where}{kind.__qualname__}"


class _Text:
    """An annotation shown as written (postponed annotations are strings)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature(obj: Any) -> str:
    try:
        sig = inspect.signature(_function(obj))
    except (TypeError, ValueError):
        return "(...)"
    params = [
        p.replace(annotation=_Text(p.annotation) if isinstance(p.annotation, str)
                  else p.annotation)
        for p in sig.parameters.values()
    ]
    ret = sig.return_annotation
    sig = sig.replace(parameters=params,
                      return_annotation=_Text(ret) if isinstance(ret, str) else ret)
    return _ADDRESS.sub("", str(sig))


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its `#:` comment lines above it and `#` comment beside it, from the
    class and the classes it extends."""
    from rlhfx.config_docs import class_comments

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and klass.__module__.split(".")[0] == "rlhfx":
            out.update(class_comments(klass, beside=True))
    return out


def _options_table(model: type[BaseModel]) -> list[str]:
    from rlhfx.config_docs import option_docs

    neutral = _resume_neutral(model)
    lines = ["| option | type | default | what |", "| --- | --- | --- | --- |"]
    for option in option_docs(model):
        default = "required" if option.required else f"`{option.default!r}`"
        note = " *Resume-neutral.*" if option.name in neutral else ""
        lines.append(f"| `{option.name}` | {_cell(option.type)} | {_cell(default)} | "
                     f"{_cell(option.help)}{note} |")
    return lines


def _resume_neutral(model: type[BaseModel]) -> frozenset[str]:
    from rlhfx.alignment.config import AlgorithmConfig
    from rlhfx.components import LOOP_RESUME_NEUTRAL

    return LOOP_RESUME_NEUTRAL if issubclass(model, AlgorithmConfig) else frozenset()


def _fields_table(cls: type) -> list[str]:
    comments = field_comments(cls)
    lines = ["| field | type | what |", "| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"| `{f.name}` | `{_cell(kind)}` | {_cell(comments.get(f.name, ''))} |")
    return lines


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _methods(cls: type) -> list[str]:
    out = []
    for name, member in cls.__dict__.items():
        if name.startswith("_") and (name != "__init__" or dataclasses.is_dataclass(cls)):
            continue  # a dataclass's __init__ is its fields
        func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if isinstance(member, property):
            doc = inspect.getdoc(member) or ""
            out += [f"- `{name}` (property)" + (f": {_first_paragraph(doc)}" if doc else "")]
        elif isinstance(func, types.FunctionType):
            doc = inspect.cleandoc(func.__doc__ or "")  # its own, not object.__init__'s
            out += [f"- `{name}{signature(func)}`" + (f": {_first_paragraph(doc)}" if doc else "")]
    return out


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split())


def entry(module: str, name: str, obj: Any) -> list[str]:
    """The markdown of one name."""
    lines = [f"### `{module}.{name}`", ""]
    if isinstance(obj, type):
        bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
        lines += ["```python", f"class {name}({bases})" if bases else f"class {name}", "```", ""]
    elif isinstance(obj, _Constant):
        lines += ["```python", str(obj), "```", ""]
    else:
        kind = "fixture" if _is_fixture(obj) else "def"
        lines += ["```python", f"{kind} {name}{signature(obj)}", "```", ""]
    lines += [docstring(obj) or "(undocumented)", ""]
    if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.model_fields:
        lines += [*_options_table(obj), ""]
    elif isinstance(obj, type) and dataclasses.is_dataclass(obj):
        lines += [*_fields_table(obj), ""]
    if isinstance(obj, type) and not issubclass(obj, BaseModel):
        methods = _methods(obj)
        if methods:
            lines += [*methods, ""]
    return lines


def _is_fixture(obj: Any) -> bool:
    return hasattr(obj, "_fixture_function")


def render() -> str:
    """docs/api.md as the code says it should be."""
    lines = [HEADER]
    current = None
    for module, name, obj in surface():
        if module != current:
            current = module
            doc = inspect.getdoc(importlib.import_module(module)) or ""
            lines += [f"## `{module}`", ""]
            if doc:
                lines += [_first_paragraph(doc), ""]
        lines += entry(module, name, obj)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhfx.apidoc", description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true",
                        help="only compare: exit 1 when the file is not what the code says")
    args = parser.parse_args(argv)
    missing = undocumented()
    if missing:
        print(f"no docstring: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output}: stale; run `python -m rlhfx.apidoc`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
