"""The RAFT loop: generate -> clean and score -> select -> fine-tune, one checkpoint per iteration.

Every process runs this code under `torchrun`: prompts are sharded, samples gathered, the main
process makes the one selection (broadcast to the others), all processes fine-tune on it
data-parallel, and only the main process writes files. Randomness is re-seeded from
(seed, iteration, rank) at the start of each iteration, so a resumed run repeats exactly what
an uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfx import Sample, StageContext, distributed
from rlhfx.errors import UserError
from rlhfx.evaluation import evaluate_policy
from rlhfx.io import atomic_write_json, read_jsonl, write_jsonl
from rlhfx.metrics import mean_std, rate, rounded, sample_metrics
from rlhfx.models import load_causal_lm, load_tokenizer
from rlhfx.rollouts import SamplingSettings, generate
from rlhfx.scoring import clean_and_score

from . import guards
from .checkpoint import Checkpoints, RaftState
from .config import RaftConfig
from .train import build_examples, completion_text, finetune, training_arguments


def batch_prompt_indices(
    num_prompts: int, per_iteration: int, iteration: int, seed: int
) -> list[int]:
    """Prompt indices for a 1-based iteration: consecutive slices of seeded shuffles.

    Every prompt is used once before any repeats (a new shuffle per pass), and the answer
    depends only on the arguments, so every process and every resumed run agrees.
    """
    out: list[int] = []
    pos = (iteration - 1) * per_iteration
    while len(out) < per_iteration:
        epoch, offset = divmod(pos, num_prompts)
        order = list(range(num_prompts))
        random.Random(f"raft-prompts:{seed}:{epoch}").shuffle(order)
        take = min(per_iteration - len(out), num_prompts - offset)
        out += order[offset : offset + take]
        pos += take
    return out


def iteration_seed(seed: int, iteration: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + iteration * 1_009 + rank) % 2**31


class RaftLoop:
    def __init__(self, ctx: StageContext, setup: Any, config: RaftConfig, ranker: Any):
        self.ctx, self.setup, self.config, self.ranker = ctx, setup, config, ranker
        self.seed = config.seed if config.seed is not None else ctx.seed
        self.stage_dir = ctx.stage_dir
        self.checkpoints = Checkpoints(self.stage_dir / "checkpoints", config.keep_checkpoints)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.stop_strings = (
            list(config.stop_strings) if config.stop_strings is not None
            else setup.default_stop_strings()
        )
        self._warned_ranker = False
        self._plotter: Any = None

    # ------------------------------------------------------------------ setup
    @property
    def _where(self) -> str:
        return f"{self.ctx.recipe_file}: stages.{self.ctx.stage_id}.algorithm"

    def _autocast(self) -> Any:
        """bf16/fp16 compute for generation when `dtype` asks for it (the weights stay fp32).
        On the CPU only bfloat16 (autocast's CPU half type); float16 there runs in fp32."""
        import torch

        dtype = self.config.dtype
        device_type = "cuda" if str(self.ctx.device).startswith("cuda") else "cpu"
        if dtype == "float32" or (device_type == "cpu" and dtype != "bfloat16"):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))

    def _select(self, samples: list[Sample]) -> list[int]:
        """The ranker's choice, less anything a cleaner discarded (or out of range): a plugin
        ranker must never make RAFT train on a discarded sample."""
        picked = sorted(self.ranker.select(samples))
        kept = [i for i in picked if 0 <= i < len(samples) and not samples[i].discarded]
        if len(kept) < len(picked) and not self._warned_ranker:
            self._warned_ranker = True
            self.ctx.log.warning(
                "raft: ranker '%s' returned %d discarded (or invalid) samples; they are left "
                "out (warned once)", self.config.ranker.name, len(picked) - len(kept),
            )
        return kept

    def _load_policy(self) -> RaftState:
        """The policy and tokenizer to continue from: the last checkpoint or the recipe's.

        Weights are float32 whatever `dtype` says: training updates an fp32 master copy while
        the Trainer computes in bf16/fp16 (mixed precision), and generation runs under
        autocast (`_autocast`); half-precision weights would lose small updates to rounding.
        """
        c, ctx = self.config, self.ctx
        if ctx.is_main:
            self.checkpoints.clean_partial()
        distributed.barrier()
        found = self.checkpoints.latest()
        if found is None:
            state = RaftState(fingerprint=c.fingerprint(), lora=c.lora is not None)
            self.tokenizer = load_tokenizer(self.setup.policy)
            model = load_causal_lm(self.setup.policy, dtype="float32", device=ctx.device)
            if c.lora is not None:
                import torch

                torch.manual_seed(self.seed)  # same adapter init on every process
                model = c.lora.wrap(model, where=f"{self._where}.lora")
        else:
            path, state = found
            if state.fingerprint != c.fingerprint():
                raise UserError(
                    f"{ctx.recipe_file}: stages.{ctx.stage_id}: the checkpoint in {path} was "
                    f"written with other RAFT settings; rerun with --restart-from "
                    f"{ctx.stage_id} to start this stage over"
                )
            self.tokenizer = load_tokenizer(str(path))
            if state.lora:
                from peft import PeftModel

                base = load_causal_lm(self.setup.policy, dtype="float32", device=ctx.device)
                model = PeftModel.from_pretrained(base, str(path), is_trainable=True)
            else:
                model = load_causal_lm(str(path), dtype="float32", device=ctx.device)
            self.setup.reward.load_state_dict(state.reward_state)
            ctx.log.info("raft: resuming after iteration %d (%s)", state.iteration, path)
        self.model = model
        return state

    def _load_prompts(self) -> tuple[list[str], list[str]]:
        c = self.config
        where = f"{self.ctx.recipe_file}: stages.{self.ctx.stage_id}.algorithm.max_prompt_tokens"
        log = self.ctx.log
        train = self.setup.training_prompts(self.tokenizer, c.max_prompt_tokens, log, where)
        return train, self.setup.held_out_prompts(c.eval_max_prompts)

    def _repair_metrics(self, state: RaftState) -> None:
        """Make metrics.jsonl hold exactly the committed records (a kill may leave extras)."""
        if not self.ctx.is_main:
            return
        committed = {r["step"] for r in state.history}
        kept, seen = [], set()
        if self.ctx.metrics_file.exists():
            for row in read_jsonl(self.ctx.metrics_file):
                step = row.get("step")
                if step in committed and step not in seen:
                    kept.append(row)
                    seen.add(step)
        write_jsonl(self.ctx.metrics_file, kept)
        for record in state.history:
            if record["step"] not in seen:
                self.ctx.log_metrics(record["step"], _without_step(record))

    # ------------------------------------------------------------------ phases
    def _generate(
        self, prompts: Sequence[str], num_samples: int, sampling: SamplingSettings,
        rng: random.Random, progress: Any, description: str,
    ) -> list[Sample]:
        """This process's share of `prompts`, sampled; prompt_id = index into `prompts`."""
        positions = list(range(self.rank, len(prompts), self.world))
        mine = [prompts[i] for i in positions]
        with self._autocast():
            rollouts = generate(
                self.model, self.tokenizer, mine, sampling, num_samples=num_samples,
                batch_size=self.config.inference_batch_size, stop_strings=self.stop_strings,
                progress=progress, description=description, rng=rng,
            ) if mine else []
        eos = self.tokenizer.eos_token_id
        samples = []
        for n, r in enumerate(rollouts):
            ended = bool(r.response_ids) and r.response_ids[-1] == eos
            stopped = any(s in r.text for s in self.stop_strings)
            samples.append(Sample(
                prompt_id=positions[r.prompt_id], prompt=r.prompt, raw_response=r.text,
                extra={"sample": n % num_samples, "response_tokens": len(r.response_ids),
                       "finished": ended or stopped},
            ))
        return samples

    def _score(self, samples: list[Sample], progress: Any, description: str) -> list[Sample]:
        """Clean and score this process's samples, then gather everyone's, in prompt order."""
        task = progress.add_task(description, total=len(samples)) if progress else None
        clean_and_score(samples, self.setup.cleaners, self.setup.reward)
        if task is not None:
            progress.update(task, completed=len(samples))
        everyone = [s for part in distributed.gather_objects(samples) for s in part]
        everyone.sort(key=lambda s: (s.prompt_id, s.extra.get("sample", 0)))
        return everyone

    def _evaluate(self, it: int, evals: list[str], progress: Any) -> dict[str, Any]:
        c = self.config
        sampling = SamplingSettings(
            max_new_tokens=c.max_new_tokens, temperature=c.eval_temperature,
            top_k=c.top_k, top_p=c.top_p,
        )
        return evaluate_policy(
            self.model, self.tokenizer, evals, sampling,
            cleaners=self.setup.cleaners, reward=self.setup.reward,
            seed=iteration_seed(self.seed + 7, 0, self.rank),  # same noise every eval
            out_file=self.stage_dir / "iterations" / f"iter-{it:04d}" / "eval.jsonl",
            prefix="eval_", batch_size=c.inference_batch_size, stop_strings=self.stop_strings,
            autocast=self._autocast(), progress=progress,
        )

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, str]:
        import torch

        threads = torch.get_num_threads()
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        try:
            return self._run()
        finally:
            self._finish_plots()
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, str]:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own rich bars; no tqdm from save_pretrained
        c, ctx = self.config, self.ctx
        # Check `training_args` before the model loads (validation cannot import transformers).
        training_arguments(c, self.stage_dir / "trainer", self.seed, ctx.device, self._where)
        state = self._load_policy()
        train_prompts, eval_prompts = self._load_prompts()
        self._repair_metrics(state)
        if state.iteration >= c.iterations:
            ctx.log.info("raft: all %d iterations were done earlier", c.iterations)
        elif state.iteration == 0:
            ctx.log.info(
                "raft: %d iterations, b=%d, k=%d, ranker %s, %d train / %d eval prompts, %d "
                "process(es)", c.iterations, c.batch_size, c.k, c.ranker.name,
                len(train_prompts), len(eval_prompts), self.world,
            )
        pending: list[dict[str, Any]] = []
        if state.iteration == 0 and eval_prompts and c.eval_every:
            started = time.perf_counter()
            with ctx.progress() as progress:
                initial = self._evaluate(0, eval_prompts, progress)
            initial["seconds_eval"] = time.perf_counter() - started  # the report's phase chart
            pending.append({"step": 0, "iteration": 0, **rounded(initial)})
            ctx.log.info("raft: initial policy: eval reward %s", _fmt(initial["eval_reward_mean"]))

        sampling = SamplingSettings(
            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=c.top_k,
            top_p=c.top_p, length_range=(c.min_new_tokens, c.max_new_tokens),
        )
        for it in range(state.iteration + 1, c.iterations + 1):
            record = self._iteration(it, train_prompts, eval_prompts, sampling)
            record["warnings"] = guards.check(
                state.history + pending, record, c.distinct2_warn_fraction,
                c.cleaner_rate_warn_increase,
            )
            for message in record["warnings"]:
                ctx.log.warning("raft: iteration %d: %s", it, message)
            t = time.perf_counter()
            state.iteration = it
            state.history += [*pending, record]
            state.reward_state = self.setup.reward.state_dict()
            if ctx.is_main:
                self.checkpoints.save(self.model, self.tokenizer, state)
            distributed.barrier()
            for r in [*pending, record]:
                ctx.log_metrics(r["step"], _without_step(r))
            pending = []
            self._plot(state.history)
            ctx.log.info(_summary(record, c.iterations, time.perf_counter() - t))
        return {"model": str(self._save_final())}

    def _iteration(
        self, it: int, train_prompts: list[str], eval_prompts: list[str],
        sampling: SamplingSettings,
    ) -> dict[str, Any]:
        """Generate, clean and score, select, fine-tune (and maybe evaluate); the metrics."""
        import torch

        c, ctx = self.config, self.ctx
        grouped = not c.one_sample_per_prompt
        per_iteration = c.batch_size if grouped else c.batch_size * c.k
        started = time.perf_counter()
        torch.manual_seed(iteration_seed(self.seed, it, self.rank))
        rng = random.Random(iteration_seed(self.seed, it, self.rank))
        indices = batch_prompt_indices(len(train_prompts), per_iteration, it, self.seed)
        prompts = [train_prompts[i] for i in indices]
        times: dict[str, float] = {}
        with ctx.progress() as progress:
            t = time.perf_counter()
            mine = self._generate(prompts, c.k if grouped else 1, sampling, rng, progress,
                                  f"iteration {it}: generating")
            times["generate"] = time.perf_counter() - t
            t = time.perf_counter()
            samples = self._score(mine, progress, f"iteration {it}: scoring")
            times["score"] = time.perf_counter() - t
            t = time.perf_counter()
            chosen = distributed.broadcast_object(
                self._select(samples) if ctx.is_main else None
            )
            selected = [samples[i] for i in chosen]
            times["select"] = time.perf_counter() - t
            self._write_samples(it, samples, set(chosen))
            t = time.perf_counter()
            pairs = [(s.prompt, self._completion(s)) for s in selected]
            examples = build_examples(
                self.tokenizer, pairs, c,
                finished=[bool(s.extra.get("finished")) for s in selected],
            )
            args = training_arguments(
                c, self.stage_dir / "trainer", iteration_seed(self.seed, it), ctx.device,
                self._where,
            )
            if not examples:
                ctx.log.warning(
                    "raft: iteration %d: every sample was discarded by the cleaners; "
                    "nothing to train on", it,
                )
            train_info = finetune(self.model, self.tokenizer, examples, args, progress)
            times["train"] = time.perf_counter() - t
            evaluation: dict[str, Any] = {}
            if eval_prompts and c.eval_every and (it % c.eval_every == 0 or it == c.iterations):
                t = time.perf_counter()
                evaluation = self._evaluate(it, eval_prompts, progress)
                times["eval"] = time.perf_counter() - t
        return self._record(it, samples, selected, train_info, evaluation, times, started)

    # ------------------------------------------------------------------ records and files
    def _record(
        self, it: int, samples: list[Sample], selected: list[Sample], train_info: dict[str, Any],
        evaluation: dict[str, Any], times: dict[str, float], started: float,
    ) -> dict[str, Any]:
        sel_mean, sel_std = mean_std(s.reward for s in selected)
        lengths = [s.extra.get("response_tokens", 0) for s in samples]
        record: dict[str, Any] = {
            "step": it,
            "iteration": it,
            **sample_metrics(samples),
            # Changed beyond surrounding whitespace (stripping the space a model starts its
            # answer with is no sign of hacking); the guard watches edited + discarded.
            "edited_rate": rate(not s.discarded and _edited(s) for s in samples),
            "cleaned_rate": rate(s.discarded or _edited(s) for s in samples),
            "selected_reward_mean": sel_mean,
            "selected_reward_std": sel_std,
            "num_selected": len(selected),
            "response_tokens_mean": sum(lengths) / len(lengths) if lengths else 0.0,
            **train_info,
            **evaluation,
            **{f"seconds_{k}": v for k, v in times.items()},
            "seconds_iteration": time.perf_counter() - started,
        }
        return rounded(record)

    def _completion(self, sample: Sample) -> str:
        return completion_text(sample.raw_response, sample.response, self.config.response_separator)

    def _write_samples(self, it: int, samples: list[Sample], chosen: set[int]) -> None:
        if not self.ctx.is_main:
            return
        folder = self.stage_dir / "iterations" / f"iter-{it:04d}"
        write_jsonl(folder / "selected.jsonl", (
            {"prompt_id": s.prompt_id, "prompt": s.prompt, "response": s.response,
             "reward": s.reward, "text": s.prompt + self._completion(s)}
            for i, s in enumerate(samples) if i in chosen
        ))
        if self.config.save_samples:
            write_jsonl(folder / "samples.jsonl", (
                {"prompt_id": s.prompt_id, "sample": s.extra.get("sample", 0),
                 "prompt": s.prompt, "raw_response": s.raw_response, "response": s.response,
                 "reward": s.reward, "changed": s.changed, "discarded": s.discarded,
                 "discard_reason": s.discard_reason, "selected": i in chosen,
                 "response_tokens": s.extra.get("response_tokens")}
                for i, s in enumerate(samples)
            ))

    def _plot(self, history: list[dict[str, Any]]) -> None:
        """Redraw the reward curve in a helper process (the loop never waits for matplotlib)."""
        if not self.ctx.is_main:
            return
        from rlhfx.plotting import BackgroundPlotter

        if self._plotter is None:
            self._plotter = BackgroundPlotter()
        self._plotter.submit(history, self.stage_dir / "reward_curve.png", title="RAFT reward")

    def _finish_plots(self) -> None:
        plotter, self._plotter = self._plotter, None
        if plotter is not None:
            try:
                plotter.close()
            except Exception as exc:  # a plot must never cost a run
                self.ctx.log.warning("raft: could not draw the reward curve: %s", exc)

    def _save_final(self) -> Path:
        """The policy in Hugging Face format (LoRA merged), written atomically by main."""
        target = self.stage_dir / "model"
        if self.ctx.is_main:
            model = self.model
            if hasattr(model, "merge_and_unload"):
                model = model.merge_and_unload()
            tmp = self.stage_dir / ".model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "raft.json", {"iterations": self.config.iterations})
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
            with contextlib.suppress(OSError):  # Trainer's output_dir; nothing is saved there
                (self.stage_dir / "trainer").rmdir()
        distributed.barrier()
        return target


def _edited(sample: Sample) -> bool:
    return sample.changed and sample.response.strip() != sample.raw_response.strip()


def _without_step(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "step"}


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _summary(r: dict[str, Any], total: int, save_seconds: float) -> str:
    parts = [
        f"iteration {r['iteration']}/{total}",
        f"reward {_fmt(r['reward_mean'])}±{_fmt(r['reward_std'], '.2f')}",
        f"selected {_fmt(r['selected_reward_mean'])} (n={r['num_selected']})",
    ]
    if "eval_reward_mean" in r:
        parts.append(f"eval {_fmt(r['eval_reward_mean'])}")
    parts += [
        f"distinct-2 {r['distinct_2']:.2f}",
        f"edited {r['edited_rate']:.0%} discarded {r['discarded_rate']:.0%}",
        f"loss {_fmt(r.get('train_loss'), '.3f')}",
        f"gen {r['seconds_generate']:.1f}s score {r['seconds_score']:.1f}s "
        f"train {r['seconds_train']:.1f}s save {save_seconds:.1f}s",
    ]
    return "raft: " + " | ".join(parts)
