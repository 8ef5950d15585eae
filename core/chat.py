"""Prompts for chat models, and where their turns end, read from the tokenizer's chat template.

A chat model answers well only in the layout it was tuned on, so prompts go through
`apply_chat_template(..., add_generation_prompt=True)`. The same template tells where an answer
ends (SmolLM2 and other ChatML models write `<|im_end|>`, Llama 3 `<|eot_id|>`): rendering a
conversation with a placeholder answer and reading what follows it gives those strings without
a table of model families, so generation and the stop-marker cleaner follow any template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlhfx.errors import UserError

Message = Mapping[str, str]

# Placeholders for probing a template: plain words that no template rewrites.
_USER, _ANSWER, _NEXT = "rlhfxprobeuser", "rlhfxprobeanswer", "rlhfxprobenext"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def require_chat_template(tokenizer: Any, where: str = "") -> None:
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        prefix = f"{where}: " if where else ""
        raise UserError(
            f"{prefix}the tokenizer of '{name}' has no chat template; "
            "give plain-text prompts or a chat model"
        )


def chat_messages(prompt: str | Sequence[Message], system: str | None = None) -> list[dict]:
    """A user prompt (a string) or a list of messages, with an optional system message first."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system is not None and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def chat_prompt(
    tokenizer: Any, prompt: str | Sequence[Message], system: str | None = None
) -> str:
    """The text a chat model continues with its answer (ends with the assistant header)."""
    require_chat_template(tokenizer)
    return tokenizer.apply_chat_template(
        chat_messages(prompt, system), tokenize=False, add_generation_prompt=True
    )


def chat_prompts(
    tokenizer: Any, prompts: Sequence[str | Sequence[Message]], system: str | None = None
) -> list[str]:
    return [chat_prompt(tokenizer, p, system) for p in prompts]


def _render(tokenizer: Any, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template may reject a probe conversation (jinja raise_exception)
        return None


def end_of_turn_suffix(tokenizer: Any) -> str | None:
    """The exact text the template writes after an assistant answer (e.g. "<|im_end|>\\n")."""
    if not has_chat_template(tokenizer):
        return None
    text = _render(
        tokenizer,
        [{"role": "user", "content": _USER}, {"role": "assistant", "content": _ANSWER}],
    )
    if text is None or _ANSWER not in text:
        return None
    return text[text.rindex(_ANSWER) + len(_ANSWER):]


def end_of_turn(tokenizer: Any) -> str | None:
    """The marker that closes an answer: the first special token after it, else its text."""
    suffix = end_of_turn_suffix(tokenizer)
    if not suffix or not suffix.strip():
        return None
    specials = [t for t in _special_tokens(tokenizer) if t in suffix]
    if specials:
        return min(specials, key=suffix.index)
    return suffix.strip()


def next_turn_opener(tokenizer: Any) -> str | None:
    """What starts the user's next turn (e.g. "<|im_start|>user"): a model that writes it has
    stopped answering and started playing the user."""
    if not has_chat_template(tokenizer):
        return None
    two = [{"role": "user", "content": _USER}, {"role": "assistant", "content": _ANSWER}]
    before = _render(tokenizer, two)
    after = _render(tokenizer, [*two, {"role": "user", "content": _NEXT}])
    if before is None or after is None or _NEXT not in after:
        return None
    # Cut at the end of the answer, not of `before`: some templates end differently when the
    # answer is the last message (e.g. an extra EOS).
    start = after.rindex(_ANSWER) + len(_ANSWER)
    between = after[start : after.index(_NEXT, start)]
    eot = end_of_turn(tokenizer)
    if eot and eot in between:
        between = between[between.index(eot) + len(eot):]
    opener = between.strip()
    return opener or None


def end_of_turn_strings(tokenizer: Any) -> list[str]:
    """Strings that end an answer: the template's end-of-turn marker and the EOS token."""
    found = [end_of_turn(tokenizer), getattr(tokenizer, "eos_token", None)]
    return _unique(s for s in found if s)


def end_of_turn_token_ids(tokenizer: Any) -> list[int]:
    """Token ids to stop generation on (`generate(eos_token_id=...)`): end-of-turn and EOS."""
    ids: list[int] = []
    for text in end_of_turn_strings(tokenizer):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) == 1:
            ids.append(encoded[0])
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.append(eos)
    return _unique(ids)


def stop_markers(tokenizer: Any, extra: Sequence[str] = ()) -> list[str]:
    """Markers for the stop_markers cleaner and `stop_strings`: end of turn, next-turn opener.

    Falls back to the EOS token for a tokenizer without a chat template.
    """
    found = [*end_of_turn_strings(tokenizer), next_turn_opener(tokenizer), *extra]
    return _unique(s for s in found if s)


#: Where an HH-style answer ends: the next human turn.
HH_STOP_MARKER = "###Human"


def answer_stop_markers(tokenizer: Any) -> list[str]:
    """Where a model's answer ends when nothing more is known: the next HH-style human turn,
    and, for a chat model, its own end-of-turn markers (what `rlhfx chat` and `rlhfx eval`
    stop and cut at)."""
    markers = [HH_STOP_MARKER]
    if has_chat_template(tokenizer):
        markers += [m for m in stop_markers(tokenizer) if m not in markers]
    return markers


def _special_tokens(tokenizer: Any) -> list[str]:
    tokens = list(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        tokens += list(added())
    return _unique(tokens)


def _unique(items: Any) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
