"""Which algorithm learns the tiny task fastest per CPU-minute?

Runs RAFT, PPO, GRPO, RLOO, REINFORCE++ and online DPO one after another in this process on
the same tiny setup: the built-in tiny GPT-Neo policy and prompts, the word-bonus rule reward
(+1 per run of 3+ letters), 16-token answers, one torch thread, the same seed. Each algorithm
keeps the options of its `recipes/tiny_<name>.toml` (batch size, k, learning rate, its
iteration count; REINFORCE++ has no tiny recipe and borrows GRPO's); the held-out eval is
turned off (it is not training cost). Gain = mean reward of the last `--last` iterations minus
the first iteration's (the policy before any update sampled those). CPU time is this
process's plus its helper processes' (the curve plotter); wall time is what a user waits.
Algorithms that are not installed are listed as missing.

    python bench/bench_gain_per_minute.py [--iterations N] [--last 3] [--seed 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("raft", "ppo", "grpo", "rloo", "reinforce_pp", "online_dpo")
#: recipe an algorithm borrows its options from when it has none of its own
BORROWS = {"reinforce_pp": "grpo"}
WORD_BONUS = {"name": "pattern_penalty",
              "rules": [{"pattern": "[A-Za-z]{3,}", "penalty": -1.0}]}


def options_for(name: str, iterations: int | None) -> dict[str, Any]:
    source = ROOT / "recipes" / f"tiny_{BORROWS.get(name, name)}.toml"
    with source.open("rb") as f:
        options = dict(tomllib.load(f)["stages"]["align"]["algorithm"])
    options.update(name=name, min_new_tokens=16, max_new_tokens=16, eval_every=0,
                   torch_threads=1, save_samples=False)
    if iterations is not None:
        options["iterations"] = iterations
    options["save_every"] = options["iterations"]  # one checkpoint, at the end
    return options


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_recipe(path: Path, options: dict[str, Any], seed: int) -> None:
    path.write_text(
        f"[run]\nseed = {seed}\n\n[stages.align]\npolicy = \"builtin:tiny-gpt-neo\"\n"
        "prompts = \"builtin:tiny-prompts\"\n"
        f"reward = {toml_value(WORD_BONUS)}\nalgorithm = {toml_value(options)}\n",
        encoding="utf-8",
    )


def cpu_seconds() -> float:
    own = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


def run_one(name: str, workdir: Path, iterations: int | None, seed: int) -> dict[str, Any]:
    from rich.console import Console

    from rlhfx.recipe import load_recipe
    from rlhfx.registry import get_plugins, reset_plugins
    from rlhfx.runner import run_recipe

    options = options_for(name, iterations)
    recipe = workdir / f"{name}.toml"
    write_recipe(recipe, options, seed)
    reset_plugins()
    plugins = get_plugins()
    out = workdir / name
    cpu, wall = cpu_seconds(), time.perf_counter()
    run_recipe(load_recipe(recipe, plugins), console=Console(file=io.StringIO()),
               output_dir=out, plugins=plugins)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    reset_plugins()
    lines = (out / "stages" / "align" / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r.get("step", 0) > 0]
    return {"records": records, "cpu": cpu, "wall": wall, "options": options}


def installed() -> set[str]:
    from rlhfx.registry import get_plugins, reset_plugins

    reset_plugins()
    names = set(get_plugins().names("algorithm"))
    reset_plugins()
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None,
                        help="the same count for every algorithm (default: each recipe's)")
    parser.add_argument("--last", type=int, default=3, help="iterations averaged at the end")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="a subset of the algorithms")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    available = installed()
    wanted = [a for a in ALGORITHMS if args.only is None or a in args.only]
    missing = [a for a in wanted if a not in available]
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlhfx-gain-") as tmp:
        for name in wanted:
            if name in missing:
                continue
            print(f"running {name} ...", flush=True)
            result = run_one(name, Path(tmp), args.iterations, args.seed)
            rewards = [r["reward_mean"] for r in result["records"]]
            last = rewards[-args.last:]
            gain = sum(last) / len(last) - rewards[0]
            o = result["options"]
            rows.append((name, len(rewards), result["records"][0]["num_samples"], rewards[0],
                         sum(last) / len(last), gain, result["cpu"] / 60, result["wall"] / 60,
                         gain / (result["cpu"] / 60), gain / (result["wall"] / 60),
                         o.get("learning_rate")))
    load_after = os.getloadavg()

    print()
    print(f"Reward gain per CPU-minute on the tiny task (seed {args.seed}, word bonus, "
          "16-token answers, 1 torch thread; gain = mean of the last "
          f"{args.last} iterations - iteration 1)")
    header = ("algorithm", "iters", "samples/it", "reward it1", f"last {args.last}", "gain",
              "CPU min", "wall min", "gain/CPU-min", "gain/wall-min", "lr")
    print(" | ".join(f"{h:>12}" for h in header))
    for row in sorted(rows, key=lambda r: -r[8]):
        cells = [f"{row[0]:>12}", f"{row[1]:>12d}", f"{row[2]:>12d}"]
        cells += [f"{v:>12.2f}" for v in row[3:6]]
        cells += [f"{v:>12.3f}" for v in row[6:8]]
        cells += [f"{v:>12.2f}" for v in row[8:10]]
        cells.append(f"{row[10]:>12g}")
        print(" | ".join(cells))
    if missing:
        print(f"missing (not installed): {', '.join(missing)}")
    print(describe())
    print(f"machine: {os.cpu_count()} CPUs, load average (1/5/15 min) before "
          f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
          f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")


if __name__ == "__main__":
    main()
