"""`vllm`: a colocated vLLM engine that samples rollouts from the policy being trained.

vLLM loads the policy from a plain Hugging Face checkpoint written to `work_dir/weights` (LoRA
adapters merged into it), and after every update the new weights are written to the same
folder and reloaded in place (`collective_rpc("reload_weights")`): a few seconds for a small
model, no engine restart. Passing tensors through `collective_rpc` is not used: they arrive as
lists and the engine dies.

Prompts go in as token ids from `encode_prompts`, one request per prompt with `n = k`, so the
engine pre-fills each prompt once and BOS handling is the `hf` engine's. Responses are cut at
EOS and decoded by the policy's tokenizer exactly as on the `hf` path.

vLLM starts its engine in separate processes with `spawn`: the program that builds this engine
must be import-safe (`if __name__ == "__main__":`). Nothing here imports vLLM, torch or
transformers at module level.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhfx.components import ComponentConfig, EngineSetup, RolloutEngine
from rlhfx.hardware import resolve_dtype
from rlhfx.rollouts import Rollout, SamplingSettings, cut_at_eos, encode_prompts

log = logging.getLogger("rlhfx")
WEIGHTS_DIR = "weights"
#: KV-cache space on the CPU when the recipe sets none: room for about 90k tokens of a
#: 135M LLaMA in bfloat16, far more than a rollout batch needs.
CPU_KV_CACHE_GIB = 2.0
#: How to get vLLM, in the one-line error given when a recipe asks for it and it is missing.
VLLM_HINT = "pip install 'rlhfx[vllm]'"


class VLLMConfig(ComponentConfig):
    """vLLM's knobs (`rollouts = { engine = "vllm", ... }`); checks that vLLM is installed."""

    #: vLLM's compute dtype. "auto": bfloat16 on GPUs and on CPUs with native bf16
    #: (AVX512-BF16 / AMX), float32 on other CPUs (on an AVX2-only CPU vLLM's bfloat16 ran
    #: 6x slower than float32). "float32" samples exactly the trained weights.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    #: KV-cache space in GiB (vLLM's `kv_cache_memory_bytes`; on the CPU the same as
    #: VLLM_CPU_KVCACHE_SPACE). Unset: 2 GiB on the CPU (vLLM's CPU build would otherwise
    #: reserve a share of all memory), sized from `gpu_memory_utilization` on a GPU.
    kv_cache_gib: float | None = Field(default=None, gt=0)
    #: GPU only: the share of GPU memory vLLM may take (weights, activations, KV cache). Low
    #: by default because the policy trains on the same GPU.
    gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)
    #: CPU only: the cores vLLM's threads are bound to (VLLM_CPU_OMP_THREADS_BIND, e.g. "0-3"
    #: or "auto").
    threads: str | None = None
    #: Skip CUDA graphs / compilation: faster start-up, slower decoding on GPUs.
    enforce_eager: bool = True
    #: Longest prompt + response vLLM plans for; unset: the model's maximum positions.
    max_model_len: int | None = Field(default=None, ge=16)
    #: How new weights reach the engine: saved to a folder and reloaded in place.
    weight_sync: Literal["reload"] = "reload"

    @model_validator(mode="after")
    def _installed(self) -> VLLMConfig:
        # find_spec looks for the package without importing it: validation stays fast.
        if importlib.util.find_spec("vllm") is None:
            raise ValueError(f"vLLM is not installed: {VLLM_HINT}")
        return self


def cpu_process_settings() -> None:
    """On the CPU: run vLLM's engine in this process and let it use this process's threads.

    As separate processes (vLLM's default) the engine's busy loop and its worker compete for
    the same few cores as the trainer, and vLLM cuts its worker to one torch thread unless
    OMP_NUM_THREADS says otherwise: measured 1.6-1.7x `generate`'s speed in-process against
    1.2x as processes (2 cores, float32). Variables the user set are left alone.
    """
    import torch

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def merged_state_dict(model: Any) -> tuple[Any, dict[str, Any]]:
    """(plain model, its state dict) with any peft LoRA adapters merged into the weights.

    The merge is computed beside the model (W + scale * B @ A per adapted layer), never in
    place, so the model being trained is left exactly as it was.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    state = _full_state(base)
    if base is model:
        return base, state
    from peft.tuners.lora import LoraLayer

    for name, module in base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        layer: Any = module  # peft's concrete LoRA layers (Linear, Embedding...) add the delta
        merged = layer.get_base_layer().weight.detach().clone()
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A:
                merged += layer.get_delta_weight(adapter).to(merged.dtype)
        state[f"{name}.base_layer.weight"] = merged
    plain: dict[str, Any] = {}
    for key, value in state.items():
        if ".lora_" in key or "lora_embedding" in key:
            continue
        plain[key.replace(".base_layer.", ".")] = value
    return base, plain


def _full_state(model: Any) -> dict[str, Any]:
    """The model's weights; a sharded (fsdp) model's gathered in full on every process
    (collective: each process feeds its own engine)."""
    from rlhfx.sharding import is_sharded, without_tied_copies

    if not is_sharded(model):
        return dict(model.state_dict())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return without_tied_copies(model, full)


def save_policy(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write the policy (LoRA merged) and its tokenizer as a checkpoint vLLM can load."""
    from rlhfx.sharding import name_plain_class

    base, state = merged_state_dict(model)
    folder.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(folder, state_dict=state)
    name_plain_class(base, folder)  # vLLM picks its model class by this name
    tokenizer.save_pretrained(folder)


class VLLMEngine(RolloutEngine[VLLMConfig]):
    """vLLM on the policy's weights, colocated with training (CPU or GPU build)."""

    name = "vllm"
    owns_weights = True
    #: the `vllm.LLM` once started; None before `start` and after `close`
    llm: Any = None

    def start(self, model: Any, tokenizer: Any, setup: EngineSetup) -> None:
        from rlhfx.models import architecture_of

        c, self.tokenizer = self.config, tokenizer
        self.architecture = architecture_of(model)
        self.weights = Path(setup.work_dir) / WEIGHTS_DIR
        t = time.perf_counter()
        save_policy(model, tokenizer, self.weights)
        on_cpu = str(setup.device).startswith("cpu")
        if c.threads is not None:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = c.threads
        if on_cpu:
            cpu_process_settings()
        from vllm import LLM

        # "auto": bf16 only where native; on an AVX2-only CPU vLLM's kernels emulate it,
        # measured 136 s against 20 s in float32 for the same 48 samples
        self.dtype = resolve_dtype(c.dtype, str(setup.device))
        kwargs: dict[str, Any] = dict(
            model=str(self.weights),
            dtype=self.dtype,
            enforce_eager=c.enforce_eager,
            # The sampling settings rlhfx passes are the ones used: no defaults from the
            # checkpoint's generation_config (which may add EOS ids the `hf` path ignores).
            generation_config="vllm",
        )
        if c.max_model_len is not None:
            kwargs["max_model_len"] = c.max_model_len
        kv_gib = c.kv_cache_gib or (CPU_KV_CACHE_GIB if on_cpu else None)
        if kv_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_gib * 2**30)
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = c.gpu_memory_utilization
        self.llm = LLM(**kwargs)
        log.info("vLLM engine started in %.1f s (%s)", time.perf_counter() - t, self.dtype)

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings, num_samples: int = 1,
                 stop_strings: Sequence[str] = (), rng: random.Random | None = None,
                 progress: Any = None, description: str = "generating",
                 prompt_ids: Sequence[list[int]] | None = None) -> list[Rollout]:
        import torch
        from vllm import SamplingParams

        task = progress.add_task(description, total=len(prompts)) if progress is not None else None
        if not prompts:
            return []
        rng = rng or random.Random(0)
        ids_of = ([list(row) for row in prompt_ids] if prompt_ids is not None
                  else encode_prompts(self.tokenizer, prompts))
        # Seeds follow torch's generator, as the `hf` path's sampling does, so a run's seed
        # fixes its rollouts; `rng` is left for the response lengths, as on that path.
        base_seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        params = []
        for i in range(len(prompts)):
            common: dict[str, Any] = dict(
                n=num_samples, max_tokens=sampling.draw_max_new_tokens(rng),
                stop=list(stop_strings) or None, seed=base_seed + i,
                include_stop_str_in_output=True, skip_special_tokens=True,
            )
            if sampling.do_sample:
                common.update(temperature=sampling.temperature,
                              top_k=sampling.top_k if sampling.top_k > 0 else -1,
                              top_p=sampling.top_p)
            else:
                common.update(temperature=0.0)
            params.append(SamplingParams(**common))
        requests = [{"prompt_token_ids": row} for row in ids_of]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        out: list[Rollout] = []
        for p, request in enumerate(outputs):
            completions = sorted(request.outputs, key=lambda c: c.index)
            cut = [cut_at_eos(list(c.token_ids), eos, pad) for c in completions]
            texts = self.tokenizer.batch_decode(cut, skip_special_tokens=True)
            for ids, text in zip(cut, texts, strict=True):
                out.append(Rollout(prompt_id=p, prompt=prompts[p], prompt_ids=ids_of[p],
                                   response_ids=ids, text=text))
        if task is not None:
            progress.advance(task, len(prompts))
        return out

    def sync_weights(self, model: Any) -> None:
        t = time.perf_counter()
        save_policy(model, self.tokenizer, self.weights)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self.weights)})
        self.llm.reset_prefix_cache()
        log.debug("vLLM weights reloaded in %.1f s", time.perf_counter() - t)

    def can_take(self, model: Any, tokenizer: Any) -> bool:
        # reload_weights swaps tensors only: the config and tokenizer stay the first model's.
        from rlhfx.models import architecture_of, same_tokenization

        return (architecture_of(model) == self.architecture
                and same_tokenization(self.tokenizer, tokenizer))

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        import gc

        gc.collect()
