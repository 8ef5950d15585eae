"""Recipe values of the wrong type that pydantic would quietly convert.

Pydantic's lax mode reads `true` as 1 and `"3"` as 3, so a recipe with `iterations = true` or
a quoted number validates and then runs with a value its author did not write. Its strict mode
refuses those, but also `learning_rate = 1` for a float, which a recipe may well write. So
the recipe validator walks each table beside its model first and refuses exactly these
conversions: a boolean or a string where only a number fits, and a number or a string where only
true or false fits. Any component's `seed` must also fit the range every library takes.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from rlhfx.config import ComponentRef

_NUMBERS = (int, float)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _alternatives(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(annotation):
            out.extend(_alternatives(arg))
        return out
    return [annotation]


def _scalar_kinds(alternatives: list[Any]) -> set[Any]:
    """The scalar types the alternatives accept (`other` for anything not a number)."""
    kinds: set[Any] = set()
    for alt in alternatives:
        if get_origin(alt) is Literal:
            kinds.update(type(v) for v in get_args(alt))
        elif alt in (int, float, bool, type(None)):
            kinds.add(alt)
        elif (isinstance(alt, type) and issubclass(alt, BaseModel)) or get_origin(alt) in (
            list, tuple, set, frozenset, dict,
        ):
            continue
        else:
            kinds.add("other")
    return kinds


#: The largest seed every library takes: numpy's legacy seeding (and so the HF Trainer's
#: `set_seed`) wants 0..2**32-1, and so does PYTHONHASHSEED; torch takes 64 bits.
MAX_SEED = 2**32 - 1


def _is_seed(key: Any) -> bool:
    return isinstance(key, str) and (key == "seed" or key.endswith("_seed"))


def strict_type_errors(
    model: type[BaseModel], data: Any, loc: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) for each boolean or string given where the model wants a number."""
    if not isinstance(data, dict):
        return []
    out: list[tuple[tuple[Any, ...], str]] = []
    fields = model.model_fields
    by_alias = {f.alias: name for name, f in fields.items() if f.alias}
    for key, value in data.items():
        name = by_alias.get(key, key)
        if name not in fields:
            continue  # unknown keys are pydantic's to report
        problems = _check(fields[name].annotation, value, (*loc, key))
        if not problems and _is_seed(name) and isinstance(value, int) and not isinstance(
            value, bool
        ) and not 0 <= value <= MAX_SEED:
            problems = [((*loc, key), f"a seed must be between 0 and {MAX_SEED} (numpy's "
                                      f"range; got {value})")]
        out.extend(problems)
    return out


def _check(annotation: Any, value: Any, loc: tuple[Any, ...]) -> list[tuple[tuple, str]]:
    alternatives = _alternatives(annotation)
    kinds = _scalar_kinds(alternatives)
    numeric = bool(kinds & set(_NUMBERS))
    only_flag = kinds and kinds <= {bool, type(None)} and bool in kinds
    if isinstance(value, bool):
        if numeric and bool not in kinds and "other" not in kinds:
            word = "true" if value else "false"
            return [(loc, f"must be a number, not a boolean (got {word})")]
        return []
    if isinstance(value, str):
        if numeric and "other" not in kinds and str not in kinds:
            return [(loc, f"must be a number, not a string (got {value!r}); "
                          "write it without quotes")]
        if only_flag:
            return [(loc, f"must be true or false, not a string (got {value!r})")]
        return []
    if isinstance(value, int | float) and only_flag:
        return [(loc, f"must be true or false, not a number (got {value!r})")]
    out: list[tuple[tuple, str]] = []
    for alt in alternatives:
        origin = get_origin(alt)
        if isinstance(value, dict) and isinstance(alt, type) and issubclass(alt, BaseModel):
            if issubclass(alt, ComponentRef):
                return []  # checked with its component's own model when the recipe binds it
            return strict_type_errors(alt, value, loc)
        if isinstance(value, dict) and origin is dict:
            pair = get_args(alt)
            inner = pair[1] if len(pair) == 2 else Any
            for key, item in value.items():
                out.extend(_check(inner, item, (*loc, key)))
            return out
        if isinstance(value, list) and origin in (list, tuple, set, frozenset):
            args = [a for a in get_args(alt) if a is not Ellipsis]
            for i, item in enumerate(value):
                inner = args[i] if origin is tuple and len(args) > 1 and i < len(args) else (
                    args[0] if args else Any)
                out.extend(_check(inner, item, (*loc, i)))
            return out
    return out
