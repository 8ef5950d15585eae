"""Calling plugin code so that a fault names its cause: the component, its plugin and the
recipe key, with the plugin's own line, in one line instead of a traceback from the core.

Also the checks of what plugin code returns (scores, cleaner results, ranker selections): a
wrong value is reported where the plugin produced it, not later as a shape error in training.
Set `RLHFX_DEBUG=1` (or `rlhfx --debug`) to see the full traceback as well.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rlhfx.components import KIND_LABELS, CleanResult
from rlhfx.errors import UserError

#: Set to 1 to print the full traceback of an error beside its one-line message.
ENV_DEBUG = "RLHFX_DEBUG"

T = TypeVar("T")


class PluginFault(UserError):
    """Plugin code raised or returned something unusable; the message says which and where."""

    def __init__(self, message: str, component: Any = None, key: str = ""):
        self.component, self.key = component, key
        super().__init__(message)


def debug_enabled() -> bool:
    return os.environ.get(ENV_DEBUG, "").strip().lower() not in ("", "0", "false", "no")


def describe(component: Any) -> str:
    """`reward source 'polite' (plugin 'rlhfx_polite', rlhfx-polite 0.1.0)`."""
    cls = component if isinstance(component, type) else type(component)
    kind = getattr(cls, "kind", "") or "component"
    name = getattr(cls, "name", "") or cls.__name__
    label = KIND_LABELS.get(kind, kind)
    entry = _entry_of(cls)
    if entry is None:
        return f"{label} '{name}' ({cls.__module__}.{cls.__qualname__})"
    info = entry.plugin
    return f"{label} '{name}' (plugin '{info.name}', {info.distribution} {info.version})"


def _entry_of(cls: type) -> Any:
    """The registry entry of a component class (or of its nearest registered base)."""
    from rlhfx import registry

    system = registry._SYSTEM  # never load plugins just to word a message
    if system is None:
        return None
    kind = getattr(cls, "kind", "")
    table = system.components.get(kind, {})
    for entry in table.values():
        if entry.cls is cls:
            return entry
    for base in cls.__mro__[1:]:
        for entry in table.values():
            if entry.cls is base:
                return entry
    return None


def _rlhfx_dirs() -> list[Path]:
    import rlhfx
    import rlhfx.plugins

    return [Path(p).resolve() for p in (*rlhfx.__path__, *rlhfx.plugins.__path__)]


def _inside(file: Path, folders: Sequence[Path]) -> bool:
    return any(file == d or d in file.parents for d in folders)


def _plugin_root(module_name: str) -> tuple[Path | None, Path | None]:
    """(folder or file holding the plugin's code, folder its paths are shown relative to)."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return None, None
    path = Path(file).resolve()
    if module_name.startswith("rlhfx."):  # a built-in: its own module's folder
        return path.parent, path.parent.parent
    top = sys.modules.get(module_name.split(".")[0])
    top_file = getattr(top, "__file__", None)
    if not top_file:
        return path.parent, path.parent
    top_path = Path(top_file).resolve()
    if top_path.name == "__init__.py":  # a package: its folder, shown from its parent
        return top_path.parent, top_path.parent.parent
    return top_path, top_path.parent  # a single-module plugin


def plugin_frame(exc: BaseException, component: Any = None, module: str | None = None) -> str:
    """`rlhfx_polite/__init__.py:14 in score`: the deepest frame in the plugin's own code (the
    package of `component`'s class, or `module`), else the deepest outside rlhfx; empty when
    there is none."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    if component is not None:
        module = (component if isinstance(component, type) else type(component)).__module__
    root, shown_from = _plugin_root(module) if module else (None, None)
    chosen = None
    if root is not None:
        for frame in reversed(frames):
            file = Path(frame.filename).resolve()
            if file == root or root in file.parents:
                chosen = frame
                break
    if chosen is None:
        ours = _rlhfx_dirs()
        for frame in reversed(frames):
            if not _inside(Path(frame.filename).resolve(), ours):
                chosen = frame
                break
    if chosen is None:
        return ""
    file = Path(chosen.filename).resolve()
    shown = str(file)
    if shown_from is not None:
        with contextlib.suppress(ValueError):  # a file outside the plugin's folder
            shown = file.relative_to(shown_from).as_posix()
    return f"{shown}:{chosen.lineno} in {chosen.name}"


def _prefix(key: str) -> str:
    return f"{key}: " if key else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def call_plugin(component: Any, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, plugin code of `component`; a fault becomes a `PluginFault`.

    `key` is where the recipe configures the component, with its file
    (`recipe.toml: stages.align.reward`). A `UserError` (the plugin's own clear message) and
    Ctrl-C pass through unchanged.
    """
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as exc:
        detail = _first_line(exc)
        what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        where = plugin_frame(exc, component)
        message = (
            f"{_prefix(key)}{describe(component)} failed: {what}"
            + (f" (at {where})" if where else "")
        )
        raise PluginFault(message, component, key) from exc


def _fault(component: Any, key: str, problem: str) -> PluginFault:
    return PluginFault(f"{_prefix(key)}{describe(component)} {problem}", component, key)


def _as_list(values: Any) -> list[Any] | None:
    """A list from a list, tuple, 1-D numpy array or torch tensor; None for anything else."""
    if isinstance(values, list | tuple):
        return list(values)
    ndim = getattr(values, "ndim", None)
    if ndim == 1 and hasattr(values, "tolist"):
        return list(values.tolist())
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    ndim = getattr(value, "ndim", None)
    if ndim is not None and hasattr(value, "shape"):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    return type(value).__name__


def _as_real(value: Any) -> float | None:
    """A Python float for a real number (int, float, numpy or torch scalar), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    module = type(value).__module__.split(".")[0]
    if module in ("numpy", "torch") and getattr(value, "ndim", None) == 0:
        dtype = str(getattr(value, "dtype", ""))
        if "bool" in dtype or "complex" in dtype:
            return None
        item = value.item()
        if isinstance(item, bool) or not isinstance(item, int | float):
            return None
        return float(item)
    return None


def check_scores(values: Any, expected: int, component: Any, key: str) -> list[float]:
    """The scores a reward source returned, as floats; PluginFault for a wrong count or a value
    that is not a real number (bool, None and str are refused). Non-finite values come back
    as they are: the caller applies its policy (see `nonfinite_indices`)."""
    items = _as_list(values)
    if items is None:
        raise _fault(
            component, key,
            f"returned {_type_name(values)}, not a list of {expected} numbers",
        )
    if len(items) != expected:
        raise _fault(
            component, key,
            f"returned {len(items)} scores for {expected} responses (one number each)",
        )
    out: list[float] = []
    for i, value in enumerate(items):
        real = _as_real(value)
        if real is None:
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise _fault(
                component, key,
                f"returned a score that is not a number at [{i}]: {shown} ({_type_name(value)})",
            )
        out.append(real)
    return out


def nonfinite_indices(values: Sequence[float]) -> list[int]:
    """Positions of NaN and infinite values."""
    return [i for i, v in enumerate(values) if not math.isfinite(v)]


def check_cleaned(result: Any, component: Any, key: str) -> CleanResult:
    """A cleaner's result; PluginFault unless it is a CleanResult with text (and a reason)."""
    if not isinstance(result, CleanResult):
        raise _fault(component, key, f"returned {_type_name(result)}, not a CleanResult")
    if not isinstance(result.text, str):
        raise _fault(
            component, key,
            f"returned a CleanResult whose text is {_type_name(result.text)}, not a string",
        )
    if result.discard_reason is not None and not isinstance(result.discard_reason, str):
        raise _fault(
            component, key,
            f"returned a CleanResult whose discard_reason is "
            f"{_type_name(result.discard_reason)}, not a string or None",
        )
    return result


def check_selection(indices: Any, n: int, component: Any, key: str) -> list[int]:
    """A ranker's selection as a list of ints in 0..n-1; PluginFault for anything else."""
    items = _as_list(indices)
    if items is None:
        raise _fault(component, key, f"returned {_type_name(indices)}, not a list of indices")
    out: list[int] = []
    for i, value in enumerate(items):
        index = _as_index(value)
        if index is None:
            raise _fault(
                component, key,
                f"returned a selection whose [{i}] is {value!r} ({_type_name(value)}), "
                "not an int",
            )
        if not 0 <= index < n:
            valid = f"0..{n - 1}" if n else "none: there are no samples"
            raise _fault(
                component, key,
                f"returned index {index} at [{i}], out of range for {n} samples (valid: {valid})",
            )
        out.append(index)
    return out


def _as_index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    module = type(value).__module__.split(".")[0]
    if module in ("numpy", "torch") and getattr(value, "ndim", None) == 0:
        item = value.item()
        if isinstance(item, int) and not isinstance(item, bool):
            return item
    return None

