"""Verifiable rewards: `answer_match` scores a response by the answer it ends on.

For tasks with one right answer (arithmetic, unit conversions, short facts) the reward needs
no model: pull the answer out of the response with a pattern and compare it with the reference
answer that the prompt file carries beside each prompt (`{"prompt": ..., "answer": "42"}`).
Extra fields of a prompt file reach a reward source as keyword arguments, one list per field
aligned with `responses`, for sources whose `score` accepts them (this one takes `**fields`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from rlhfx import ComponentConfig, Regex, RewardSource, UserError, hookimpl

#: A number as people write it: optional sign, thousands commas, decimals ("-1,250.5", ".5").
NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"


class AnswerMatchConfig(ComponentConfig):
    #: Where the answer is in the response: a regex with one group (the answer), or unset for
    #: a number. Of several matches the last one counts (see `which`).
    pattern: Regex | None = None
    #: Take the `last` match (answers usually come at the end) or the `first`.
    which: Literal["last", "first"] = "last"
    #: The prompt-file field with the reference answer.
    answer_field: str = "answer"
    #: `numeric`: both sides read as numbers, equal within `tolerance`; `exact`: the same text
    #: (surrounding whitespace ignored; case too unless `case_sensitive`).
    mode: Literal["exact", "numeric"] = "numeric"
    #: Largest absolute difference still counted right in `numeric` mode.
    tolerance: float = Field(default=1e-6, ge=0)
    case_sensitive: bool = False
    #: Rewards for a right answer, a wrong one, and a response with no answer in it.
    correct: float = 1.0
    wrong: float = 0.0
    unparsable: float = 0.0

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        groups = re.compile(value).groups  # a Regex: it compiles
        if groups != 1:
            raise ValueError(f"pattern {value!r} needs exactly one group (the answer), "
                             f"it has {groups}")
        return value


def to_number(text: str) -> float | None:
    """`text` as a number ("1,250" -> 1250.0), or None."""
    try:
        return float(text.strip().replace(",", ""))
    except ValueError:
        return None


class AnswerMatch(RewardSource[AnswerMatchConfig]):
    """Reward for the right answer: extracted with a pattern, compared with the prompt's own
    reference answer (exact text or numbers within a tolerance)."""

    name = "answer_match"

    def __init__(self, config: AnswerMatchConfig | None = None):
        super().__init__(config)
        pattern = self.config.pattern
        self._pattern = re.compile(pattern if pattern is not None else f"({NUMBER})")

    def extract(self, response: str) -> str | None:
        """The answer in `response`, or None when the pattern finds none."""
        matches = [m for m in self._pattern.findall(response) if m.strip()]
        if not matches:
            return None
        return matches[-1] if self.config.which == "last" else matches[0]

    def is_correct(self, answer: str, reference: Any, row: int) -> bool:
        c = self.config
        if c.mode == "numeric":
            number = to_number(str(reference))
            if number is None:
                raise UserError(f"answer_match: the reference {c.answer_field} {reference!r} "
                                f"(prompt {row + 1} of the batch) is not a number; "
                                "use mode = 'exact' for text answers")
            value = to_number(answer)
            return value is not None and math.isclose(value, number, rel_tol=0.0,
                                                      abs_tol=c.tolerance)
        got, expected = answer.strip(), str(reference).strip()
        if not c.case_sensitive:
            got, expected = got.casefold(), expected.casefold()
        return got == expected

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], **fields: Sequence[Any]
    ) -> list[float]:
        c = self.config
        references = fields.get(c.answer_field)
        if references is None:
            raise UserError(
                f"answer_match: the prompts carry no '{c.answer_field}' field; add it to the "
                "prompt file or set answer_field"
            )
        if len(references) != len(responses):
            raise ValueError(f"answer_match: {len(references)} {c.answer_field} values for "
                             f"{len(responses)} responses")
        out = []
        for row, (response, reference) in enumerate(zip(responses, references, strict=True)):
            if reference is None:
                raise UserError(f"answer_match: prompt {row + 1} of the batch has no "
                                f"'{c.answer_field}' value in the prompt file")
            answer = self.extract(response)
            if answer is None:
                out.append(c.unparsable)
            else:
                out.append(c.correct if self.is_correct(answer, reference, row) else c.wrong)
        return out


@hookimpl
def rlhfx_register_reward_sources(register):
    register(AnswerMatch)
