"""Loading models and tokenizers from what a recipe names: a directory or a hub id.

Stages and algorithms call these instead of `from_pretrained` directly, so that every way of
naming a model (GGUF files and files inside installed packages: model_sources.py; built-in
tiny models: tiny.py) works everywhere at once.
"""

from __future__ import annotations

from typing import Any

from rlhfx.errors import UserError
from rlhfx.model_sources import first_line as _first_line
from rlhfx.model_sources import loadable_path
from rlhfx.tiny import is_builtin, tiny_causal_lm, tiny_tokenizer

DTYPES = ("auto", "float32", "bfloat16", "float16")


def forward_arguments(model: Any) -> set[str]:
    """The keyword arguments `model`'s forward takes (a peft wrapper's base model's); an
    uninspectable forward takes none we know of."""
    import inspect

    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(network.forward).parameters)
    except (AttributeError, TypeError, ValueError):
        return set()


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether `model` can make the logits of its last positions only (`logits_to_keep`): a
    prompt's logits cost a vocabulary-wide product per token for nothing when only the
    response is scored or trained on."""
    return "logits_to_keep" in forward_arguments(model)


def torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    try:
        table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        return table[name]
    except KeyError:
        raise UserError(f"unknown dtype '{name}' (choose one of: {', '.join(DTYPES)})") from None


def load_tokenizer(source: str, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    if is_builtin(source):
        return tiny_tokenizer(source)

    try:
        tokenizer = AutoTokenizer.from_pretrained(loadable_path(source), **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load a tokenizer from '{source}': {_first_line(exc)}") from None
    except (ValueError, TypeError, KeyError) as exc:  # files there, but not a tokenizer's
        raise UserError(
            f"cannot load a tokenizer from '{source}': not a tokenizer ({_first_line(exc)})"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(source: str, dtype: str = "auto", device: str = "cpu", **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    if is_builtin(source):  # `builtin:tiny-gpt-neo`: built from a config, no download
        model = tiny_causal_lm(source)
        return _faster(
            model.to(device=device, dtype=None if dtype == "auto" else torch_dtype(dtype)))

    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            loadable_path(source), dtype=torch_dtype(dtype), **kwargs
        )
    except OSError as exc:
        raise UserError(f"cannot load a causal LM from '{source}': {_first_line(exc)}") from None
    return _faster(loaded.to(device))


def load_sequence_classifier(
    source: str, dtype: str = "auto", device: str = "cpu", num_labels: int | None = None,
    **kwargs: Any,
) -> Any:
    """A sequence-classification model (a reward model), e.g. `weqweasdas/hh_rlhf_rm`.

    `num_labels=1` turns a causal-LM checkpoint (an SFT policy) into a reward model with a
    fresh scoring head; None keeps what the checkpoint says (for a trained reward model).
    """
    from transformers import AutoModelForSequenceClassification

    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if is_builtin(source):  # the built-in tiny body with a fresh head
        body = tiny_causal_lm(source)
        config = body.config
        config.num_labels = kwargs.get("num_labels", 1)
        model = AutoModelForSequenceClassification.from_config(config)
        model.load_state_dict(body.state_dict(), strict=False)  # lm_head unused, score fresh
        return _faster(
            model.to(device=device, dtype=None if dtype == "auto" else torch_dtype(dtype)))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            loadable_path(source), dtype=torch_dtype(dtype), **kwargs
        )
    except OSError as exc:
        raise UserError(
            f"cannot load a sequence-classification model from '{source}': {_first_line(exc)}"
        ) from None
    return _faster(model.to(device))


def _faster(model: Any) -> Any:
    """A loaded model with torch's fused kernels where transformers computes in Python."""
    from rlhfx.gpt_neo_attention import use_fused_attention

    return use_fused_attention(fused_gelu(model))


def fused_gelu(model: Any) -> Any:
    """`model` (returned) with transformers' tanh-approximated GELU written in Python
    (`NewGELUActivation`: GPT-2, GPT-Neo, GPT-J and kin) swapped for torch's fused kernel of
    the same formula (transformers' `GELUTanh`): one pass over the activations instead of
    seven; the results differ in the last bits only (the tiny GPT-Neo samples about 7% faster
    with it). Nothing saved changes: the config still names its activation."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
    return model


#: Text whose encoding two tokenizers must agree on (special tokens, spacing, normalisation,
#: digits, accents) before ids made by one are read as the other's.
TOKENIZER_PROBE = "Hello there!  Two\nlines, 1234 numbers; caf\u00e9 na\u00efve\t\u2014 ok?"


def same_tokenization(ours: Any, theirs: Any) -> bool:
    """Whether two tokenizers turn text into the same ids: same vocabulary, same special
    tokens added, same EOS."""
    if ours is theirs:
        return True
    try:
        return (
            len(ours) == len(theirs)
            and ours.eos_token_id == theirs.eos_token_id
            and ours.get_vocab() == theirs.get_vocab()
            and ours(TOKENIZER_PROBE)["input_ids"] == theirs(TOKENIZER_PROBE)["input_ids"]
        )
    except (AttributeError, TypeError, ValueError):  # not a tokenizer we can compare
        return False


#: Config entries that do not change what a model computes (paths, versions, the dtype it
#: was saved in, output switches).
_NOT_ARCHITECTURE = frozenset({
    "transformers_version", "torch_dtype", "dtype", "name_or_path", "use_cache",
    "output_hidden_states", "output_attentions", "return_dict",
})


def architecture_of(model: Any) -> dict[str, Any]:
    """The model's config as far as it defines the computation (a peft model's base's):
    two models with equal ones differ only in their weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {k: v for k, v in base.config.to_dict().items()
            if not k.startswith("_") and k not in _NOT_ARCHITECTURE}
