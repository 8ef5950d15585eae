"""Checks, before any stage runs, that every local model and tokenizer a recipe names is there.

A reward model saved without its tokenizer, a folder of Trainer checkpoints named as a model, or
truncated weights would otherwise fail only after the policy has loaded and generation ran
(minutes later), with a reshape error or a hint to install sentencepiece. These checks read a
few bytes of each file (config, safetensors headers, file names), never a model.

An earlier stage's output (`@stage.model`) is checked when an earlier run completed that stage
(a resumed run loads it from disk), and skipped when this run will write it; hub ids and built-in
models need no local files and are skipped too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhfx.config import BUILTIN_PREFIX, PKG_PREFIX, ComponentRef, ModelSourceStr, SourceStr
from rlhfx.errors import UserError

#: Files that hold a tokenizer's vocabulary (any one is enough for AutoTokenizer).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
    "sentencepiece.bpe.model", "merges.txt",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def model_sources(value: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    """(recipe key, source, tokenizer given beside it) for each model source in a config tree.

    A field named `tokenizer` is yielded as a tokenizer (key ends in `.tokenizer`).
    """
    if isinstance(value, ComponentRef):
        try:
            config = value.config
        except RuntimeError:  # not bound: validation reported it
            return
        yield from model_sources(config, path)
    elif isinstance(value, BaseModel):
        own_tokenizer = isinstance(getattr(value, "tokenizer", None), str)
        for name in type(value).model_fields:
            item = getattr(value, name)
            if isinstance(item, ModelSourceStr):
                yield f"{path}.{name}", str(item), own_tokenizer
            else:
                yield from model_sources(item, f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from model_sources(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from model_sources(item, f"{path}.{key}")


def check_recipe(
    recipe_file: str,
    stages: Iterable[tuple[str, Any]],
    finished: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Check every model source of the given (stage id, StageRef) pairs; one UserError listing
    every problem found.

    `finished` holds the outputs of stages an earlier run completed, so `@stage.model` sources
    they wrote are checked too (the others are written by this run)."""
    problems: list[str] = []
    for stage_id, ref in stages:
        for key, source, has_tokenizer in model_sources(ref, f"stages.{stage_id}"):
            is_tokenizer = key.rsplit(".", 1)[-1] == "tokenizer"
            source = _finished_output(source, finished or {})
            problem = check_source(source, tokenizer_only=is_tokenizer,
                                   needs_tokenizer=not has_tokenizer)
            if problem:
                problems.append(f"{recipe_file}: {key}: {problem}")
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)))


def _finished_output(source: str, finished: Mapping[str, Mapping[str, str]]) -> str:
    """The path behind `@stage[.output]` when that stage finished earlier, else the source."""
    ref = SourceStr(source).stage_ref
    if ref is None or ref[0] not in finished:
        return source
    outputs = finished[ref[0]]
    name = ref[1] if ref[1] is not None else next(iter(outputs), None)
    return outputs.get(name, source) if name is not None else source


def check_source(
    source: str, tokenizer_only: bool = False, needs_tokenizer: bool = True
) -> str | None:
    """What is wrong with a model (or tokenizer) source, or None; cheap."""
    text = source.strip()
    if text.startswith("@") or text.startswith(BUILTIN_PREFIX):
        return None
    if text.startswith(PKG_PREFIX):
        from rlhfx.model_sources import package_path

        try:
            path = package_path(text)
        except UserError as exc:
            return str(exc)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            return None  # a hub id (a missing local path was refused by validation)
    if path.is_file():
        return _check_file(path)
    if tokenizer_only:
        return _check_tokenizer(path, "no tokenizer files ({}); name the folder the "
                                      "tokenizer was saved in")
    return _check_model_dir(path, needs_tokenizer)


def _check_file(path: Path) -> str | None:
    if path.suffix.lower() == ".gguf":
        return _check_gguf(path)
    return None  # other files are refused by the model loader with their own message


def _check_gguf(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror})"
    if magic != b"GGUF":
        return f"{path}: not a GGUF file (it does not start with 'GGUF'); download it again"
    return None


def _check_tokenizer(path: Path, message: str) -> str | None:
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    if list(path.glob("*.gguf")):  # a GGUF file carries its tokenizer
        return None
    return f"{path}: " + message.format(", ".join(TOKENIZER_FILES[:4]) + ", ...")


def _checkpoints(path: Path) -> list[Path]:
    found = [
        (int(m.group(1)), p) for p in path.iterdir()
        if p.is_dir() and (m := CHECKPOINT.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found)]


def _check_model_dir(path: Path, needs_tokenizer: bool) -> str | None:
    config = path / "config.json"
    ggufs = sorted(path.glob("*.gguf"))
    adapter = (path / "adapter_config.json").is_file()
    if not config.is_file() and not adapter:
        if len(ggufs) == 1:
            return _check_gguf(ggufs[0])
        if len(ggufs) > 1:
            return None  # the loader names the files to choose from
        checkpoints = _checkpoints(path)
        if checkpoints:
            newest = checkpoints[-1]
            names = ", ".join(p.name for p in checkpoints[-3:])
            return (
                f"{path}: holds Trainer checkpoints ({names}), not a model; name the newest, "
                f"{newest}, or the stage's saved model"
            )
        return (
            f"{path}: no config.json: not a saved model (save it with save_pretrained, or name "
            "the folder that holds config.json)"
        )
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return f"{config}: unreadable model config ({_short(exc)}); save the model again"
    problem = _check_weights(path, adapter)
    if problem:
        return problem
    if needs_tokenizer:
        return _check_tokenizer(
            path, "no tokenizer files ({}); save the tokenizer beside the model or set tokenizer"
        )
    return None


def _check_weights(path: Path, adapter: bool) -> str | None:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"{index}: unreadable shard index ({_short(exc)}); save the model again"
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            return f"{path}: weight shards missing: {', '.join(missing)}; copy them beside " \
                   f"{index.name}"
    weights = sorted(p for p in path.iterdir()
                     if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES)
                     and p.name != "training_args.bin")
    if not weights:
        what = "adapter_model.safetensors" if adapter else "model.safetensors or pytorch_model.bin"
        return f"{path}: no weights ({what}); the model was not saved completely"
    for file in weights:
        problem = check_weights_file(file)
        if problem:
            return problem
    return None


def check_weights_file(file: Path) -> str | None:
    """A one-line problem with a weights file (header or size), read without loading it."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            head = f.read(8)
            if file.suffix == ".safetensors":
                return _check_safetensors(file, f, head, size)
    except OSError as exc:
        return f"{file}: cannot read ({exc.strerror})"
    if size == 0:
        return f"{file}: empty weights file; save the model again"
    if file.suffix == ".bin" and not (head.startswith(b"PK") or head[:1] == b"\x80"):
        return f"{file}: not a PyTorch weights file (damaged); save the model again"
    return None


def _check_safetensors(file: Path, f: Any, head: bytes, size: int) -> str | None:
    damaged = f"{file}: damaged safetensors file"
    if len(head) < 8:
        return f"{damaged} (only {size} bytes); save the model again"
    n = int.from_bytes(head, "little")
    if n < 2 or 8 + n > size:
        return f"{damaged} (its header is cut off or invalid); save the model again"
    try:
        header = json.loads(f.read(n).decode("utf-8"))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError):
        return f"{damaged} (unreadable header); save the model again"
    if 8 + n + end > size:
        return (f"{damaged} (truncated: {size} bytes of {8 + n + end}); save the model again "
                "or copy it completely")
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
