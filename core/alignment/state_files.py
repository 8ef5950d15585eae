"""An algorithm's checkpoint state as data only: tensors in safetensors, the rest in JSON.

Reading either file runs no code (unlike a pickle), so a checkpoint from a shared disk or a
download cannot execute anything. The state may hold tensors, numbers, strings, bools, None,
and dicts (string or int keys), lists and tuples of them, nested to any depth: what model and
optimizer `state_dict()`s are made of. Anything else is refused when the checkpoint is
written, naming where in the state it sits.

The JSON tree mirrors the state: a scalar is itself; a container or tensor is an object with
one key, `{"dict": [[key, node], ...]}`, `{"list": [...]}`, `{"tuple": [...]}` or
`{"tensor": "name in the safetensors file"}`. Tensors that are the same view of one storage
(tied weights) are stored once and come back as one tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT = "rlhfx-state/1"
ALLOWED = ("tensors, numbers, strings, bools, None, and dicts (str or int keys), lists and "
           "tuples of them")


class StateTypeError(TypeError):
    """A value in an algorithm's state that a checkpoint cannot hold."""


class StateFileError(ValueError):
    """A state file that is not what `save_state` writes."""


def _path_text(path: tuple[Any, ...]) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


def flatten(state: Any) -> tuple[dict[str, Any], Any]:
    """(tensors by name, JSON tree) of `state`; StateTypeError names a value it cannot hold."""
    import torch

    tensors: dict[str, Any] = {}
    views: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()

    def visit(value: Any, path: tuple[Any, ...]) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
            if tensor.device.type != "cpu":
                tensor = tensor.cpu()
            ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else 0
            view = (ptr, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(),
                    tensor.dtype)
            if ptr and view in views:
                return {"tensor": views[view]}
            if not tensor.is_contiguous() or (ptr and ptr in storages):
                tensor = tensor.contiguous().clone()  # a view of storage saved already
            name = f"t{len(tensors)}"
            tensors[name] = tensor
            if ptr:
                views[view] = name
                storages.add(ptr)
            return {"tensor": name}
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                if isinstance(key, bool) or not isinstance(key, str | int):
                    raise StateTypeError(f"{_path_text(path)} has a key {key!r} of type "
                                         f"{type(key).__name__}; a checkpoint holds {ALLOWED}")
                items.append([key, visit(item, (*path, key))])
            return {"dict": items}
        if isinstance(value, list | tuple):
            kind = "list" if isinstance(value, list) else "tuple"
            return {kind: [visit(item, (*path, i)) for i, item in enumerate(value)]}
        raise StateTypeError(f"{_path_text(path)} is a {type(value).__module__}."
                             f"{type(value).__qualname__}; a checkpoint holds {ALLOWED}")

    tree = visit(state, ())
    return tensors, tree


def unflatten(tree: Any, tensors: dict[str, Any]) -> Any:
    """The state `flatten` gave `tree` and `tensors` for; StateFileError for anything else."""
    if tree is None or isinstance(tree, bool | int | float | str):
        return tree
    if not isinstance(tree, dict) or len(tree) != 1:
        raise StateFileError(f"unexpected node {str(tree)[:60]}")
    (kind, body), = tree.items()
    if kind == "tensor":
        if not isinstance(body, str) or body not in tensors:
            raise StateFileError(f"names a tensor {str(body)[:40]} the weights file lacks")
        return tensors[body]
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [unflatten(item, tensors) for item in body]
        return items if kind == "list" else tuple(items)
    if kind == "dict" and isinstance(body, list):
        out = {}
        for pair in body:
            if (not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool)
                    or not isinstance(pair[0], str | int)):
                raise StateFileError(f"unexpected dict entry {str(pair)[:60]}")
            out[pair[0]] = unflatten(pair[1], tensors)
        return out
    raise StateFileError(f"unexpected node {str(tree)[:60]}")


def save_state(state: Any, weights: Path, tree_file: Path) -> None:
    """Write `state` as `weights` (safetensors) and `tree_file` (JSON). The caller makes the
    pair appear atomically (a temporary directory renamed into place)."""
    from safetensors.torch import save_file

    tensors, tree = flatten(state)
    save_file(tensors, str(weights), metadata={"format": FORMAT})
    with tree_file.open("w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "state": tree}, f)
        f.flush()
        import os

        os.fsync(f.fileno())


def load_state(weights: Path, tree_file: Path) -> Any:
    """The state `save_state` wrote; StateFileError (or OSError) for any other file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        data = json.loads(tree_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFileError(f"{tree_file.name} is not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "state" not in data:
        raise StateFileError(f"{tree_file.name} is not an rlhfx state file")
    try:
        tensors = load_file(str(weights))
    except SafetensorError as exc:
        raise StateFileError(f"{weights.name} is not a safetensors file ({exc})") from None
    return unflatten(data["state"], tensors)


def save_tensors(tensors: dict[str, Any], file: Path) -> None:
    """A flat dict of tensors (e.g. a value head's weights) as one safetensors file."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(file))
