"""Loading models and tokenizers from what a recipe names: a directory or a hub id.

Stages and algorithms call these instead of `from_pretrained` directly, so that every way of
naming a model (later: GGUF files, files inside installed packages, built-in tiny models) works
everywhere at once.
"""

from __future__ import annotations

from typing import Any

from rlhfx.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise UserError(f"unknown dtype '{name}' (choose one of: {', '.join(DTYPES)})") from None


def load_tokenizer(source: str, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load a tokenizer from '{source}': {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(source: str, dtype: str = "auto", device: str = "cpu", **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype), **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load a causal LM from '{source}': {_first_line(exc)}") from None
    return model.to(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
