"""Test-only stages for the recipe, CLI and runner tests (no model, no torch in the stages).

The tests copy this file into a temporary site directory as module `rlhfx_teststages` with a
fake distribution `rlhfx-teststages` (see `rlhfx.testing.write_plugin_distribution`), so it is
loaded through the real entry-point path, in-process and in subprocesses alike.
"""

from __future__ import annotations

import json
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlhfx import (
    CleanerRef,
    ComponentConfig,
    DataSource,
    ModelSource,
    RewardSource,
    RewardSourceRef,
    Stage,
    UserError,
    hookimpl,
)
from rlhfx.files import append_jsonl, read_jsonl, write_jsonl


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: int = 0
    stop: int


class MakeConfig(ComponentConfig):
    #: Required: how many rows to write.
    count: int = Field(ge=0)
    mode: Literal["plain", "fancy"] = "plain"
    window: Window | None = None
    #: Raise once (the first attempt), to test resuming an interrupted stage.
    fail_once: bool = False
    #: Raise a UserError, to test how the CLI reports it.
    user_error: bool = False


class Make(Stage):
    """Write `count` rows and a notes file."""

    name = "make"
    Config = MakeConfig
    config: MakeConfig
    outputs = ("rows", "notes")

    def run(self, ctx: Any) -> dict[str, str]:
        import torch

        c = self.config
        append_jsonl(ctx.run_dir / "calls.jsonl", {"stage": ctx.stage_id, "seed": ctx.seed})
        if c.user_error:
            raise UserError(f"{ctx.recipe_file}: stages.{ctx.stage_id}: planned user error")
        marker = ctx.stage_dir / "attempted"
        if c.fail_once and not marker.exists():
            marker.write_text("1")
            raise RuntimeError("planned failure")
        rows = [
            {"i": i, "seed": ctx.seed, "torch": float(torch.rand(1)), "random": random.random()}
            for i in range(c.count)
        ]
        write_jsonl(ctx.stage_dir / "rows.jsonl", rows)
        (ctx.stage_dir / "notes.txt").write_text(c.mode, encoding="utf-8")
        ctx.log.info("made %d rows", c.count)
        ctx.log_metrics(0, {"rows": c.count})
        ctx.log_metrics(1, {"rows": c.count, "done": 1.0})
        # Deliberately not in declared order: `@stage` must still mean the first declared.
        return {
            "notes": str(ctx.stage_dir / "notes.txt"),
            "rows": str(ctx.stage_dir / "rows.jsonl"),
        }


class ConsumeConfig(ComponentConfig):
    source: DataSource
    model: ModelSource | None = None
    reward: RewardSourceRef | None = None
    cleaners: list[CleanerRef] = Field(default_factory=list)


class Consume(Stage):
    """Read an earlier stage's rows (through `ctx.resolve`) and summarise them."""

    name = "consume"
    Config = ConsumeConfig
    config: ConsumeConfig
    outputs = ("summary",)

    def run(self, ctx: Any) -> dict[str, str]:
        append_jsonl(ctx.run_dir / "calls.jsonl", {"stage": ctx.stage_id, "seed": ctx.seed})
        path = ctx.resolve(self.config.source)
        rows = list(read_jsonl(path))
        summary: dict[str, Any] = {"source": path, "n": len(rows)}
        if self.config.reward is not None:
            reward = self.config.reward.build()
            summary["scores"] = reward.score(["p"] * len(rows), [str(r["i"]) for r in rows])
        out = ctx.stage_dir / "summary.json"
        out.write_text(json.dumps(summary), encoding="utf-8")
        return {"summary": str(out)}


class Noop(Stage):
    """A stage without outputs."""

    name = "noop"

    def run(self, ctx: Any) -> dict[str, str]:
        return {}


class LinesConfig(ComponentConfig):
    path: DataSource


class Lines(RewardSource):
    """Scores every response with the number of lines of `path` (which must be a real file)."""

    name = "lines"
    Config = LinesConfig

    def score(self, prompts, responses):
        with open(self.config.path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        return [float(n)] * len(responses)


@hookimpl
def rlhfx_register_reward_sources(register):
    register(Lines)


@hookimpl
def rlhfx_register_stages(register):
    register(Make)
    register(Consume)
    register(Noop)


@hookimpl
def rlhfx_log_metrics(run_dir, stage, step):  # a subset of the hook's arguments is allowed
    append_jsonl(f"{run_dir}/hooked.jsonl", {"stage": stage, "step": step})
    if step == 1:
        raise RuntimeError("tracker is down")  # must not stop the run
