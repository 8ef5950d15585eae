"""rlhfx-myreward: a reward source that pays for mentioning chosen keywords.

Everything a plugin needs comes from `rlhfx`'s public names; nothing heavy is imported at
module level, because rlhfx imports every plugin each time its command line starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field, field_validator

from rlhfx import ComponentConfig, RewardSource, hookimpl

__version__ = "0.1.0"


class KeywordsConfig(ComponentConfig):
    #: Words (or phrases) to reward; each counts once per response, however often it occurs.
    keywords: list[str] = Field(min_length=1)
    #: Reward per keyword found.
    bonus: float = 1.0
    case_sensitive: bool = False

    @field_validator("keywords")
    @classmethod
    def _no_blank(cls, value: list[str]) -> list[str]:
        if any(not k.strip() for k in value):
            raise ValueError("keywords must not be blank")
        return value


class Keywords(RewardSource[KeywordsConfig]):
    """Reward a response by the number of distinct keywords it mentions (whole words)."""

    name = "keywords"

    def __init__(self, config: KeywordsConfig | None = None):
        super().__init__(config)
        flags = 0 if self.config.case_sensitive else re.IGNORECASE
        self._patterns = [
            re.compile(rf"\b{re.escape(k.strip())}\b", flags) for k in self.config.keywords
        ]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [
            self.config.bonus * sum(1 for p in self._patterns if p.search(text))
            for text in responses
        ]


@hookimpl
def rlhfx_register_reward_sources(register):
    register(Keywords)
