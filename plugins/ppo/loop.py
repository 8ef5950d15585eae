"""The PPO run: load, resume, then per step collect -> update -> log -> checkpoint; save at the end.

What a run leaves in its stage directory: metrics.jsonl (TRL's classic stat names, one record
per step; with eval prompts also a step-0 record of the initial policy's eval), reward_curve.png
and kl_curve.png, samples/step_NNNNNN.jsonl (every response with its score and fate),
eval/step_NNNNNN.jsonl (the eval prompts' responses and rewards at step 0 and every eval_every
steps: what `rlhfx report` compares before and after), checkpoints/ (resume after a kill), and
model/ (the final policy, Hugging Face format, LoRA merged).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from rlhfx import StageContext, distributed
from rlhfx.errors import UserError
from rlhfx.io import atomic_write_json, read_jsonl, write_jsonl
from rlhfx.metrics import distinct_n, rounded

from . import checkpoint
from .config import PPOConfig
from .experience import Experience, collect, neutral_generation_config, policy_sampling
from .prompts import step_prompts

DONE = "ppo_done.json"


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one step on one process: a resumed step samples what it would have."""
    digest = hashlib.sha256(f"ppo-{seed}-{step}-{rank}".encode()).hexdigest()
    return int(digest[:15], 16)


def eval_seed(seed: int, rank: int) -> int:
    """The same sampling noise at every eval, so before/after differences come from the policy."""
    return step_seed(seed, -1, rank)


def run_ppo(ctx: StageContext, setup: Any, config: PPOConfig) -> dict[str, str]:
    stage_dir = ctx.stage_dir
    model_dir = stage_dir / "model"
    if (stage_dir / DONE).exists() and (model_dir / "config.json").exists():
        ctx.log.info("ppo: finished earlier; the final policy is in %s", model_dir)
        return {"model": str(model_dir)}
    run = PPORun(ctx, setup, config)
    run.train()
    run.save_final(model_dir)
    return {"model": str(model_dir)}


class PPORun:
    """One PPO stage run on this process (the main process also writes the files)."""

    def __init__(self, ctx: StageContext, setup: Any, config: PPOConfig):
        self.ctx, self.setup, self.config = ctx, setup, config
        self.seed = config.seed if config.seed is not None else ctx.seed
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self._check_split()
        self._load()

    # ------------------------------------------------------------------ set-up
    def _where(self, key: str) -> str:
        return f"{self.ctx.recipe_file}: stages.{self.ctx.stage_id}.algorithm.{key}"

    def _check_split(self) -> None:
        c = self.config
        for key in ("batch_size", "mini_batch_size"):
            value = getattr(c, key)
            if value % self.world:
                raise UserError(
                    f"{self._where(key)}: {value} does not split evenly over {self.world} "
                    "processes"
                )

    def _device(self) -> str:
        if self.ctx.device == "cuda":
            return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        return self.ctx.device

    def _load(self) -> None:
        import torch
        from trl.trainer.utils import disable_dropout_in_model

        from rlhfx.models import load_causal_lm, load_tokenizer

        from .trainer import PPOTrainer
        from .value_head import PolicyWithValueHead

        c, ctx = self.config, self.ctx
        if c.dtype == "float16" and not self._device().startswith("cuda"):
            raise UserError(f"{self._where('dtype')}: float16 needs a CUDA device (its gradients "
                            "need loss scaling); use bfloat16 on the CPU")
        self.tokenizer = load_tokenizer(self.setup.policy)
        self.prompts = self.setup.training_prompts(
            self.tokenizer, c.max_prompt_tokens, ctx.log, self._where("max_prompt_tokens")
        )
        self.steps = c.steps or max(1, len(self.prompts) // c.batch_size)
        self.stop_strings = self._stop_strings()

        # Trained weights stay float32 (the optimiser's master copy: bf16 weights round most
        # small updates away); `dtype` sets the compute precision (autocast, see the trainer).
        # With LoRA only the adapters train, so the frozen base may be stored in `dtype`; peft
        # keeps the adapters in float32.
        load_dtype = c.dtype if c.lora is not None else "float32"
        policy = load_causal_lm(self.setup.policy, dtype=load_dtype, device=self._device())
        self.generation_config = policy.generation_config
        reset = neutral_generation_config(policy, self.tokenizer)
        if reset:
            ctx.log.info("ppo: generation defaults of the policy ignored (plain sampling keeps "
                         "the KL estimate honest): %s", ", ".join(reset))
        if c.lora is not None:
            policy = c.lora.wrap(policy, "CAUSAL_LM", where=self._where("lora"))
        torch.manual_seed(self.seed)  # the same value head on every process
        self.model = PolicyWithValueHead(
            policy, 0.0 if c.disable_dropout else c.value_head_dropout
        )
        if c.disable_dropout:
            # After wrapping, so LoRA's own dropout goes too; the trainer also runs the update
            # in eval mode, the rollout pass's mode, so old and new log-probs match exactly.
            disable_dropout_in_model(self.model)
        self.trainer = PPOTrainer(c, self.model, self.tokenizer.pad_token_id, self._device())
        self.start = self._resume()
        self.trainer.prepare()

    def _stop_strings(self) -> list[str]:
        if self.config.stop_strings is not None:
            return list(self.config.stop_strings)
        return self.setup.default_stop_strings()

    def _resume(self) -> int:
        """Restore the last checkpoint (if any); returns the step it was taken after.

        Also sets `initial_eval_done`: a run killed before its first checkpoint keeps the
        step-0 eval it already logged instead of doing (and logging) it again."""
        step, initial_eval_done = 0, False
        path = checkpoint.latest(self.ctx.stage_dir / "checkpoints")
        if path is not None:
            state = checkpoint.load(path, self.model, self.trainer.optimizer,
                                    self.config.fingerprint(), self._where("*"),
                                    reward=self.setup.reward)
            self.trainer.load_state(state["trainer"])
            step = int(state["step"])
            self.ctx.log.info("ppo: resuming after step %d from %s", step, path)
        distributed.barrier()
        if self.ctx.is_main and self.ctx.metrics_file.exists():
            # Steps after the checkpoint are done again: their old records go.
            kept = [r for r in read_jsonl(self.ctx.metrics_file) if r.get("step", 0) <= step]
            write_jsonl(self.ctx.metrics_file, kept)
            initial_eval_done = any(r.get("step") == 0 and "eval/reward_mean" in r for r in kept)
        self.initial_eval_done = bool(distributed.broadcast_object(initial_eval_done))
        distributed.barrier()
        return step

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        c, ctx = self.config, self.ctx
        ctx.log.info(
            "ppo: %d steps of %d rollouts (%d per process), %d mini-batches x %d epochs, "
            "responses %d-%d tokens, %s, %d process(es) (%s)", self.steps, c.batch_size,
            c.batch_size // self.world, c.minibatches_per_epoch, c.ppo_epochs, c.output_min_length,
            c.output_max_length - 1, "LoRA" if c.lora else "full fine-tuning",
            self.trainer.accelerator.num_processes, self.trainer.accelerator.distributed_type.value,
        )
        with ctx.progress() as progress:
            task = progress.add_task("PPO steps", total=self.steps, completed=self.start)
            if self.start == 0 and self._eval_due(0):
                self.initial_eval()
            for step in range(self.start + 1, self.steps + 1):
                self.one_step(step, progress)
                for other in list(progress.task_ids):
                    if other != task:
                        progress.remove_task(other)
                progress.advance(task)

    def one_step(self, step: int, progress: Any) -> None:
        import torch

        c, ctx = self.config, self.ctx
        t0 = time.perf_counter()
        seed = step_seed(self.seed, step, self.rank)
        torch.manual_seed(seed)
        indices = distributed.shard(step_prompts(len(self.prompts), c.batch_size, step - 1,
                                                 self.seed))
        timings: dict[str, float] = {}
        low, high = c.output_min_length, c.output_max_length - 1
        exp = collect(
            self.model.policy, self.tokenizer, [self.prompts[i] for i in indices],
            self.setup.cleaners, self.setup.reward, policy_sampling(high, (low, high)),
            batch_size=c.inference_batch_size, stop_strings=self.stop_strings,
            min_response_tokens=c.min_response_tokens, discarded_score=c.discarded_score,
            rng=random.Random(seed), progress=progress, timings=timings,
            precision=self.trainer.autocast,
        )
        per_process = distributed.gather_objects(exp.scores)
        all_scores = [s for part in per_process for s in part]
        kl_coef = self.trainer.kl_ctl.value
        out = self.trainer.step(exp.queries, exp.responses, exp.scores, all_scores,
                                max(len(p) for p in per_process), seed)
        timings.update(out.timings)
        parts = distributed.gather_objects(_payload(exp, out, timings))
        metrics = combine(parts, kl_coef, self.trainer.optimizer.param_groups[0]["lr"])
        if metrics["ppo/kept"]:
            self.trainer.kl_ctl.update(metrics["objective/kl"], int(metrics["ppo/kept"]))
        if self._eval_due(step):
            started = time.perf_counter()
            metrics.update(self.evaluate(step))
            metrics["time/eval"] = max(distributed.gather_objects(time.perf_counter() - started))
        metrics["time/step"] = time.perf_counter() - t0
        metrics = rounded(metrics, 8)
        ctx.log_metrics(step, metrics)
        self._warn(step, metrics)
        if ctx.is_main:
            self._write_samples(step, parts)
            ctx.log.info(_summary(step, self.steps, metrics))
        if step % c.save_every == 0 or step == self.steps:
            if ctx.is_main:
                self._plot()  # about a second of matplotlib: with the checkpoints, not every step
            self._checkpoint(step)

    def _eval_due(self, step: int) -> bool:
        every = self.config.eval_every
        return bool(every and self.setup.eval_prompts) and (step % every == 0 or step == self.steps)

    def initial_eval(self) -> None:
        """Evaluate the policy before any update (step 0): the report's "before" column."""
        if self.initial_eval_done:
            self.ctx.log.info("ppo: the initial policy was evaluated before the interruption")
            return
        started = time.perf_counter()
        metrics = self.evaluate(0)
        # the slowest process's time, like the other time/ figures (the report's phase chart)
        metrics["time/eval"] = max(distributed.gather_objects(time.perf_counter() - started))
        metrics = rounded(metrics, 8)
        self.ctx.log_metrics(0, metrics)
        self.initial_eval_done = True
        reward = metrics["eval/reward_mean"]
        self.ctx.log.info("ppo: initial policy: eval reward %s",
                          "n/a" if reward is None else f"{reward:.3f}")

    def evaluate(self, step: int) -> dict[str, Any]:
        """Held-out prompts at a low temperature: a steadier view of the reward than training's.
        The responses go to eval/step_NNNNNN.jsonl (main process)."""
        from rlhfx.evaluation import evaluate_policy
        from rlhfx.rollouts import SamplingSettings

        c = self.config
        if not hasattr(self, "eval_prompts"):
            self.eval_prompts = self.setup.held_out_prompts(c.eval_max_prompts)
        sampling = SamplingSettings(
            max_new_tokens=c.eval_max_new_tokens or c.output_max_length - 1,
            temperature=c.eval_temperature, top_k=0, top_p=1.0,
        )
        return evaluate_policy(
            self.model.policy, self.tokenizer, self.eval_prompts, sampling,
            cleaners=self.setup.cleaners, reward=self.setup.reward,
            seed=eval_seed(self.seed, self.rank),  # each training step reseeds anyway
            out_file=self.ctx.stage_dir / "eval" / f"step_{step:06d}.jsonl",
            prefix="eval/", batch_size=c.inference_batch_size, stop_strings=self.stop_strings,
            autocast=self.trainer.autocast(),
        )

    # ------------------------------------------------------------------ reporting
    def _warn(self, step: int, metrics: dict[str, Any]) -> None:
        kl = metrics.get("objective/kl")
        tol = self.config.neg_kl_tolerance
        if kl is None or kl >= -tol:
            return
        self.ctx.log.warning(
            "step %d: mean KL %.3f is below -%g. The KL estimate assumes every trained token was "
            "sampled from the policy as it is; likely causes: changed sampling settings "
            "(min_length, top_k/top_p, temperature, repetition penalty) or tokens that differ "
            "from the sampled ones (%d responses re-tokenized after cleaning this step). With a "
            "negative KL the penalty turns into a bonus and the policy drifts.",
            step, kl, tol, int(metrics.get("ppo/retokenized", 0)),
        )

    def _write_samples(self, step: int, parts: list[dict[str, Any]]) -> None:
        if not self.config.save_samples:
            return
        rows = [row for part in parts for row in part["samples"]]
        write_jsonl(self.ctx.stage_dir / "samples" / f"step_{step:06d}.jsonl", rows)

    def _plot(self) -> None:
        from .plots import draw

        try:
            draw(list(read_jsonl(self.ctx.metrics_file)), self.ctx.stage_dir)
        except Exception as exc:  # a plot must never stop training
            self.ctx.log.warning("ppo: could not draw the curves: %s", exc)

    # ------------------------------------------------------------------ saving
    def _checkpoint(self, step: int) -> None:
        self._check_in_sync(step)
        distributed.barrier()
        if self.ctx.is_main:
            state = {"fingerprint": self.config.fingerprint(), "trainer": self.trainer.state(),
                     "steps": self.steps}
            checkpoint.save(self.ctx.stage_dir / "checkpoints", step, self.model,
                            self.trainer.optimizer, state, self.config.keep_checkpoints,
                            reward=self.setup.reward)
        distributed.barrier()

    def _check_in_sync(self, step: int) -> None:
        """Every process must hold the same weights (data parallelism); stop loudly if not."""
        if self.world == 1:
            return
        total = sum(float(p.detach().double().sum()) for p in self.model.parameters()
                    if p.requires_grad)
        sums = distributed.gather_objects(total)
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
            raise RuntimeError(f"step {step}: the processes' weights differ ({sums}); "
                               "gradients were not synchronised")

    def save_final(self, model_dir: Path) -> None:
        """The policy in Hugging Face format (LoRA merged), its tokenizer, and the value head."""
        import torch

        distributed.barrier()
        if self.ctx.is_main:
            policy = self.model.policy
            if self.config.lora is not None:
                policy = policy.merge_and_unload()
            policy.generation_config = self.generation_config
            tmp = model_dir.with_name(".tmp-model")
            if tmp.exists():
                shutil.rmtree(tmp)
            policy.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            torch.save(self.model.v_head.state_dict(), tmp / "value_head.pt")
            if model_dir.exists():
                shutil.rmtree(model_dir)
            tmp.rename(model_dir)
            atomic_write_json(self.ctx.stage_dir / DONE, {"steps": self.steps})
            self.ctx.log.info("ppo: final policy saved in %s", model_dir)
        distributed.barrier()


# ---------------------------------------------------------------------- step statistics
def _payload(exp: Experience, out: Any, timings: dict[str, float]) -> dict[str, Any]:
    """What one process contributes to the step's record."""
    samples = []
    kept = set(exp.kept)
    for i, s in enumerate(exp.samples):
        samples.append({
            "prompt": s.prompt, "raw_response": s.raw_response, "response": s.response,
            "score": s.reward, "changed": s.changed, "discarded": s.discarded,
            "discard_reason": s.discard_reason, "dropped": s.extra.get("dropped"),
            "response_tokens": s.extra.get("response_tokens"), "trained": i in kept,
        })
    return {
        "seq": out.seq, "raw": exp.scores, "scaled": out.scores,
        "qlen": [len(q) for q in exp.queries], "rlen": [len(r) for r in exp.responses],
        "train": out.train, "skipped": out.skipped_minibatches, "epochs": out.epochs_run,
        "idle": out.idle_minibatches,
        "counts": dict(exp.counts), "n": len(exp.samples), "timings": timings,
        "samples": samples,
    }


def _flat(parts: list[dict[str, Any]], key: str, sub: str | None = None) -> list[float]:
    out: list[float] = []
    for p in parts:
        value = p[key].get(sub, []) if sub else p[key]
        out += value
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (torch.std's default, which TRL logged)."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def combine(parts: list[dict[str, Any]], kl_coef: float, lr: float) -> dict[str, Any]:
    """One record with TRL's classic stat names from every process's payload."""
    kl = _flat(parts, "seq", "kl")
    tokens = _flat(parts, "seq", "tokens")
    counts: dict[str, int] = {}
    for p in parts:
        for k, v in p["counts"].items():
            counts[k] = counts.get(k, 0) + v
    raw, scaled = _flat(parts, "raw"), _flat(parts, "scaled")
    responses = [row["response"] for p in parts for row in p["samples"]]
    metrics: dict[str, Any] = {
        "objective/kl": _mean(kl),
        "objective/kl_coef": kl_coef,
        "objective/entropy": _mean(_flat(parts, "seq", "neg_logprob")),
        "ppo/mean_non_score_reward": (
            sum(_flat(parts, "seq", "non_score")) / sum(tokens) if tokens else None
        ),
        "ppo/mean_scores": _mean(scaled),
        "ppo/std_scores": _std(scaled),
        "env/reward_mean": _mean(raw),
        "env/reward_std": _std(raw),
        "env/distinct_2": distinct_n(responses, 2),
        "tokens/queries_len_mean": _mean([float(x) for x in _flat(parts, "qlen")]),
        "tokens/queries_len_std": _std([float(x) for x in _flat(parts, "qlen")]),
        "tokens/responses_len_mean": _mean([float(x) for x in _flat(parts, "rlen")]),
        "tokens/responses_len_std": _std([float(x) for x in _flat(parts, "rlen")]),
        "ppo/learning_rate": lr,
        "ppo/rollouts": sum(p["n"] for p in parts),
        "ppo/kept": len(raw),
        "ppo/too_short": counts.get("too_short", 0),
        "ppo/discarded": counts.get("discarded", 0),
        "ppo/cut": counts.get("cut", 0),
        "ppo/retokenized": counts.get("retokenized", 0),
        "ppo/dropped_prefix": counts.get("prefix", 0),
        "ppo/nonfinite": counts.get("nonfinite", 0),
        "ppo/skipped_minibatches": sum(p["skipped"] for p in parts),
        "ppo/idle_minibatches": sum(p["idle"] for p in parts),
        "ppo/epochs": max(p["epochs"] for p in parts),
    }
    trains = [p["train"] for p in parts if p["train"]]
    keys = sorted({k for t in trains for k in t})
    for key in keys:
        values = [t[key] for t in trains if key in t]
        metrics[f"ppo/{key}"] = sum(values) / len(values)
    if trains and metrics.get("ppo/returns/var"):
        metrics["ppo/val/var_explained"] = 1 - metrics["ppo/val/error"] / metrics["ppo/returns/var"]
    for key in sorted({k for p in parts for k in p["timings"]}):
        name = key if key.startswith("time/") else f"time/{key}"
        metrics[name] = max(p["timings"].get(key, 0.0) for p in parts)
    return metrics


def _summary(step: int, steps: int, m: dict[str, Any]) -> str:
    def f(key: str, fmt: str = ".3f") -> str:
        value = m.get(key)
        return "n/a" if value is None else format(value, fmt)

    return (
        f"step {step}/{steps}: reward {f('env/reward_mean')} (kept {m['ppo/kept']}/"
        f"{m['ppo/rollouts']}, too short {m['ppo/too_short']}, discarded {m['ppo/discarded']}) "
        f"KL {f('objective/kl')} coef {f('objective/kl_coef', '.4f')} "
        f"loss pg {f('ppo/loss/policy')} vf {f('ppo/loss/value')} "
        f"({f('time/generation', '.1f')} s gen, {f('time/ppo/total', '.1f')} s ppo)"
    )

