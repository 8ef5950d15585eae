"""StageContext (resolving `@stage.output`, metrics, progress) and the io helpers."""

from __future__ import annotations

import io
import json
import logging
import types
from pathlib import Path

import pytest
from rich.console import Console

from rlhfx import StageContext, UserError, hookimpl, registry
from rlhfx.files import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl


def make_ctx(tmp_path: Path, system=None, **kw) -> StageContext:
    return StageContext(
        run_dir=tmp_path, stage_id="align", seed=3, device="cpu",
        console=Console(file=io.StringIO()),
        plugins=system or registry.PluginSystem(), recipe_file="r.toml", **kw,
    )


# ------------------------------------------------------------------------------ resolve


def test_resolve_stage_outputs(tmp_path):
    ctx = make_ctx(tmp_path, earlier_outputs={
        "sft": {"model": "/runs/x/stages/sft/model", "tokenizer": "/t"}, "empty": {},
    })
    assert ctx.resolve("@sft") == "/runs/x/stages/sft/model"  # first output = default
    assert ctx.resolve("@sft.tokenizer") == "/t"
    assert ctx.resolve("gpt2") == "gpt2"  # hub ids pass through
    assert ctx.resolve("~/data.jsonl") == str(Path.home() / "data.jsonl")
    with pytest.raises(UserError, match=r"r\.toml: '@rm' has not run before 'align'"):
        ctx.resolve("@rm.model")
    with pytest.raises(UserError, match="stage 'sft' has no output 'weights' "
                                        r"\(it produced: model, tokenizer\)"):
        ctx.resolve("@sft.weights")
    with pytest.raises(UserError, match="stage 'empty' produced no output"):
        ctx.resolve("@empty")


def test_stage_dir_and_metrics_file(tmp_path):
    ctx = make_ctx(tmp_path)
    assert ctx.stage_dir == tmp_path / "stages" / "align"
    assert ctx.metrics_file == tmp_path / "stages" / "align" / "metrics.jsonl"


# ------------------------------------------------------------------------------ metrics


def test_log_metrics_appends_and_calls_each_plugin(tmp_path):
    seen = []

    def full(run_dir, stage, step, metrics):
        seen.append(("full", run_dir, stage, step, metrics))
        metrics["mutated"] = True  # a copy: the record on disk and others do not change

    def partial(step):  # a subset of the arguments is enough
        seen.append(("partial", step))

    def broken(metrics):
        raise ConnectionError("tracker offline")

    system = registry.PluginSystem()
    for name, fn in (("a_full", full), ("b_partial", partial), ("c_broken", broken)):
        module = types.ModuleType(name)
        module.rlhfx_log_metrics = hookimpl(fn)
        system.add_plugin(module, registry.PluginInfo(name, "0", False, name))
    log = logging.getLogger("test_ctx")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log.addHandler(handler)
    ctx = make_ctx(tmp_path, system, log=log)
    try:
        ctx.log_metrics(1, {"reward": 0.5})
        ctx.log_metrics(2, {"reward": 0.75})
    finally:
        log.removeHandler(handler)
    rows = list(read_jsonl(ctx.metrics_file))
    assert [(r["step"], r["reward"]) for r in rows] == [(1, 0.5), (2, 0.75)]
    assert all("mutated" not in r and isinstance(r["time"], float) for r in rows)
    assert ("partial", 1) in seen and ("partial", 2) in seen
    assert ("full", str(tmp_path), "align", 2, {"reward": 0.75, "mutated": True}) in seen
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, not at every step
    assert warnings[0].startswith(
        "plugin 'c_broken' (c_broken 0): rlhfx_log_metrics failed (ConnectionError: tracker "
        "offline) at "
    )
    assert warnings[0].endswith("; its later errors are not shown")


def test_log_metrics_only_on_the_main_process(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ctx = make_ctx(tmp_path)
    assert not ctx.is_main
    ctx.log_metrics(0, {"x": 1})
    assert not ctx.metrics_file.exists()


def test_progress_is_usable(tmp_path):
    ctx = make_ctx(tmp_path)
    with ctx.progress() as progress:
        task = progress.add_task("work", total=2)
        progress.advance(task)
        progress.advance(task)
        assert progress.tasks[0].completed == 2


# ------------------------------------------------------------------------------ io


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic_write_text(target, "replaced")
    assert target.read_text() == "replaced"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {1j: 2})  # a key JSON cannot hold
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_jsonl_round_trip_and_torn_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, [{"a": 1}, {"text": "ünïcode\nnewline"}]) == 2
    append_jsonl(path, {"a": 3})
    with path.open("a") as f:
        f.write('{"a": 4, "trunc')  # a kill in the middle of a write
    assert list(read_jsonl(path)) == [{"a": 1}, {"text": "ünïcode\nnewline"}, {"a": 3}]
    assert json.loads(path.read_text().splitlines()[1])["text"] == "ünïcode\nnewline"
