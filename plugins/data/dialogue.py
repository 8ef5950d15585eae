"""Dialogues as turns: parsing marker-delimited text and rendering it for a policy.

HH-RLHF stores a dialogue as one string, `"\\n\\nHuman: ...\\n\\nAssistant: ..."`; LMFlow's
HH example rewrites it as `"###Human: ... ###Assistant: ..."` so a base model learns where an
answer starts. Both are the same structure (alternating turns), so one parser takes the two
markers as parameters and one renderer writes whichever markers (or chat template) the
recipe asks for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlhfx.data.preference import ASSISTANT, HUMAN, BadRow, Turn

#: The markers of Anthropic's hh-rlhf files (the first one also matches at the very start).
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def split_turns(text: str, human: str, assistant: str) -> list[Turn]:
    """Split marker-delimited text into turns.

    A human marker without its leading newlines is accepted at the very start (HH files begin
    with `\\n\\nHuman:`, but hand-made files often drop the newlines). Text before the first
    marker is an error, so that a row in a foreign layout is not silently mangled.
    """
    bare = _bare_variants(human, assistant)
    pattern = re.compile("(" + "|".join(re.escape(m) for m in [human, assistant, *bare]) + ")")
    parts = pattern.split(text)
    head = parts[0]
    if head.strip():
        raise BadRow("no_human_turn", f"text before the first '{human.strip()}' marker")
    turns: list[Turn] = []
    for i in range(1, len(parts), 2):
        marker, body = parts[i], parts[i + 1]
        role = HUMAN if marker.strip() == human.strip() else ASSISTANT
        if i > 1 and marker in bare:
            # A bare marker in the middle of a turn is ordinary text, not a new turn.
            turns[-1] = Turn(turns[-1].role, turns[-1].text + marker + body)
            continue
        turns.append(Turn(role, body))
    return [Turn(t.role, t.text.strip()) for t in turns]


def prompt_turns(text: str, markers: Sequence[tuple[str, str]]) -> list[Turn]:
    """The turns of a prompt row: a dialogue in the first of `markers` (human, assistant) that
    it uses, ending in a human turn (a trailing empty assistant marker is where the answer
    goes), or a plain question with no markers, which is one human turn."""
    for human, assistant in markers:
        if human.strip() in text:
            turns = split_turns(text, human, assistant)
            break
    else:
        turns = [Turn(HUMAN, text.strip())]
    if turns and turns[-1].role == ASSISTANT and not turns[-1].text:
        turns = turns[:-1]
    if not turns or turns[-1].role != HUMAN:
        raise BadRow("no_human_turn", "the prompt does not end with a human turn")
    # Checked as a dialogue with a stand-in answer: the same rules as every other row.
    return check_dialogue([*turns, Turn(ASSISTANT, "-")], "prompt")[:-1]


def _bare_variants(human: str, assistant: str) -> list[str]:
    """Markers without their surrounding whitespace, where that differs from the marker."""
    return [m.strip() for m in (human, assistant) if m.strip() != m]


def check_dialogue(turns: Sequence[Turn], what: str) -> list[Turn]:
    """Validate turns for use as a dialogue ending in an answer; merges repeated roles."""
    merged: list[Turn] = []
    for t in turns:
        if merged and merged[-1].role == t.role:
            merged[-1] = Turn(t.role, (merged[-1].text + "\n\n" + t.text).strip())
        else:
            merged.append(t)
    if not any(t.role == ASSISTANT for t in merged):
        raise BadRow("no_assistant_turn", f"{what} has no assistant turn")
    if merged[-1].role != ASSISTANT:
        raise BadRow("no_assistant_turn", f"{what} ends with a human turn, not an answer")
    if not merged[-1].text:
        raise BadRow("empty_response", f"{what} has an empty last answer")
    if not any(t.role == HUMAN and t.text for t in merged[:-1]):
        raise BadRow("no_human_turn", f"{what} has no human turn before its answer")
    return merged


def require_str(record: dict[str, Any], key: str) -> str:
    if key not in record:
        raise BadRow("missing_field", f"no '{key}' field (fields: {', '.join(record) or 'none'})")
    value = record[key]
    if not isinstance(value, str):
        raise BadRow("wrong_type", f"'{key}' is {type(value).__name__}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRow("bad_utf8", f"'{key}' holds characters that are not valid UTF-8") from None
    return value


# ------------------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class MarkerStyle:
    """`###Human: q ###Assistant: a`: the markers and what goes between turns."""

    human: str = "###Human:"
    assistant: str = "###Assistant:"
    separator: str = " "

    def turn(self, t: Turn) -> str:
        marker = self.human if t.role == HUMAN else self.assistant
        return f"{marker} {t.text}" if t.text else marker

    def prompt(self, turns: Sequence[Turn]) -> str:
        """The context followed by a bare assistant marker: where the model starts answering."""
        return self.separator.join([*(self.turn(t) for t in turns), self.assistant])

    def dialogue(self, turns: Sequence[Turn]) -> str:
        return self.separator.join(self.turn(t) for t in turns)

    def scored(self, turns: Sequence[Turn]) -> str:
        return scored_text(self, turns)


class ChatTemplateStyle:
    """Renders with a tokenizer's chat template (for chat models) instead of markers."""

    def __init__(self, tokenizer: Any, system: str | None = None):
        if not getattr(tokenizer, "chat_template", None):
            from rlhfx import UserError

            raise UserError(
                f"template = 'chat' but the tokenizer '{tokenizer.name_or_path}' has no chat "
                "template; use template = 'markers'"
            )
        self.tokenizer = tokenizer
        self.system = system

    def _messages(self, turns: Sequence[Turn]) -> list[dict[str, str]]:
        opening = [{"role": "system", "content": self.system}] if self.system else []
        return opening + [{"role": "user" if t.role == HUMAN else "assistant",
                           "content": t.text} for t in turns]

    def prompt(self, turns: Sequence[Turn]) -> str:
        return self.tokenizer.apply_chat_template(
            self._messages(turns), tokenize=False, add_generation_prompt=True
        )

    def dialogue(self, turns: Sequence[Turn]) -> str:
        return self.tokenizer.apply_chat_template(self._messages(turns), tokenize=False)

    def scored(self, turns: Sequence[Turn]) -> str:
        return scored_text(self, turns)


def scored_text(style: Any, turns: Sequence[Turn]) -> str:
    """A dialogue as a reward source reads it in alignment: the rendered prompt, then the last
    answer joined as the `reward_model` source joins prompt and response.

    For markers this is the dialogue itself; for a chat template it differs from the full
    rendering, which closes the answer with the end-of-turn marker (`<|im_end|>`) that the
    stop-marker cleaner cuts from every response. A reward model trained on these texts
    scores the layout it was trained on.
    """
    from rlhfx.plugins.rewards.reward_model import join_prompt_response

    return join_prompt_response(style.prompt(turns[:-1]), turns[-1].text)
