"""The alignment loop: one run skeleton for every algorithm.

Per iteration: take the scheduled prompts (this process's share), sample k responses each,
clean and score them, hand every process's samples to the algorithm's `update`, evaluate when
due, write one metrics record (docs/metrics.md) with the guards' warnings, the samples files
and the curves, and checkpoint. Randomness is re-seeded from (seed, iteration, rank) at the
start of each iteration, so a run resumed after a kill repeats exactly what an uninterrupted
one would have done. Only the main process writes files.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rlhfx import distributed, stopping
from rlhfx.alignment import guards, nonfinite
from rlhfx.alignment.batch import Batch
from rlhfx.alignment.checkpoints import Checkpoints, LoopState
from rlhfx.alignment.config import AlgorithmConfig
from rlhfx.alignment.length_control import remove_length_trend
from rlhfx.alignment.nonfinite import NonFinite, advice
from rlhfx.alignment.overlong import overlong_penalty
from rlhfx.alignment.schedule import iteration_seed, prompt_indices, shard_positions
from rlhfx.alignment.schema import (
    SCHEMA_VERSION,
    algorithm_metric_name,
    clean_record,
    sample_metrics,
)
from rlhfx.alignment.setup import AlignmentSetup
from rlhfx.alignment.tokens import cut_to_clean_text
from rlhfx.components import AlignmentAlgorithm, Sample
from rlhfx.context import StageContext
from rlhfx.episodes import add_environment_rewards, episode_metrics, episode_sample
from rlhfx.errors import UserError
from rlhfx.files import atomic_write_json, read_jsonl, write_jsonl
from rlhfx.rollouts import RolloutEngine, SamplingSettings, make_engine

MARKER = "alignment.json"  # the stage's algorithm and metric-schema version, for the report


class AlignmentLoop:
    def __init__(self, ctx: StageContext, setup: AlignmentSetup, algorithm: AlignmentAlgorithm):
        self.ctx, self.setup, self.algorithm = ctx, setup, algorithm
        self.config: AlgorithmConfig = algorithm.config
        self.name = algorithm.name
        self.seed = setup.seed
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.checkpoints = Checkpoints(ctx.stage_dir / "checkpoints",
                                       self.config.keep_checkpoints)
        self.k = algorithm.samples_per_prompt()
        self.per_iteration = algorithm.prompts_per_iteration()
        self.iterations = self.config.iterations or max(
            1, len(setup.prompts) // max(1, self.per_iteration)
        )
        self.state = LoopState()
        self._plotter: Any = None
        self.engine: RolloutEngine | None = None
        #: The reward source reads the policy's token ids (it shares the policy's tokenizer).
        self._score_tokens = False

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, str]:
        import torch

        threads = torch.get_num_threads()
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        try:
            return self._run()
        finally:
            self._finish_plots()
            if self.engine is not None:
                self.engine.close()
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, str]:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own rich bars; no tqdm from save_pretrained
        ctx = self.ctx
        target = ctx.stage_dir / "model"
        if self.k < 1 or self.per_iteration < 1:
            raise UserError(f"{self.setup.where}: {self.name} asks for {self.per_iteration} "
                            f"prompts x {self.k} samples per iteration")
        if ctx.is_main:
            self.checkpoints.clean_partial()
            atomic_write_json(ctx.stage_dir / MARKER, {
                "schema_version": SCHEMA_VERSION, "algorithm": self.name,
                "iterations": self.iterations, "samples_per_prompt": self.k,
                "prompts_per_iteration": self.per_iteration,
            })
        distributed.barrier()
        self._call(self.algorithm.setup, self.setup)
        self._resume()
        # After the checkpoint is restored: the engine starts from the weights it holds.
        # (Every process: a sharded policy's weights are gathered for the vllm engine.)
        self.engine = make_engine(
            self.setup.rollouts, self.algorithm.policy, self.setup.tokenizer,
            batch_size=self.config.inference_batch_size, device=self.setup.device,
            work_dir=ctx.stage_dir / "engine",
        )
        from rlhfx.faults import call_plugin

        reward = self.setup.reward
        self._score_tokens = bool(call_plugin(reward, self._reward_key,
                                              reward.reads_policy_tokens, self.setup.tokenizer))
        if self._score_tokens:
            ctx.log.info("%s: reward '%s' reads the policy's token ids (same tokenizer)",
                         self.name, reward.name)
        if self.state.iteration == 0:
            ctx.log.info(
                "%s: %d iterations of %d prompts x %d samples, %d train / %d eval prompts, "
                "%d process(es)", self.name, self.iterations, self.per_iteration, self.k,
                len(self.setup.prompts), len(self.setup.eval_prompts), self.world,
            )
        elif self.state.iteration >= self.iterations:
            ctx.log.info("%s: all %d iterations were done earlier", self.name, self.iterations)
        with ctx.progress() as progress, stopping.deferred():
            task = progress.add_task(f"{self.name} iterations", total=self.iterations,
                                     completed=min(self.state.iteration, self.iterations))
            if self.state.iteration == 0 and self._eval_due(0) and not self._initial_eval_done:
                self._initial_eval(progress)
            for it in range(self.state.iteration + 1, self.iterations + 1):
                try:
                    self._iteration(it, progress)
                except NonFinite as exc:
                    raise UserError(f"{ctx.recipe_file}: " + advice(
                        ctx.stage_id, it, exc.metric, exc.value, self.state.iteration
                    )) from None
                for other in list(progress.task_ids):
                    if other != task:
                        progress.remove_task(other)
                progress.advance(task)
                if stopping.stop_agreed():  # SIGTERM: this iteration is kept, then stop
                    if self.state.iteration != it:
                        self._checkpoint(it)
                    raise stopping.stopped_after(it, self.iterations)
        self._save_final(target)
        return {"model": str(target)}

    # ------------------------------------------------------------------ resume
    def _resume(self) -> None:
        """Restore the last checkpoint (if any) and trim metrics.jsonl back to it."""
        ctx = self.ctx
        fingerprint = self.config.fingerprint(self.algorithm.resume_neutral)
        chosen, problem = (self.checkpoints.find_intact(ctx.log) if ctx.is_main
                           else (None, None))
        chosen, problem = distributed.broadcast_object((chosen, problem))
        if problem:
            raise UserError(problem)
        if chosen is not None:
            path = Path(chosen)
            state, algorithm_state = self.checkpoints.load(path)
            if state.fingerprint != fingerprint or state.algorithm != self.name:
                raise UserError(
                    f"{self.setup.where}: the checkpoint in {path} was made with other "
                    f"settings; rerun with --restart-from {ctx.stage_id} to start this stage "
                    "again, or set another run.output_dir"
                )
            self._call(self.algorithm.load_state_dict, algorithm_state)
            self.setup.reward.load_state_dict(state.reward_state)
            self.state = state
            ctx.log.info("%s: resuming after iteration %d from %s", self.name,
                         state.iteration, path)
        else:
            self.state = LoopState(fingerprint=fingerprint, algorithm=self.name)
        distributed.barrier()
        done = False
        if ctx.is_main and ctx.metrics_file.exists():
            # Iterations after the checkpoint are done again: their records go.
            kept = [r for r in read_jsonl(ctx.metrics_file)
                    if isinstance(r.get("step"), int) and r["step"] <= self.state.iteration]
            write_jsonl(ctx.metrics_file, kept)
            done = any(r["step"] == 0 and "eval_reward_mean" in r for r in kept)
        self._initial_eval_done = bool(distributed.broadcast_object(done))
        distributed.barrier()

    # ------------------------------------------------------------------ one iteration
    def _iteration(self, it: int, progress: Any) -> None:
        import torch

        c, ctx = self.config, self.ctx
        started = time.perf_counter()
        seed = iteration_seed(self.seed, it, self.rank)
        torch.manual_seed(seed)
        rng = random.Random(seed)
        indices = prompt_indices(len(self.setup.prompts), self.per_iteration, it, self.seed)
        times: dict[str, float] = {}

        t = time.perf_counter()
        mine = self._generate(indices, rng, progress, f"iteration {it}: generating")
        times["generate"] = _slowest(time.perf_counter() - t)
        t = time.perf_counter()
        samples = self._clean_and_score(mine)
        length_slope = remove_length_trend(samples) if c.length_control else None
        times["score"] = _slowest(time.perf_counter() - t)

        batch = Batch(iteration=it, samples=samples, k=self.k, num_prompts=len(indices),
                      rank=self.rank, world_size=self.world, seed=seed,
                      shared_seed=iteration_seed(self.seed, it, 0, "shared"))
        t = time.perf_counter()
        with nonfinite.policy(c.on_nonfinite) as steps:
            returned = self._update(batch)
        self._merge_marks(batch)
        if not nonfinite.finite_weights(self.algorithm.policy):  # never sampled or saved
            raise NonFinite("a weight of the policy", "NaN or infinite after the update")
        assert self.engine is not None
        # The next samples: the new policy (every process: a sharded one is gathered).
        self.engine.sync_weights(self.algorithm.policy)
        times["update"] = _slowest(time.perf_counter() - t)

        evaluation: dict[str, Any] = {}
        if self._eval_due(it):
            t = time.perf_counter()
            evaluation = self._evaluate(it, progress)
            times["eval"] = _slowest(time.perf_counter() - t)

        record: dict[str, Any] = {
            "iteration": it, "num_prompts": len(indices), **sample_metrics(samples),
            **{algorithm_metric_name(self.name, k): v for k, v in returned.items()},
            **({"nonfinite_skipped_steps": steps.skipped} if c.on_nonfinite == "skip" else {}),
            **({"reward_length_slope": length_slope} if c.length_control else {}),
            **evaluation, **{f"seconds_{k}": v for k, v in times.items()},
            **(episode_metrics([s.extra for s in samples]) if self._episodes else {}),
            "seconds_iteration": time.perf_counter() - started,
        }
        record = clean_record(record)
        if it == 1 or self.state.first_record is None:
            self.state.first_record = {k: record.get(k) for k in ("distinct_2", "cleaned_rate")}
        record["warnings"] = guards.check(
            self.state.first_record if it > 1 else None, record, c
        )
        for message in record["warnings"]:
            ctx.log.warning("%s: iteration %d: %s", self.name, it, message)
        ctx.log_metrics(it, record)
        self._write_samples(it, samples)
        ctx.log.info(_summary(self.name, record, self.iterations))
        self._plot()
        if it % c.save_every == 0 or it == self.iterations:
            self._checkpoint(it)

    def _generate(
        self, indices: list[int], rng: random.Random, progress: Any, description: str
    ) -> list[Sample]:
        """This process's share of the iteration's prompts, k samples each."""
        c, setup = self.config, self.setup
        positions = shard_positions(len(indices), self.rank, self.world)
        prompts = [setup.prompts[indices[p]] for p in positions]
        sampling = SamplingSettings(
            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=c.top_k,
            top_p=c.top_p, length_range=c.length_range,
        )
        assert self.engine is not None
        diverged: tuple[str, Any] | None = None
        rollouts: list[Any] = []
        played: list[Sample] = []
        with self._full_weights(), setup.autocast():  # every process: gathering is collective
            try:
                if self._episodes:
                    played = self._play(indices, positions, prompts, sampling, rng, progress,
                                        description)
                elif prompts:
                    rollouts = self.engine.generate(
                        prompts, sampling, num_samples=self.k,
                        stop_strings=setup.stop_strings, progress=progress,
                        description=description, rng=rng,
                    )
            except NonFinite as exc:
                diverged, rollouts, played = (exc.metric, exc.value), [], []
        # Every process stops together, also when only some sampled a broken distribution.
        found = [d for d in distributed.gather_objects(diverged) if d is not None]
        if found:
            raise NonFinite(*found[0])
        if self._episodes:
            return played
        eos = setup.tokenizer.eos_token_id
        out = []
        for n, r in enumerate(rollouts):
            index = indices[positions[r.prompt_id]]
            ended = bool(r.response_ids) and r.response_ids[-1] == eos
            out.append(Sample(
                prompt_id=positions[r.prompt_id], prompt=r.prompt, raw_response=r.text,
                sample=n % self.k,
                fields=dict(setup.prompt_fields[index]) if setup.prompt_fields else {},
                prompt_ids=list(r.prompt_ids), response_ids=list(r.response_ids),
                finished=ended or any(s in r.text for s in setup.stop_strings),
            ))
        return out

    def _play(self, indices: list[int], positions: list[int], prompts: list[str],
              sampling: SamplingSettings, rng: random.Random, progress: Any,
              description: str) -> list[Sample]:
        """This process's episodes (prompts x k) as samples: one sample per episode (called
        with the full weights gathered and autocast on)."""
        from rlhfx.episodes import run_episodes

        setup = self.setup
        assert self.engine is not None and setup.environment is not None
        keys = [indices[p] for p in positions]
        fields = [setup.prompt_fields[i] if setup.prompt_fields else {} for i in keys]
        episodes = run_episodes(
            self.engine, setup.tokenizer, setup.environment, prompts, fields, sampling,
            num_samples=self.k, stop_strings=setup.stop_strings, rng=rng,
            seed=rng.randrange(2**32),
            prompt_keys=keys, where=setup.environment_key, progress=progress,
            description=description,
        )
        return [episode_sample(e, positions[e.prompt_index], fields[e.prompt_index],
                               setup.tokenizer) for e in episodes]

    def _clean_and_score(self, mine: list[Sample]) -> list[Sample]:
        """Clean, cut the tokens to the cleaned text, score; then everyone's samples in
        (prompt, sample) order."""
        from rlhfx.scoring import clean, score

        setup = self.setup
        clean(mine, setup.cleaners, self._reward_key.rsplit(".", 1)[0] + ".cleaners")
        for s in mine:
            if s.action_mask is not None:
                continue  # an episode's tokens stay whole: cleaners change only its text
            s.response_ids, s.token_status = cut_to_clean_text(
                setup.tokenizer, s.response_ids, s.raw_response, s.response
            )
        episodes = self._episodes
        score(mine, setup.reward, where=self._reward_key,
              by_tokens=self._score_tokens and not episodes)
        if episodes:
            add_environment_rewards(mine)
        for s in mine:
            if s.reward is not None and not math.isfinite(s.reward):
                if self.config.nonfinite_rewards == "error":
                    raise UserError(
                        f"{self._reward_key}: reward source '{setup.reward.name}' returned "
                        f"{s.reward} for a response to prompt {s.prompt!r:.60}; fix the source, "
                        f"or set {self.setup.where}.nonfinite_rewards = \"drop\" to leave such "
                        "samples out"
                    )
                s.extra["nonfinite_reward"] = s.reward
                s.reward, s.discarded = None, True
                s.discard_reason = f"non-finite reward from '{setup.reward.name}'"
            elif s.reward is not None and self.config.unfinished_penalty:
                c = self.config
                lost = overlong_penalty(len(s.response_ids), s.finished, c.max_new_tokens,
                                        c.overlong_buffer, c.unfinished_penalty)
                if lost:
                    s.extra["unfinished_penalty" if not s.finished else "overlong_penalty"] = lost
                    s.reward -= lost
        everyone = [s for part in distributed.gather_objects(mine) for s in part]
        everyone.sort(key=lambda s: (s.prompt_id, s.sample))
        return everyone

    def _update(self, batch: Batch) -> Any:
        from rlhfx.hardware import cpu_training_attention

        setup = self.setup
        with cpu_training_attention(self.algorithm.policy, setup.device.startswith("cpu"),
                                    setup.compute_dtype == "bfloat16"):
            returned = self._call(self.algorithm.update, batch)
        if not isinstance(returned, dict):
            from rlhfx.faults import PluginFault, describe

            raise PluginFault(f"{self.setup.where}: {describe(self.algorithm)}: update() "
                              f"returned {type(returned).__name__}, not a dict of metrics",
                              self.algorithm, self.setup.where)
        return returned

    def _call(self, method: Any, *args: Any) -> Any:
        """Call the algorithm's code: a fault names the algorithm, its plugin and the key."""
        from rlhfx.faults import call_plugin

        return call_plugin(self.algorithm, self.setup.where, method, *args)

    def _merge_marks(self, batch: Batch) -> None:
        """Make every process see which samples each process's update trained on (and what
        it noted in `extra`), so the main process writes them all."""
        if self.world == 1:
            return
        index = {(s.prompt_id, s.sample): s for s in batch.samples}
        marks = [((s.prompt_id, s.sample), s.trained, s.extra) for s in batch.mine]
        for part in distributed.gather_objects(marks):
            for key, trained, extra in part:
                sample = index[key]
                sample.trained = sample.trained or trained
                sample.extra.update(extra)

    # ------------------------------------------------------------------ evaluation
    def _eval_due(self, it: int) -> bool:
        every = self.config.eval_every
        if not self.setup.eval_prompts or every == 0:
            return False
        return it in (0, self.iterations) or bool(every and it % every == 0)

    def _initial_eval(self, progress: Any) -> None:
        started = time.perf_counter()
        evaluation = self._evaluate(0, progress)
        record = clean_record({"iteration": 0, **evaluation,
                               "seconds_eval": _slowest(time.perf_counter() - started)})
        self.ctx.log_metrics(0, record)
        self.ctx.log.info("%s: initial policy: eval reward %s", self.name,
                          _fmt(record.get("eval_reward_mean")))

    def _evaluate(self, it: int, progress: Any) -> dict[str, Any]:
        c = self.config
        sampling = SamplingSettings(
            max_new_tokens=c.eval_max_new_tokens or c.max_new_tokens,
            temperature=c.eval_temperature, top_k=c.top_k, top_p=c.top_p,
        )
        with self._full_weights():  # every process: gathering is collective
            return self._evaluate_gathered(it, progress, sampling)

    def _evaluate_gathered(self, it: int, progress: Any, sampling: SamplingSettings
                           ) -> dict[str, Any]:
        from rlhfx.evaluation import evaluate_policy

        c, setup = self.config, self.setup
        return evaluate_policy(
            self.algorithm.policy, setup.tokenizer, setup.eval_prompts, sampling,
            cleaners=setup.cleaners, reward=setup.reward,
            seed=iteration_seed(self.seed, 0, self.rank, "eval"),  # same noise every eval
            out_file=self.ctx.stage_dir / "iterations" / f"iter-{it:04d}" / "eval.jsonl",
            prefix="eval_", batch_size=c.inference_batch_size,
            stop_strings=setup.stop_strings, autocast=setup.autocast(), progress=progress,
            where=self._reward_key, engine=self.engine, fields=setup.eval_prompt_fields,
            environment=setup.environment if self._episodes else None,
            environment_key=getattr(setup, "environment_key", "environment"),
        )

    # ------------------------------------------------------------------ files
    def _write_samples(self, it: int, samples: list[Sample]) -> None:
        if not self.ctx.is_main:
            return
        folder = self.ctx.stage_dir / "iterations" / f"iter-{it:04d}"
        write_jsonl(folder / "trained.jsonl", (
            {"prompt_id": s.prompt_id, "sample": s.sample, "prompt": s.prompt,
             "response": s.response, "reward": s.reward, **_jsonable(s.extra)}
            for s in samples if s.trained
        ))
        if self.config.save_samples:
            write_jsonl(folder / "samples.jsonl", (
                {"prompt_id": s.prompt_id, "sample": s.sample, "prompt": s.prompt,
                 "raw_response": s.raw_response, "response": s.response, "reward": s.reward,
                 "changed": s.changed, "discarded": s.discarded,
                 "discard_reason": s.discard_reason, "trained": s.trained,
                 "response_tokens": len(s.response_ids), "token_status": s.token_status,
                 "finished": s.finished, **_jsonable(s.extra)}
                for s in samples
            ))

    def _plot(self) -> None:
        """Redraw the curves in a helper process (the loop never waits for matplotlib)."""
        if not self.ctx.is_main:
            return
        from rlhfx.plotting import BackgroundPlotter, loop_figures

        if self._plotter is None:
            self._plotter = BackgroundPlotter()
        records = list(read_jsonl(self.ctx.metrics_file))
        self._plotter.submit_many(loop_figures(records, self.ctx.stage_dir, self.name))

    def _finish_plots(self) -> None:
        plotter, self._plotter = self._plotter, None
        if plotter is not None:
            try:
                plotter.close()
            except Exception as exc:  # a plot must never cost a run
                self.ctx.log.warning("%s: could not draw the curves: %s", self.name, exc)

    def _checkpoint(self, it: int) -> None:
        self.state.iteration = it
        self.state.reward_state = self.setup.reward.state_dict()
        state = self._call(self.algorithm.state_dict)  # every process: a sharded model gathers
        if self.ctx.is_main:
            from rlhfx.alignment.state_files import StateTypeError

            try:
                self.checkpoints.save(self.state, state)
            except StateTypeError as exc:
                from rlhfx.faults import PluginFault, describe

                raise PluginFault(f"{self.setup.where}: {describe(self.algorithm)}: "
                                  f"state_dict(): {exc}", self.algorithm,
                                  self.setup.where) from None
        distributed.barrier()

    def _full_weights(self) -> AbstractContextManager[Any]:
        """For the `hf` engine, the sharded policy's full weights on every process while
        inside (collective: every process enters, prompts or not). Sampling on the sharded
        model would gather every block at every token, and hang once processes stop at
        different lengths. Nothing to do under `ddp` or with another engine."""
        from rlhfx.sharding import gathered_weights, is_sharded

        policy = self.algorithm.policy
        if not is_sharded(policy) or self.setup.rollouts.engine != "hf":
            return contextlib.nullcontext()
        return gathered_weights(policy)

    def _save_final(self, target: Path) -> None:
        """The final policy in Hugging Face format (LoRA merged), written atomically.
        A sharded policy is gathered onto the main process (every process takes part)."""
        from rlhfx.sharding import is_sharded, save_hf_checkpoint

        ctx = self.ctx
        if not nonfinite.finite_weights(self.algorithm.policy):
            raise UserError(f"{ctx.recipe_file}: stages.{ctx.stage_id}: the policy's weights "
                            "are NaN or infinite: no final model is saved")
        model = self._call(self.algorithm.final_model)
        tmp = ctx.stage_dir / ".model.tmp"
        try:
            if is_sharded(model):
                save_hf_checkpoint(model, tmp, self.setup.tokenizer)
            elif ctx.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp)
                self.setup.tokenizer.save_pretrained(tmp)
            if ctx.is_main:
                self._call(self.algorithm.save_extras, tmp)
        except BaseException:  # a full disk: no half-written model left behind
            if ctx.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if ctx.is_main:
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
            atomic_write_json(ctx.stage_dir / MARKER, {
                "schema_version": SCHEMA_VERSION, "algorithm": self.name,
                "iterations": self.iterations, "samples_per_prompt": self.k,
                "prompts_per_iteration": self.per_iteration, "finished": True,
            })
            ctx.log.info("%s: final policy saved in %s", self.name, target)
        distributed.barrier()

    @property
    def _episodes(self) -> bool:
        """Rollouts are multi-turn episodes with the setup's environment."""
        return getattr(self.setup, "environment", None) is not None

    @property
    def _reward_key(self) -> str:
        return f"{self.ctx.recipe_file}: stages.{self.ctx.stage_id}.reward"


def _slowest(seconds: float) -> float:
    """A phase's time is the slowest process's (the others wait for it)."""
    return max(distributed.gather_objects(seconds)) if distributed.world_size() > 1 else seconds


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON values of `extra` (an episode's turn-by-turn record included)."""
    import json

    out: dict[str, Any] = {}
    for key, value in extra.items():
        if isinstance(value, str | int | float | bool | None):
            out[key] = value
        elif isinstance(value, list | dict):
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                continue
            out[key] = value
    return out



def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _summary(name: str, r: dict[str, Any], total: int) -> str:
    parts = [
        f"iteration {r['iteration']}/{total}",
        f"reward {_fmt(r.get('reward_mean'))}±{_fmt(r.get('reward_std'), '.2f')}",
        f"trained {r.get('num_trained')}/{r.get('num_samples')} "
        f"({_fmt(r.get('trained_reward_mean'))})",
    ]
    if "eval_reward_mean" in r:
        parts.append(f"eval {_fmt(r['eval_reward_mean'])}")
    if r.get("kl_mean") is not None:
        parts.append(f"KL {_fmt(r['kl_mean'])}")
    parts += [
        f"distinct-2 {_fmt(r.get('distinct_2'), '.2f')}",
        f"discarded {r.get('discarded_rate', 0):.0%}",
        f"loss {_fmt(r.get('train_loss'))}",
        f"gen {r.get('seconds_generate', 0):.1f}s score {r.get('seconds_score', 0):.1f}s "
        f"update {r.get('seconds_update', 0):.1f}s",
    ]
    return f"{name}: " + " | ".join(parts)

