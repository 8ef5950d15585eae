"""Reading records from a local file or a hub dataset, one at a time, with where each came from.

A bad line (not UTF-8, not JSON, not an object) comes back as a `Row` carrying a `BadRow`
instead of a record, so the caller decides: stop with its file and line (the default), or count
it and move on (`skip_bad_rows`). A file that cannot be read at all (missing, a directory,
damaged gzip stream, a .json that does not parse) is a `UserError` naming the file. A UTF-8
byte-order mark (Windows editors write one) is accepted.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfx import UserError
from rlhfx.config import DATA_SUFFIXES, SourceStr
from rlhfx.data.preference import BadRow

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".jsonl.gzip")
JSON_SUFFIXES = (".json", ".json.gz")


@dataclass
class Row:
    where: str  # "line 12", "instances[3]", "row 5"
    record: dict[str, Any] | None = None
    error: BadRow | None = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (*JSONL_SUFFIXES, *JSON_SUFFIXES, ".parquet"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or SourceStr(source).looks_local


def iter_rows(source: str, split: str = "train") -> Iterator[Row]:
    """Rows of a local file (.jsonl[.gz], .json[.gz], .parquet) or of a hub dataset's split."""
    path = Path(source).expanduser()
    if not is_local(source):
        yield from _hub_rows(source, split)
        return
    if not path.exists():
        raise UserError(f"{path}: file does not exist")
    if path.is_dir():
        _check_data_folder(path)
        yield from _hub_rows(str(path), split)  # a folder of data files
        return
    suffix = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        yield from _jsonl_rows(path)
    elif suffix in JSON_SUFFIXES:
        yield from _json_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise UserError(
            f"{path}: unknown data file type '{suffix}' "
            "(use .jsonl, .jsonl.gz, .json, .json.gz or .parquet)"
        )


#: What `datasets.load_dataset` reads from a local folder.
FOLDER_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".gz", ".arrow")


def _check_data_folder(path: Path) -> None:
    """A folder named like a data file, or one with no data file inside, is a mistake (read
    as a dataset it gives a confusing error and writes to the hub cache)."""
    if _suffix(path) in (*JSONL_SUFFIXES, *JSON_SUFFIXES) or path.suffix.lower() in DATA_SUFFIXES:
        raise UserError(f"{path}: is a directory, not a data file; name the file itself")
    if not any(p.is_file() and p.name.lower().endswith(FOLDER_SUFFIXES) for p in path.rglob("*")):
        raise UserError(
            f"{path}: is a directory with no data files (.jsonl, .json, .parquet, .csv) in it; "
            "name a data file or a hub dataset id"
        )


def _open_binary(path: Path) -> Any:
    if path.name.lower().endswith((".gz", ".gzip")):
        return gzip.open(path, "rb")
    return path.open("rb")


def _jsonl_rows(path: Path) -> Iterator[Row]:
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                yield _parse_line(raw, lineno)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: line {lineno + 1}: cannot read the file ({exc})") from None


def _parse_line(raw: bytes, lineno: int) -> Row:
    where = f"line {lineno}"
    try:
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return Row(where, error=BadRow("bad_utf8", f"not UTF-8 ({exc.reason} at byte {exc.start})"))
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(where, error=BadRow("bad_json", f"not JSON ({exc.msg}, column {exc.colno})"))
    if not isinstance(record, dict):
        kind = type(record).__name__
        return Row(where, error=BadRow("bad_json", f"a JSON {kind}, not an object"))
    return Row(where, record=record)


def _json_rows(path: Path) -> Iterator[Row]:
    """A whole-file JSON: LMFlow's `{"instances": [...]}` or a plain list of objects."""
    try:
        with _open_binary(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read the file ({exc})") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("instances"), list):
        items, label = data["instances"], "instances"
    elif isinstance(data, list):
        items, label = data, "item"
    else:
        raise UserError(
            f"{path}: expected LMFlow's {{\"instances\": [...]}} or a list of objects, "
            f"got a JSON {type(data).__name__}"
            + (f" with keys {', '.join(list(data)[:5])}" if isinstance(data, dict) else "")
        )
    for i, item in enumerate(items):
        where = f"{label}[{i}]"
        if isinstance(item, dict):
            yield Row(where, record=item)
        else:
            kind = type(item).__name__
            yield Row(where, error=BadRow("bad_json", f"a JSON {kind}, not an object"))


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise UserError(f"{path}: cannot read as parquet ({exc})") from None
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            n += 1
            yield Row(f"row {n}", record=record)


def _hub_rows(source: str, split: str) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as exc:  # network, missing split, unknown id: all user-fixable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{source}: cannot load dataset split '{split}': {first}") from None
    for i, record in enumerate(ds, start=1):
        yield Row(f"row {i}", record=dict(record))
