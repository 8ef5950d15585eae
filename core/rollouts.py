"""Batched generation shared by every alignment algorithm, and the rollout engines.

`generate` samples with rlhfx's own decode loop over the model's forward and KV cache
(`rlhfx.sampling`: each prompt pre-filled once for its k samples, finished rows leave the
batch, the tokens returned exactly as sampled); generation stops at EOS or at a stop string.
`decoder="generate"` (and models that loop cannot follow) takes transformers' `generate`,
with left padding and each prompt's cache repeated for its k samples.

A rollout engine (`rlhfx.RolloutEngine`, a plugin kind) is what the alignment loop and the
evaluate stage sample with; the built-ins `hf` (this module's `generate`) and `vllm` live in
`rlhfx.plugins.rollout_engines`. `make_engine` starts the one a recipe's `rollouts` table
names.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from rlhfx.components import EngineSetup, RolloutEngine
from rlhfx.config import ComponentRef
from rlhfx.errors import UserError
from rlhfx.models import forward_arguments

__all__ = [
    "EngineSetup", "Rollout", "RolloutEngine", "RolloutSettings", "SamplingSettings",
    "adds_bos", "check_engine", "cut_at_eos", "encode_prompts", "generate", "make_engine",
]


@dataclass
class Rollout:
    prompt_id: int  # index into the `prompts` given to `generate`
    prompt: str
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including EOS when the model produced one
    text: str  # decoded response, special tokens removed
    extra: dict[str, Any] = field(default_factory=dict)


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
    prompt_ids: Sequence[list[int]] | None = None,
    decoder: Literal["loop", "generate"] = "loop",
    dtype: Literal["float32", "bfloat16"] = "float32",
) -> list[Rollout]:
    """`num_samples` responses for each prompt, ordered prompt by prompt.

    `prompt_ids`: the prompts' token ids, used as given instead of encoding `prompts` (an
    episode's context holds sampled ids that must not be re-tokenised).

    `rng` draws the per-call response length when `sampling.length_range` is set.
    `decoder`: "loop" samples with `rlhfx.sampling` (falls back to transformers' `generate`
    for what that loop does not do); "generate" with transformers' `generate`, where
    `prefill_once` runs each prompt through the model once for its k samples (see
    `_prefilled_cache`) and False lets `generate` expand the prompts first (k prefills each).
    `dtype`: "bfloat16" samples with the weights in bf16 (`bf16_weights`; KV cache in bf16,
    or float32 for attention computing in float32): on hardware with native bf16 about
    twice the matrix-product rate of float32, but the draws are no longer `generate`'s for
    the seed, so the loop also takes its cheaper one-uniform draw
    (`Decoding.generate_noise = False`).
    """
    import torch
    from transformers import LogitsProcessorList

    from rlhfx.sampling import Decoding, sample_responses, unsupported_reason

    loop = decoder == "loop" and unsupported_reason(model) is None

    device = next(model.parameters()).device

    def precision() -> contextlib.AbstractContextManager[Any]:  # entered once per chunk
        return bf16_weights(model) if dtype == "bfloat16" else contextlib.nullcontext()

    # generate's own draws only where its samples could be reproduced at all: float32
    exact = dtype == "float32" and not torch.is_autocast_enabled(device.type)
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
            given = ([list(row) for row in prompt_ids[start : start + per_call]]
                     if prompt_ids is not None else encode_prompts(tokenizer, chunk))
            enc = tokenizer.pad({"input_ids": given}, padding=True, return_tensors="pt")
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
            guard = FiniteLogits()
            kwargs["logits_processor"] = LogitsProcessorList([guard])
            width = enc["input_ids"].shape[1]
            prompt_rows = enc["input_ids"].tolist()
            masks = enc["attention_mask"].tolist()
            unpadded = [
                [t for t, m in zip(row, mask, strict=True) if m]
                for row, mask in zip(prompt_rows, masks, strict=True)
            ]
            with torch.no_grad(), guard.watching(), precision():
                if loop:  # rlhfx.sampling's decoder: the tokens as sampled
                    cut = sample_responses(model, tokenizer, unpadded, num_samples, Decoding(
                        kwargs["max_new_tokens"], sampling.do_sample, sampling.temperature,
                        sampling.top_k, sampling.top_p, [tokenizer.eos_token_id], stop_strings,
                        generate_noise=exact, watch=guard))
                elif prefill_once and num_samples > 1 and width > 1:
                    cache = {_cache_argument(model): _prefilled_cache(model, enc, num_samples)}
                    inputs = {k: v.repeat_interleave(num_samples, dim=0) for k, v in enc.items()}
                    generated = model.generate(**inputs, **cache, **kwargs)
                else:
                    generated = model.generate(**enc, num_return_sequences=num_samples, **kwargs)
            if not loop:
                eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
                cut = [cut_at_eos(r, eos, pad) for r in generated[:, width:].tolist()]
            texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
            for row, (ids, text) in enumerate(zip(cut, texts, strict=True)):
                p = row // num_samples
                out.append(
                    Rollout(
                        prompt_id=start + p,
                        prompt=chunk[p],
                        prompt_ids=unpadded[p],
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


@contextlib.contextmanager
def bf16_weights(model: Any) -> Iterator[None]:
    """The model's float32 weights swapped for bf16 copies for the block, the float32 ones
    (the very tensors, nothing rounded) put back after it.

    Autocast would cast only the weights that require grad once per block; LoRA's frozen base
    weights it casts again at every forward pass, which ate most of bf16's gain. A sharded
    model keeps its weights and runs under autocast instead.
    """
    import torch

    from rlhfx.sharding import holds_shards

    if holds_shards(model):
        device = next(model.parameters()).device
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    kept = [(p, p.data) for p in model.parameters() if p.dtype == torch.float32]
    try:
        with torch.no_grad():
            for p, data in kept:
                p.data = data.to(torch.bfloat16)
        yield
    finally:
        for p, data in kept:
            p.data = data


class FiniteLogits:
    """A logits processor that notes rows whose next-token distribution is broken (a NaN or
    +inf logit, or every token at -inf: what a diverged policy gives) and makes them uniform
    so that sampling goes on; `watching()` raises `NonFinite` after `generate` returns. The
    note stays on the device (no synchronisation per token); on a CPU, where reading it costs
    nothing, sound logits are returned as they are (no copy of the vocabulary per step)."""

    def __init__(self) -> None:
        self.broken: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        # one pass over the vocabulary: the row's max is NaN (amax propagates it), +inf, or
        # -inf (every token at -inf) exactly when the row is broken
        rows = ~torch.isfinite(scores.amax(-1))
        self.broken = rows.any() if self.broken is None else self.broken | rows.any()
        if scores.device.type == "cpu" and not bool(rows.any()):  # no wait to read it here
            return scores
        return torch.where(rows.unsqueeze(-1), torch.zeros_like(scores), scores)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        from rlhfx.alignment.nonfinite import NonFinite

        try:
            yield
        except RuntimeError as exc:  # a sampler that met the broken values first
            if "probability tensor contains" in str(exc):
                raise NonFinite("the sampled distribution", "NaN or infinite") from None
            raise
        if self.broken is not None and bool(self.broken):
            raise NonFinite("the sampled distribution", "NaN or infinite")


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
    if "position_ids" in forward_arguments(model):  # not in models with ALiBi, e.g.
        head["position_ids"] = (head["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    model(**head, use_cache=True, **{_cache_argument(model): cache})
    cache.batch_repeat_interleave(copies)
    return cache


def _cache_argument(model: Any) -> str:
    """The name transformers gives the KV-cache argument: `cache` from 5.2x on (the old
    `past_key_values` still works there, with a deprecation warning), `past_key_values` before."""
    return "cache" if "cache" in forward_arguments(model) else "past_key_values"


def cut_at_eos(ids: list[int], eos: int | None, pad: int | None) -> list[int]:
    """Keep tokens up to and including the first EOS; drop the padding after it."""
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    if pad is not None and pad != eos:
        while ids and ids[-1] == pad:
            ids = ids[:-1]
    return ids


# ------------------------------------------------------------------------------ engines


class RolloutSettings(ComponentRef):
    """A recipe's `rollouts` table: the engine that samples (`engine`, a registered
    `rlhfx.RolloutEngine`; `hf` by default) and that engine's own options inline, checked
    against its `Config` (`rollouts = { engine = "vllm", dtype = "float32" }`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    kind = "rollout_engine"
    name_key = "engine"
    name: str = Field(default="hf", alias="engine")

    @property
    def engine(self) -> str:
        return self.name


def check_engine(settings: RolloutSettings, where: str = "rollouts") -> None:
    """A one-line UserError starting with `where` when the engine is unknown, its options are
    wrong or what it needs is not installed (its `Config` checks that)."""
    if settings.resolved:
        return
    try:
        settings.resolve()
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def make_engine(
    settings: RolloutSettings, model: Any, tokenizer: Any, *, batch_size: int, device: str,
    work_dir: Path,
) -> RolloutEngine:
    """The engine `settings` names, started on `model`.

    `work_dir` holds what the engine writes (vLLM: the weights it loads); `device` is where the
    policy trains ("cpu", "cuda", "cuda:0").
    """
    from rlhfx.faults import call_plugin

    check_engine(settings)
    engine: RolloutEngine = settings.build()
    setup = EngineSetup(batch_size=batch_size, device=device, work_dir=Path(work_dir))
    call_plugin(engine, "rollouts", engine.start, model, tokenizer, setup)
    return engine
