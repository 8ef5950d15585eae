"""The on-disk layouts of preference data, as `data_format` components.

Each format turns one record (a dict) into an `Example` or raises `BadRow`. `sniff` lets the
data stage pick a format from a file's first record when the recipe does not name one.
Third-party plugins can register more formats: a `rlhfx.PreferenceFormat` subclass with
`parse` (its record types are in `rlhfx.data.preference`).
"""

from __future__ import annotations

from typing import Any

from rlhfx import ComponentConfig
from rlhfx.data.preference import ASSISTANT, BadRow, Example, PreferenceFormat, Turn

from .dialogue import (
    HH_ASSISTANT,
    HH_HUMAN,
    check_dialogue,
    require_str,
    split_turns,
)


def _pair(chosen: list[Turn], rejected: list[Turn]) -> Example:
    chosen = check_dialogue(chosen, "chosen")
    rejected = check_dialogue(rejected, "rejected")
    if chosen == rejected:
        raise BadRow("identical_pair", "chosen and rejected are the same dialogue")
    return Example(chosen, rejected)


class AnthropicHH(PreferenceFormat):
    """Anthropic/hh-rlhf: whole dialogues in `chosen` and `rejected` ("\\n\\nHuman: ...")."""

    name = "anthropic_hh"

    def sniff(self, record: dict[str, Any]) -> bool:
        return "prompt" not in record and ("chosen" in record or "rejected" in record)

    def parse(self, record: dict[str, Any]) -> Example:
        chosen = require_str(record, "chosen")
        rejected = require_str(record, "rejected")
        if chosen == rejected:
            raise BadRow("identical_pair", "chosen and rejected are the same text")
        return _pair(
            split_turns(chosen, HH_HUMAN, HH_ASSISTANT),
            split_turns(rejected, HH_HUMAN, HH_ASSISTANT),
        )


class DahoasHH(PreferenceFormat):
    """Dahoas/full-hh-rlhf: `prompt` (dialogue ending in "Assistant:"), `chosen`, `rejected`.

    `response` (a copy of `chosen` in that dataset) is not needed and not required.
    """

    name = "dahoas_hh"

    def sniff(self, record: dict[str, Any]) -> bool:
        return all(k in record for k in ("prompt", "chosen", "rejected"))

    def parse(self, record: dict[str, Any]) -> Example:
        prompt = require_str(record, "prompt")
        chosen = require_str(record, "chosen").strip()
        rejected = require_str(record, "rejected").strip()
        turns = split_turns(prompt, HH_HUMAN, HH_ASSISTANT)
        if turns and turns[-1].role == ASSISTANT and not turns[-1].text:
            turns = turns[:-1]  # the prompt's trailing "Assistant:" is where the answer goes
        if not chosen or not rejected:
            which = "chosen" if not chosen else "rejected"
            raise BadRow("empty_response", f"'{which}' is empty")
        if chosen == rejected:
            raise BadRow("identical_pair", "chosen and rejected are the same text")
        return _pair([*turns, Turn(ASSISTANT, chosen)], [*turns, Turn(ASSISTANT, rejected)])


class MarkerConfig(ComponentConfig):
    #: The markers the texts use (LMFlow's HH example writes `###Human:` / `###Assistant:`).
    human_marker: str = "###Human:"
    assistant_marker: str = "###Assistant:"


class LMFlowPairs(PreferenceFormat[MarkerConfig]):
    """LMFlow's reward-model layout: instances with `positive` and `negative` dialogues."""

    name = "lmflow_pairs"

    def sniff(self, record: dict[str, Any]) -> bool:
        return "positive" in record and "negative" in record

    def parse(self, record: dict[str, Any]) -> Example:
        c = self.config
        pos = require_str(record, "positive")
        neg = require_str(record, "negative")
        if pos == neg:
            raise BadRow("identical_pair", "positive and negative are the same text")
        return _pair(
            split_turns(pos, c.human_marker, c.assistant_marker),
            split_turns(neg, c.human_marker, c.assistant_marker),
        )


class LMFlowText(PreferenceFormat[MarkerConfig]):
    """LMFlow's `text_only` layout: instances with one `text` dialogue (no rejected side)."""

    name = "lmflow_text"

    def sniff(self, record: dict[str, Any]) -> bool:
        return set(record) == {"text"}

    def parse(self, record: dict[str, Any]) -> Example:
        c = self.config
        text = require_str(record, "text")
        turns = split_turns(text, c.human_marker, c.assistant_marker)
        return Example(check_dialogue(turns, "text"))


#: Tried in this order when a recipe leaves `format` unset.
BUILTIN_FORMATS: tuple[type[PreferenceFormat], ...] = (
    DahoasHH, AnthropicHH, LMFlowPairs, LMFlowText,
)
