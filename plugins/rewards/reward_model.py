"""Reward from a sequence-classification model: the seed's GPT-Neo HH reward model, or any other.

`gpt-neo-rm` defaults to `weqweasdas/hh_rlhf_rm` (GPT-Neo-2.7B trained on HH-RLHF, the reward
of LMFlow's RAFT example); `reward_model` is the same source with no default, for a model the
`reward_model` stage trained or any `AutoModelForSequenceClassification` checkpoint.

The model reads `prompt + separator + response` as text with its own tokenizer, so the policy
may use a different one (TRL's experimental PPO could not: huggingface/trl#3595). The reward
is the raw logit of the single label (LMFlow: `function_to_apply="none"`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rlhfx import ComponentConfig, ModelSource, RewardSource, UserError
from rlhfx.config import SourceStr
from rlhfx.models import same_tokenization

#: Written by the reward_model stage beside a model it trained: how it saw its texts.
REWARD_INFO = "rlhfx_reward.json"


class SequenceRewardConfig(ComponentConfig):
    #: A directory, a hub id, or an earlier stage's output (`@reward_model.model`).
    model: ModelSource
    #: Tokenizer to use (default: the model's own).
    tokenizer: ModelSource | None = None
    #: Texts scored per forward pass (sorted by length first, so padding stays small).
    batch_size: int = Field(default=16, ge=1)
    #: Longer texts are truncated to this many tokens; unset: the model's maximum.
    max_length: int | None = Field(default=None, ge=8)
    #: `left` keeps the end of the text (the response being judged) when truncating.
    truncation_side: Literal["left", "right"] = "left"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Put between prompt and response (prompts end in `###Assistant:`).
    separator: str = " "
    #: Append the tokenizer's EOS to each text (as TRL's RewardTrainer does when training).
    #: Unset: what the model's rlhfx_reward.json says (written by the reward_model stage),
    #: else no.
    append_eos: bool | None = None
    #: When this model's tokenizer is the policy's, score the policy's sampled token ids
    #: (prompt + response) directly, as TRL's PPO does: no decode, join and re-tokenise. The
    #: separator is then not inserted (it only goes between a prompt and a response that both
    #: lack whitespace there). False: always score the text.
    token_ids: bool = True


class GptNeoRMConfig(SequenceRewardConfig):
    model: ModelSource = "weqweasdas/hh_rlhf_rm"


def join_prompt_response(prompt: str, response: str, separator: str = " ") -> str:
    """The text a reward model reads: `separator` goes between prompt and response unless
    either side already has whitespace there (a chat prompt ends in a newline).

    The data stage writes reward-model pairs with this same function, so a model trained on
    them sees the layout it will score.
    """
    if not prompt or not response or prompt[-1].isspace() or response[0].isspace():
        return prompt + response
    return prompt + separator + response


def score_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    max_length: int | None = None,
    append_eos: bool = False,
) -> list[float]:
    """The first logit of each text, batched by similar length, without gradients."""
    if not texts:
        return []
    if append_eos and tokenizer.eos_token:
        texts = [t if t.endswith(tokenizer.eos_token) else t + tokenizer.eos_token for t in texts]
    limit = max_length or model_max_length(model, tokenizer)
    enc = tokenizer(list(texts), truncation=True, max_length=limit, add_special_tokens=True)
    return score_ids(model, enc["input_ids"], tokenizer.pad_token_id, batch_size)


def score_ids(
    model: Any, ids: Sequence[Sequence[int]], pad_id: int | None, batch_size: int = 16
) -> list[float]:
    """The first logit of each token sequence, without gradients.

    Sorting by length before batching keeps padding (wasted compute) small; results are
    returned in the input order.
    """
    import torch

    if not ids:
        return []
    device = next(model.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = pad_id if pad_id is not None else 0
    scores = [0.0] * len(ids)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(list(ids[i]), dtype=torch.long)
                    mask[row, : len(ids[i])] = 1
                out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                logits = out.logits
                for row, i in enumerate(batch):
                    scores[i] = float(logits[row, 0])
    finally:
        model.train(was_training)
    return scores


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The longest input the model takes: the tokenizer's limit when sane, else the config's."""
    candidates = [
        getattr(model.config, "max_position_embeddings", None),
        getattr(model.config, "n_positions", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    usable = [int(c) for c in candidates if isinstance(c, int) and 0 < c < 1_000_000]
    return min(usable) if usable else 1024


def prepare_for_scoring(model: Any, tokenizer: Any) -> None:
    """Padding must be known to the model: it finds each row's last real token by it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


class SequenceReward(RewardSource[SequenceRewardConfig]):
    """Raw logit of a sequence-classification reward model on prompt + response."""

    name = "reward_model"

    #: loaded on first use (`_load`), so that `validate` and construction stay cheap
    _model: Any = None
    _tokenizer: Any = None
    _append_eos = False

    def _load(self) -> None:
        import torch

        from rlhfx.models import load_sequence_classifier, load_tokenizer

        c = self.config
        for value in (c.model, c.tokenizer):
            if value and SourceStr(value).stage_ref:
                raise UserError(
                    f"reward source '{self.name}': '{value}' was not resolved to a path "
                    "(the stage that builds this reward must resolve @stage references)"
                )
        device = c.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = load_tokenizer(c.tokenizer or c.model)
        tokenizer.truncation_side = c.truncation_side
        model = load_sequence_classifier(c.model, dtype=c.dtype, device=device)
        if getattr(model.config, "num_labels", 1) < 1:
            raise UserError(f"'{c.model}': a reward model needs at least one output label")
        prepare_for_scoring(model, tokenizer)
        model.requires_grad_(False)
        self._append_eos = c.append_eos if c.append_eos is not None else _info(c.model).get(
            "append_eos", False
        )
        self._model, self._tokenizer = model, tokenizer

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        sep = self.config.separator
        return [join_prompt_response(p, r, sep) for p, r in zip(prompts, responses, strict=True)]

    def reads_policy_tokens(self, tokenizer: Any) -> bool:
        if not self.config.token_ids:
            return False
        if self._model is None:
            self._load()
        return same_tokenization(self._tokenizer, tokenizer)

    def score_tokens(
        self, prompt_ids: Sequence[list[int]], response_ids: Sequence[list[int]]
    ) -> list[float]:
        """prompt + response ids as sampled, EOS at the end exactly when the text path would
        append it, cut from the left at the model's limit as the text path cuts."""
        if self._model is None:
            self._load()
        tokenizer = self._tokenizer
        eos = tokenizer.eos_token_id
        limit = self.config.max_length or model_max_length(self._model, tokenizer)
        sequences = []
        for prompt, response in zip(prompt_ids, response_ids, strict=True):
            ids = list(prompt) + list(response)
            while len(ids) > len(prompt) and eos is not None and ids[-1] == eos:
                ids.pop()  # the decoded text leaves EOS out
            if self._append_eos and eos is not None:
                ids.append(eos)
            sequences.append(ids[-limit:])
        return score_ids(self._model, sequences, tokenizer.pad_token_id, self.config.batch_size)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if self._model is None:
            self._load()
        return score_texts(
            self._model, self._tokenizer, self.texts(prompts, responses),
            batch_size=self.config.batch_size, max_length=self.config.max_length,
            append_eos=self._append_eos,
        )


class GptNeoRM(SequenceReward):
    """The seed's GPT-Neo-2.7B HH reward model (weqweasdas/hh_rlhf_rm), or another given model."""

    name = "gpt-neo-rm"
    Config = GptNeoRMConfig
    config: GptNeoRMConfig


def _info(model: str) -> dict[str, Any]:
    path = Path(model).expanduser() / REWARD_INFO
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
    return {}

