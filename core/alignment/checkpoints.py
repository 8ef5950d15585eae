"""One checkpoint layout for every algorithm, safe against `kill -9` at any moment.

Under the stage directory:
    checkpoints/iter-0003/algorithm.safetensors  the tensors of the algorithm's state_dict()
    checkpoints/iter-0003/algorithm.json         the rest of it (state_files.py)
    checkpoints/iter-0003/loop.json              the loop's state (iteration, reward...)
    checkpoints/latest.json                      {"iteration": 3, "dir": "iter-0003"}

Every file is data: reading a checkpoint runs no code. A checkpoint written before this layout
(`algorithm.pt`) is read with `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers.

A checkpoint is written into a hidden temporary directory and renamed into place; only then
is `latest.json` replaced (atomically). A kill before that leaves the previous checkpoint in
force, and the half-written directory is removed on the next start. A checkpoint that cannot
be read (a truncated file, a disk error) is moved to `checkpoints-set-aside/` (never deleted)
and the previous intact one is used; so is a file that is not what the loader expects (a
planted pickle, say). Every iteration reseeds its random generators from
(seed, iteration), so no RNG state needs saving.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError
from rlhfx.files import atomic_write_json

LATEST = "latest.json"
LOOP_STATE = "loop.json"
ALGORITHM_WEIGHTS = "algorithm.safetensors"
ALGORITHM_TREE = "algorithm.json"
LEGACY_STATE = "algorithm.pt"

_RECOVER = (
    "fix or delete it (deleting checkpoints/latest.json starts the stage over), or rerun with "
    "--restart-from <stage>"
)


@dataclass
class LoopState:
    """What a resumed run needs besides the algorithm's own state."""

    iteration: int = 0  # last completed iteration (0 = none yet)
    fingerprint: str = ""  # of the algorithm options a checkpoint depends on
    algorithm: str = ""
    reward_state: dict[str, Any] = field(default_factory=dict)  # RewardSource.state_dict()
    first_record: dict[str, Any] | None = None  # iteration 1's figures, for the guards

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {_RECOVER}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); {_RECOVER}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; {_RECOVER}")
    return data


class Checkpoints:
    def __init__(self, root: Path, keep: int = 1):
        self.root, self.keep = root, keep

    def find_intact(self, log: Any) -> tuple[Path | None, str | None]:
        """The newest checkpoint that loads (at or before the one `latest.json` names), and an
        error message when checkpoints exist but none is intact. Damaged ones are moved aside
        with a warning. Call it on the main process only."""
        from rlhfx.trainer_resume import set_aside

        dirs = sorted((p for p in self.root.glob("iter-*") if p.is_dir()), reverse=True)
        pointer = self._pointer(log)
        if pointer is not None:
            dirs = [d for d in dirs if d.name <= pointer]
        moved = []
        for path in dirs:
            try:
                LoopState.from_json(_read_json(path / LOOP_STATE))
                self.load_algorithm_state(path)
            except (UserError, TypeError) as exc:
                target = set_aside(path)
                log.warning("%s: damaged (%s); moved to %s", path, str(exc).split("; ")[0],
                            target)
                moved.append(target)
                continue
            if moved:
                log.warning("resuming from the older %s instead", path)
            return path, None
        if moved:
            return None, (f"{self.root}: no intact checkpoint left (damaged ones were moved to "
                          f"{moved[0].parent}); run the same command again to start this "
                          "stage over, or move a checkpoint back")
        return None, None

    def load(self, path: Path) -> tuple[LoopState, dict[str, Any]]:
        return LoopState.from_json(_read_json(path / LOOP_STATE)), self.load_algorithm_state(path)

    def _pointer(self, log: Any) -> str | None:
        """The checkpoint `latest.json` names (None when absent or unreadable: then the
        newest directory is the one)."""
        pointer = self.root / LATEST
        if not pointer.exists():
            return None
        try:
            name = _read_json(pointer).get("dir")
        except UserError as exc:
            log.warning("%s; using the newest checkpoint directory", str(exc).split("; ")[0])
            return None
        return name if isinstance(name, str) else None

    def load_algorithm_state(self, path: Path) -> dict[str, Any]:
        from rlhfx.alignment.state_files import StateFileError, load_state

        weights, tree = path / ALGORITHM_WEIGHTS, path / ALGORITHM_TREE
        if not tree.exists() and (path / LEGACY_STATE).exists():
            return _load_legacy(path / LEGACY_STATE)
        try:
            state = load_state(weights, tree)
        except FileNotFoundError as exc:
            raise UserError(f"{exc.filename}: missing; {_RECOVER}") from None
        except (StateFileError, OSError) as exc:
            raise UserError(f"{path}: cannot be read ({exc}); {_RECOVER}") from None
        if not isinstance(state, dict):
            raise UserError(f"{tree}: holds no algorithm state; {_RECOVER}")
        return state

    def clean_partial(self) -> None:
        """Remove what a kill in the middle of a save left: a checkpoint folder being written
        or a temporary file of `latest.json` (both named with a leading dot)."""
        if self.root.exists():
            for item in self.root.iterdir():
                if not item.name.startswith("."):
                    continue
                if item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)
                elif item.name.endswith(".tmp"):
                    item.unlink(missing_ok=True)

    def save(self, state: LoopState, algorithm_state: dict[str, Any]) -> Path:
        """Write the checkpoint of `state.iteration` and make it the one to resume from."""
        from rlhfx.alignment.state_files import save_state

        name = f"iter-{state.iteration:04d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            save_state(algorithm_state, tmp / ALGORITHM_WEIGHTS, tmp / ALGORITHM_TREE)
            atomic_write_json(tmp / LOOP_STATE, state.to_json())
        except BaseException:  # a full disk, a state that cannot be stored: no half checkpoint
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(self.root / LATEST, {"iteration": state.iteration, "dir": name})
        self._prune()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("iter-*") if p.is_dir())
        for old in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)


def _load_legacy(file: Path) -> dict[str, Any]:
    """A checkpoint of an earlier rlhfx: tensors and plain containers only, never code."""
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, or one that asks to run code
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{file}: cannot be read ({type(exc).__name__}: {first}); "
                        f"{_RECOVER}") from None
    if not isinstance(state, dict):
        raise UserError(f"{file}: holds no algorithm state; {_RECOVER}")
    return state
