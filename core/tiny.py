"""Built-in tiny models and prompt sets, named `builtin:<name>` in recipes.

They let the default recipe and the tests run on a fresh machine with no network: the policy
is a small GPT-Neo built from a config with fixed initial weights, and its byte-level BPE
tokenizer is trained in about a second on the built-in prompt set. Both are deterministic,
so a run that resumes rebuilds exactly the model it started from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfx.errors import UserError

PREFIX = "builtin:"
DATA_DIR = Path(__file__).parent / "builtin_data"
EOS = "<|endoftext|>"
UNK = "<unk>"

#: Built-in prompt sets: name -> file shipped with the package (JSONL, one {"prompt": ...} a line).
PROMPT_SETS = {
    "tiny-prompts": DATA_DIR / "tiny_prompts.jsonl",
    "tiny-eval-prompts": DATA_DIR / "tiny_eval_prompts.jsonl",
}


@dataclass(frozen=True)
class TinySpec:
    """Shape of a built-in tiny GPT-Neo; `init_seed` fixes its initial weights."""

    vocab_size: int = 512
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 256
    init_seed: int = 0


MODELS: dict[str, TinySpec] = {"tiny-gpt-neo": TinySpec()}


def is_builtin(source: str) -> bool:
    return str(source).startswith(PREFIX)


def _name(source: str, table: dict[str, Any], what: str) -> str:
    name = str(source)[len(PREFIX):]
    if name not in table:
        known = ", ".join(PREFIX + k for k in table)
        raise UserError(f"unknown built-in {what} '{source}' (known: {known})")
    return name


def prompt_set_path(source: str) -> Path:
    """The file behind `builtin:tiny-prompts` and friends."""
    return PROMPT_SETS[_name(source, PROMPT_SETS, "prompt set")]


def _corpus() -> list[str]:
    import json

    texts = []
    for path in PROMPT_SETS.values():
        with path.open(encoding="utf-8") as f:
            texts += [json.loads(line)["prompt"] for line in f if line.strip()]
    return texts


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    # A byte-level BPE like GPT-2's, trained on the built-in prompts, whose alphabet is only
    # the bytes those prompts use (printable ASCII): a random policy then writes word pieces,
    # not invalid UTF-8. Other bytes become <unk>; common words become single tokens.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, UNK],
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(source: str) -> Any:
    """A fresh `PreTrainedTokenizerFast` for a built-in model (EOS doubles as padding)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = MODELS[_name(source, MODELS, "model")]
    tok = Tokenizer.from_str(_tokenizer_json(spec.vocab_size))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=UNK, pad_token=EOS
    )


def tiny_causal_lm(source: str) -> Any:
    """A GPT-Neo with the built-in shape and fixed initial weights (same on every process)."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    spec = MODELS[_name(source, MODELS, "model")]
    tokenizer = tiny_tokenizer(source)
    config = GPTNeoConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        attention_types=[[["global", "local"], spec.num_layers // 2]],
        window_size=spec.max_positions,
        max_position_embeddings=spec.max_positions,
        intermediate_size=4 * spec.hidden_size,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = GPTNeoForCausalLM(config)
    return model.eval()  # like from_pretrained
