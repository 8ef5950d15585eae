"""Per-iteration checkpoints that survive `kill -9` at any moment.

Layout under the stage directory:
    checkpoints/iter-0003/     policy (or LoRA adapter) + tokenizer + state.json
    checkpoints/latest.json    {"iteration": 3, "dir": "iter-0003"}: the one to resume from

A checkpoint is written into a hidden temporary directory and renamed into place, and only
then is `latest.json` replaced (atomically). A kill before that rename leaves the previous
checkpoint in force; the half-written directory is cleaned up on the next start.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError
from rlhfx.io import atomic_write_json

LATEST = "latest.json"
STATE = "state.json"


@dataclass
class RaftState:
    """What a resumed run needs besides the weights."""

    iteration: int = 0  # last completed iteration (1-based; 0 = none yet)
    fingerprint: str = ""  # RaftConfig.fingerprint() of the run that wrote it
    lora: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per step
    warned: list[str] = field(default_factory=list)
    reward_state: dict[str, Any] = field(default_factory=dict)  # RewardSource.state_dict()

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RaftState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


_RECOVER = (
    "fix or delete it (deleting latest.json starts the stage over), or rerun with "
    "--restart-from <stage>"
)


def _read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file; a damaged or missing one is a UserError saying what to do."""
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

    def latest(self) -> tuple[Path, RaftState] | None:
        """The newest complete checkpoint, or None for a fresh start."""
        pointer = self.root / LATEST
        if not pointer.exists():
            return None
        info = _read_json(pointer)
        if not isinstance(info.get("dir"), str) or not (self.root / info["dir"]).is_dir():
            raise UserError(
                f"{pointer}: names no checkpoint directory here; {_RECOVER}"
            )
        path = self.root / info["dir"]
        try:
            state = RaftState.from_json(_read_json(path / STATE))
        except TypeError as exc:
            raise UserError(f"{path / STATE}: unexpected content ({exc}); {_RECOVER}") from None
        return path, state

    def clean_partial(self) -> None:
        """Remove temporary directories left by a kill in the middle of a save."""
        if self.root.exists():
            for item in self.root.iterdir():
                if item.name.startswith(".") and item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)

    def save(self, model: Any, tokenizer: Any, state: RaftState) -> Path:
        """Write a checkpoint for `state.iteration` and make it the one to resume from."""
        name = f"iter-{state.iteration:04d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp)  # a PeftModel writes only its adapter
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / STATE, state.to_json())
        # No fsync of the weights: a killed process loses nothing the kernel already has, and
        # the rename below is atomic. (A power cut may need the previous checkpoint.)
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
