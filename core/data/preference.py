"""What a preference data format reads records into, and the base such a format subclasses.

The data stage reads every source through a `PreferenceFormat`: one record (a dict) becomes an
`Example` (a chosen dialogue and, for preference data, a rejected one), or raises `BadRow`,
which the stage counts or reports with the file and line. A third-party format imports these
from here (`PreferenceFormat` is also `rlhfx.PreferenceFormat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhfx.components import ConfigT, DataFormat

HUMAN, ASSISTANT = "human", "assistant"


class BadRow(Exception):
    """A row that cannot be used; `reason` is the short key it is counted under."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Turn:
    role: str  # HUMAN or ASSISTANT
    text: str


@dataclass
class Example:
    """One usable row: a chosen dialogue and (for preference data) a rejected one.

    Both end in an assistant turn; the prompt is the chosen dialogue without its last turn.
    """

    chosen: list[Turn]
    rejected: list[Turn] | None = None

    @property
    def prompt(self) -> list[Turn]:
        return self.chosen[:-1]


class PreferenceFormat(DataFormat[ConfigT]):
    """A data format the data stage can read: `parse` one record into an `Example`."""

    def parse(self, record: dict[str, Any]) -> Example:
        raise NotImplementedError
