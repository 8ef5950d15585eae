"""Batched generation shared by every alignment algorithm, and the rollout engines.

`generate` samples with rlhfx's own decode loop over the model's forward and KV cache
(`rlhfx.sampling`: each prompt pre-filled once for its k samples, finished rows leave the
batch, the tokens returned exactly as sampled); generation stops at EOS or at a stop string.
`decoder="generate"` (and models that loop cannot follow) takes transformers' `generate`,
with left padding and each prompt's cache repeated for its k samples.

A rollout engine is what the alignment loop samples with: `hf` (this module's `generate`) or
`vllm` (a colocated vLLM engine, `rlhfx.vllm_engine`, fed the policy's weights after every
update). `make_engine` builds the one a recipe's `rollouts` table names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from rlhfx.components import ComponentConfig
from rlhfx.errors import UserError


@dataclass
class Rollout:
    prompt_id: int  # index into the `prompts` given to `generate`
    prompt: str
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including EOS when the model produced one
    text: str  # decoded response, special tokens removed
    extra: dict[str, Any] = field(default_factory=dict)
    #: Per-token log-probabilities of `response_ids` when the engine gives them (vLLM: the raw
    #: model distribution, before temperature, in the engine's dtype: approximate; recompute
    #: exact ones where an algorithm needs them). None from the `hf` engine.
    logprobs: list[float] | None = None


@dataclass
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0  # 0 = off (the classic PPO setting: the KL estimate assumes plain sampling)
    top_p: float = 1.0
    do_sample: bool = True
    #: When set, each generate call draws its max_new_tokens uniformly from [low, high]
    #: (LMFlow's output_min_length / output_max_length), instead of using `max_new_tokens`.
    length_range: tuple[int, int] | None = None

    def draw_max_new_tokens(self, rng: random.Random) -> int:
        if self.length_range is None:
            return self.max_new_tokens
        low, high = self.length_range
        return rng.randint(low, high) if high > low else low


def adds_bos(tokenizer: Any) -> bool:
    """True when `tokenizer(text)` starts with BOS by default (LLaMA-style tokenizers), as in
    TRL's SFTTrainer. Checked once per tokenizer and cached on it."""
    cached = getattr(tokenizer, "_rlhfx_adds_bos", None)
    if cached is not None:
        return bool(cached)
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("x")["input_ids"] if bos is not None else []
    result = bool(ids) and ids[0] == bos
    # A tokenizer that refuses new attributes is simply asked again next time.
    with contextlib.suppress(AttributeError, TypeError):
        tokenizer._rlhfx_adds_bos = result
    return result


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of prompts as the policy saw them in SFT: BOS first when the tokenizer adds one
    by default and the text does not already start with it, and no other special tokens
    (a response is appended to these ids, so an EOS a template might add must not be here)."""
    if not texts:
        return []
    ids = [list(row) for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    if adds_bos(tokenizer):
        bos = tokenizer.bos_token_id
        ids = [row if row[:1] == [bos] else [bos, *row] for row in ids]
    return ids


def _rows_per_call(batch_size: int, num_samples: int) -> int:
    """Prompts per generate call so that prompts x samples stays near `batch_size` rows."""
    return max(1, batch_size // max(1, num_samples))


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    sampling: SamplingSettings,
    num_samples: int = 1,
    batch_size: int = 8,
    stop_strings: Sequence[str] = (),
    progress: Any = None,
    description: str = "generating",
    rng: random.Random | None = None,
    prefill_once: bool = True,
    decoder: Literal["loop", "generate"] = "loop",
) -> list[Rollout]:
    """`num_samples` responses for each prompt, ordered prompt by prompt.

    `rng` draws the per-call response length when `sampling.length_range` is set.
    `decoder`: "loop" samples with `rlhfx.sampling` (falls back to transformers' `generate`
    for what that loop does not do); "generate" with transformers' `generate`, where
    `prefill_once` runs each prompt through the model once for its k samples (see
    `_prefilled_cache`) and False lets `generate` expand the prompts first (k prefills each).
    """
    import torch

    from rlhfx.sampling import Decoding, sample_responses, unsupported_reason

    loop = decoder == "loop" and unsupported_reason(model) is None

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    per_call = _rows_per_call(batch_size, num_samples)
    task = progress.add_task(description, total=len(prompts)) if progress is not None else None
    out: list[Rollout] = []
    rng = rng or random.Random(0)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            enc = tokenizer.pad(
                {"input_ids": encode_prompts(tokenizer, chunk)}, padding=True, return_tensors="pt"
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            kwargs: dict[str, Any] = dict(
                max_new_tokens=sampling.draw_max_new_tokens(rng),
                do_sample=sampling.do_sample,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
            if sampling.do_sample:
                kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k,
                              top_p=sampling.top_p)
            if stop_strings:
                kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
            width = enc["input_ids"].shape[1]
            prompt_rows = enc["input_ids"].tolist()
            masks = enc["attention_mask"].tolist()
            prompt_ids = [
                [t for t, m in zip(row, mask, strict=True) if m]
                for row, mask in zip(prompt_rows, masks, strict=True)
            ]
            with torch.no_grad():
                if loop:  # rlhfx.sampling's decoder: the tokens as sampled
                    cut = sample_responses(model, tokenizer, prompt_ids, num_samples, Decoding(
                        kwargs["max_new_tokens"], sampling.do_sample, sampling.temperature,
                        sampling.top_k, sampling.top_p, [tokenizer.eos_token_id], stop_strings))
                elif prefill_once and num_samples > 1 and width > 1:
                    cache = {_cache_argument(model): _prefilled_cache(model, enc, num_samples)}
                    inputs = {k: v.repeat_interleave(num_samples, dim=0) for k, v in enc.items()}
                    generated = model.generate(**inputs, **cache, **kwargs)
                else:
                    generated = model.generate(**enc, num_return_sequences=num_samples, **kwargs)
            if not loop:
                eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
                cut = [_cut_at_eos(r, eos, pad) for r in generated[:, width:].tolist()]
            texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
            for row, (ids, text) in enumerate(zip(cut, texts, strict=True)):
                p = row // num_samples
                out.append(
                    Rollout(
                        prompt_id=start + p,
                        prompt=chunk[p],
                        prompt_ids=prompt_ids[p],
                        response_ids=ids,
                        text=text,
                    )
                )
            if task is not None:
                progress.advance(task, len(chunk))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out


def _prefilled_cache(model: Any, enc: dict[str, Any], copies: int) -> Any:
    """The KV cache of every prompt token but the last, computed once per prompt and then
    repeated `copies` times (row i's copies next to each other, as `num_return_sequences`
    orders them).

    `generate` given this cache feeds only the last prompt token, so the prompt is pre-filled
    once instead of once per sample. Positions follow the attention mask, as `generate`
    derives them, so left padding gives the same positions as on the usual path.
    """
    from transformers import DynamicCache

    head: dict[str, Any] = {k: v[:, :-1] for k, v in enc.items()}
    if "position_ids" in _forward_arguments(model):  # not in models with ALiBi, e.g.
        head["position_ids"] = (head["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    model(**head, use_cache=True, **{_cache_argument(model): cache})
    cache.batch_repeat_interleave(copies)
    return cache


def _forward_arguments(model: Any) -> set[str]:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def _cache_argument(model: Any) -> str:
    """The name transformers gives the KV-cache argument: `cache` from 5.2x on (the old
    `past_key_values` still works there, with a deprecation warning), `past_key_values` before."""
    return "cache" if "cache" in _forward_arguments(model) else "past_key_values"


def _cut_at_eos(ids: list[int], eos: int | None, pad: int | None) -> list[int]:
    """Keep tokens up to and including the first EOS; drop the padding after it."""
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    if pad is not None and pad != eos:
        while ids and ids[-1] == pad:
            ids = ids[:-1]
    return ids


# ------------------------------------------------------------------------------ engines

#: How to get vLLM, in the one-line error given when a recipe asks for it and it is missing.
VLLM_HINT = "pip install 'rlhfx[vllm]'"


class RolloutSettings(ComponentConfig):
    """Which engine samples rollouts (`rollouts = { engine = "vllm", ... }`), and vLLM's knobs.

    The vLLM options are ignored by the `hf` engine.
    """

    engine: Literal["hf", "vllm"] = "hf"
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


def check_engine(settings: RolloutSettings) -> None:
    """A one-line UserError when the recipe asks for an engine that is not installed."""
    if settings.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError(f'rollouts.engine = "vllm" needs vLLM: {VLLM_HINT}')


def _installed(settings: RolloutSettings) -> RolloutSettings:
    try:
        check_engine(settings)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    return settings


#: A stage option naming a rollout engine: a recipe asking for one that is not installed fails
#: validation with the install line.
EngineChoice = Annotated[RolloutSettings, AfterValidator(_installed)]


class RolloutEngine:
    """Samples responses for the alignment loop; `sync_weights` after every policy update."""

    #: The engine keeps its own copy of the weights (vLLM), so the model it was built from may
    #: be freed while it lives; False: it samples from that model object itself.
    owns_weights: bool = False

    def generate(
        self,
        prompts: Sequence[str],
        sampling: SamplingSettings,
        num_samples: int = 1,
        stop_strings: Sequence[str] = (),
        rng: random.Random | None = None,
        progress: Any = None,
        description: str = "generating",
    ) -> list[Rollout]:
        raise NotImplementedError

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from `model` (the trained policy; full or a peft model)."""

    def can_take(self, model: Any, tokenizer: Any) -> bool:
        """Whether `sync_weights(model)` may switch this engine to another model (same
        architecture and tokenizer), instead of building a new engine for it."""
        return False

    def close(self) -> None:
        """Free what the engine holds (processes, memory)."""


class HFEngine(RolloutEngine):
    """transformers' `generate` on the policy itself: nothing to sync, nothing to free."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(
        self,
        prompts: Sequence[str],
        sampling: SamplingSettings,
        num_samples: int = 1,
        stop_strings: Sequence[str] = (),
        rng: random.Random | None = None,
        progress: Any = None,
        description: str = "generating",
    ) -> list[Rollout]:
        return generate(
            self.model, self.tokenizer, prompts, sampling, num_samples=num_samples,
            batch_size=self.batch_size, stop_strings=stop_strings, progress=progress,
            description=description, rng=rng,
        )

    def sync_weights(self, model: Any) -> None:
        self.model = model


def make_engine(
    settings: RolloutSettings, model: Any, tokenizer: Any, *, batch_size: int, device: str,
    work_dir: Path,
) -> RolloutEngine:
    """The engine `settings` names, ready to sample from `model`.

    `work_dir` holds what the engine writes (vLLM: the weights it loads); `device` is where the
    policy trains ("cpu", "cuda", "cuda:0").
    """
    check_engine(settings)
    if settings.engine == "hf":
        return HFEngine(model, tokenizer, batch_size)
    from rlhfx.vllm_engine import VLLMEngine

    return VLLMEngine(settings, model, tokenizer, device=device, work_dir=Path(work_dir))
