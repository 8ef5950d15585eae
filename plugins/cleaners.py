"""Built-in response cleaners: cut at stop markers, strip stray characters, discard junk.

Order matters and is the recipe's: a typical chain is stop_markers -> strip -> discard.
The `discard` defaults carry LMFlow's HH-RLHF lesson: without a rule against `#`, half of the
responses filled with `#` and distinct-2 fell from 0.39 to 0.22.
"""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import Field, field_validator

from rlhfx import CleanResult, ComponentConfig, Regex, ResponseCleaner, hookimpl


class StopMarkersConfig(ComponentConfig):
    #: Cut the response at the first of these (a base model otherwise writes the next turn).
    markers: list[str] = Field(default_factory=lambda: ["###Human"], min_length=1)

    @field_validator("markers")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not m for m in value):
            raise ValueError("stop markers must not be empty strings")
        return value


class StopMarkers(ResponseCleaner[StopMarkersConfig]):
    """Cut a response at the first stop marker (default `###Human`)."""

    name = "stop_markers"

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile("|".join(re.escape(m) for m in self.config.markers))

    def clean(self, prompt: str, response: str) -> CleanResult:
        match = self._pattern.search(response)
        if match is None:
            return CleanResult(response)
        return CleanResult(response[: match.start()], changed=True)

    def stop_strings(self) -> list[str]:
        return list(self.config.markers)


class StripConfig(ComponentConfig):
    #: Characters removed from both ends besides whitespace.
    chars: str = "#"


class Strip(ResponseCleaner[StripConfig]):
    """Strip whitespace and stray characters (default `#`) from both ends of a response."""

    name = "strip"

    def clean(self, prompt: str, response: str) -> CleanResult:
        chars = self.config.chars + " \t\r\n"
        text = response.strip(chars)
        # Whitespace around an answer is normal; only removed characters count as a change,
        # so the change-rate metric tracks junk (stray `#`), not formatting.
        return CleanResult(text, changed=text != response.strip())


class DiscardConfig(ComponentConfig):
    #: Regexes; a response that matches any is discarded (never selected or trained on).
    #: Defaults: any `#` (LMFlow's HH rule) and runs of two or more `:)` / `;)` (what PPO
    #: learned to spam on HH-RLHF once `#` was ruled out).
    patterns: list[Regex] = Field(default_factory=lambda: ["#", r"(?:[:;]-?\)\s*){2,}"])
    #: Responses shorter than this many characters (after earlier cleaners) are discarded.
    min_chars: int = Field(default=2, ge=0)


class Discard(ResponseCleaner[DiscardConfig]):
    """Discard responses that match a pattern (default `#`) or are too short."""

    name = "discard"

    @cached_property
    def _patterns(self) -> list[re.Pattern[str]]:
        return [re.compile(p) for p in self.config.patterns]

    def clean(self, prompt: str, response: str) -> CleanResult:
        if len(response.strip()) < self.config.min_chars:
            reason = f"shorter than {self.config.min_chars} chars"
            return CleanResult(response, discard_reason=reason)
        for pattern in self._patterns:
            if pattern.search(response):
                return CleanResult(response, discard_reason=f"matches {pattern.pattern!r}")
        return CleanResult(response)


@hookimpl
def rlhfx_register_cleaners(register):
    register(StopMarkers)
    register(Strip)
    register(Discard)
