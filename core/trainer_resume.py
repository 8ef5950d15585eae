"""Resuming a Trainer-based stage (SFT, reward model) as if it had never stopped.

Three things an interrupted HF Trainer run gets wrong on its own:

- `metrics.jsonl` already holds the records logged after the checkpoint it resumes from; they
  are logged again, so the file must be cut back to that checkpoint first.
- The Trainer restarts its running loss total (and TRL its token count) from zero, so the final
  `train_loss` would cover only the steps after the resume. The totals are saved into each
  checkpoint's `trainer_state.json` (`stateful_callbacks`) and put back.
- A checkpoint whose files are damaged (a truncated weights or optimizer file) makes every rerun
  fail inside `torch.load`. Such a checkpoint is moved aside (never deleted) and the previous
  intact one is used; with none left, the error says how to go on.

Nothing here imports torch or transformers: the files are checked by their headers.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError
from rlhfx.files import atomic_write_text
from rlhfx.preflight import check_weights_file

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
#: Where damaged or incomplete checkpoints are moved, beside the checkpoints folder (outside
#: it, so the Trainer's rotation of `checkpoint-*` folders never picks them up).
SET_ASIDE = "checkpoints-set-aside"
#: The key of the saved totals in `trainer_state.json`'s `stateful_callbacks` (the class name of
#: the callback that writes them).
TOTALS_KEY = "ProgressAndMetrics"


@dataclass
class Resume:
    """Where a Trainer stage resumes: a checkpoint and the totals saved with it (or nothing)."""

    checkpoint: Path | None = None
    step: int = 0
    total_loss: float | None = None  # the running loss sum at the checkpoint
    unlogged_loss: float | None = None  # the part of it not yet logged
    last_logged_step: int | None = None
    num_tokens: int | None = None  # TRL's SFT token count at the checkpoint
    #: TRL's per-step figures since the last log (their mean is logged next)
    pending: dict[str, list[float]] | None = None


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the `checkpoint-N` folders, newest first."""
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir()
        if p.is_dir() and (m := CHECKPOINT.fullmatch(p.name))
    ]
    return sorted(found, reverse=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (cheap: headers and sizes only), or None."""
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except OSError:
        return f"no {TRAINER_STATE} (cut short while saving)"
    except ValueError as exc:
        return f"{TRAINER_STATE} is unreadable ({exc})"
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        if file.suffix == ".safetensors":
            problem = check_weights_file(file)
            if problem:
                return problem
        elif file.suffix in (".pt", ".pth", ".bin"):
            problem = _torch_file_problem(file)
            if problem:
                return problem
    return None


def _torch_file_problem(file: Path) -> str | None:
    """torch.save writes a zip archive; a truncated one has no readable directory at its end."""
    size = file.stat().st_size
    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"{file}: truncated ({size} bytes)"
    except (zipfile.BadZipFile, OSError, ValueError):
        return f"{file}: damaged or truncated ({size} bytes)"
    return None


def set_aside(path: Path) -> Path:
    """Move a damaged checkpoint folder into `SET_ASIDE` beside its parent (never deleted)."""
    target_dir = path.parent.parent / SET_ASIDE
    target_dir.mkdir(parents=True, exist_ok=True)
    target, n = target_dir / path.name, 1
    while target.exists():
        n += 1
        target = target_dir / f"{path.name}-{n}"
    path.rename(target)
    return target


def find_checkpoint(
    folder: Path, where: str, log: logging.Logger, is_main: bool = True
) -> Path | None:
    """The newest checkpoint that can be resumed from; damaged ones are moved aside (warned).

    `where` names the stage in messages (`recipe.toml: stages.sft`). Raises UserError when
    checkpoints exist but none is intact.
    """
    moved: list[tuple[str, str, Path]] = []
    for _, path in checkpoints(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            if moved:
                log.warning("%s: resuming from the older %s instead", where, path.name)
            return path
        target = set_aside(path) if is_main else path
        moved.append((path.name, problem, target))
        log.warning("%s: %s cannot be resumed from: %s; moved it to %s", where, path.name,
                    problem, target)
    if moved:
        name, problem, target = moved[0]
        raise UserError(
            f"{where}: {name} cannot be resumed from ({problem}) and no older intact checkpoint "
            f"exists; it was moved to {target.parent}. Run the same command again to start "
            "this stage from its beginning"
        )
    return None


def trim_metrics(metrics_file: Path, step: int | None) -> int:
    """Drop the records logged after `step` (all of them for None): the resumed run logs them
    again. Returns how many were dropped."""
    if not metrics_file.exists():
        return 0
    lines = metrics_file.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record_step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue  # a line cut short by the kill
        if step is not None and isinstance(record_step, int) and record_step <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(metrics_file, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def prepare_resume(
    folder: Path, metrics_file: Path, where: str, log: logging.Logger, is_main: bool = True
) -> Resume:
    """Find the checkpoint to resume from, cut metrics.jsonl back to it, read its totals.

    Call it before the stage logs anything. With no checkpoint, the metrics of an earlier
    attempt are dropped (the stage starts over).
    """
    path = find_checkpoint(folder, where, log, is_main)
    if path is None:
        if is_main:
            trim_metrics(metrics_file, None)
        return Resume()
    state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    step = int(state.get("global_step") or path.name.rsplit("-", 1)[1])
    if is_main:
        trim_metrics(metrics_file, step)
    resume = Resume(checkpoint=path, step=step)
    saved = (state.get("stateful_callbacks") or {}).get(TOTALS_KEY)
    attributes: dict[str, Any] = saved.get("attributes") or {} if isinstance(saved, dict) else {}
    if attributes:
        resume.total_loss = attributes.get("total_loss")
        resume.unlogged_loss = attributes.get("unlogged_loss")
        resume.last_logged_step = attributes.get("last_logged_step")
        resume.num_tokens = attributes.get("num_tokens")
        resume.pending = attributes.get("pending")
    else:  # saved by an older rlhfx: rebuild what the log history allows
        resume.total_loss, resume.num_tokens = _totals_from_history(state, step)
    return resume


def _totals_from_history(state: dict[str, Any], step: int) -> tuple[float | None, int | None]:
    total, previous, tokens = 0.0, 0, None
    for record in state.get("log_history") or []:
        at = record.get("step", 0)
        if at > step:
            break
        if "loss" in record:
            total += float(record["loss"]) * (at - previous)
            previous = at
        if "num_tokens" in record:
            tokens = int(record["num_tokens"])
    return (total if previous else None), tokens
