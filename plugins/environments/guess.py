"""`guess_number`: a game over several turns. The environment picks a secret from an ordered
list (the numbers low..high by default); the model guesses, and hears "higher" or "lower"
until it finds the secret or runs out of turns.

The list may be words (`choices = [...]`, "higher" meaning later in the list): the tests'
tiny model cannot write digits, but it can write words its tokenizer knows.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from rlhfx.components import Environment, EnvironmentConfig, EnvStep
from rlhfx.errors import UserError


class GuessConfig(EnvironmentConfig):
    #: The secret is drawn from low..high (both included) unless `choices` is given.
    low: int = 1
    high: int = 20
    #: An ordered list to guess from instead of numbers ("higher": later in the list).
    choices: list[str] | None = Field(default=None, min_length=2)
    #: Reward for finding the secret, and for each turn that names an item of the list.
    solved_reward: float = 1.0
    valid_guess_reward: float = 0.0

    @model_validator(mode="after")
    def _range(self) -> GuessConfig:
        if self.choices is None and self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        return self


@dataclass
class GuessState:
    secret: int  # index into the game's list
    guesses: list[int] = field(default_factory=list)
    solved: bool = False


class GuessNumber(Environment[GuessConfig]):
    """Guess the secret number (or word) with "higher"/"lower" answers."""

    name = "guess_number"

    def __init__(self, config: GuessConfig | None = None):
        super().__init__(config)
        c = self.config
        self.items = ([str(x) for x in c.choices] if c.choices is not None
                      else [str(n) for n in range(c.low, c.high + 1)])
        words = sorted(self.items, key=len, reverse=True)  # "12" before "1"
        self._guess = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, words)) + r")(?!\w)",
                                 re.I)
        self._index = {item.lower(): i for i, item in enumerate(self.items)}

    def reset(self, prompt: str, fields: Mapping[str, Any], seed: int) -> GuessState:
        secret = fields.get("secret")
        if secret is not None:
            if str(secret).lower() not in self._index:
                raise UserError(f"guess_number: the prompt row's secret {secret!r} is not one "
                                f"of the game's items ({self.items[0]}..{self.items[-1]})")
            return GuessState(self._index[str(secret).lower()])
        return GuessState(random.Random(seed).randrange(len(self.items)))

    def step(self, state: GuessState, reply: str) -> EnvStep:
        match = self._guess.search(reply)
        if match is None:
            return EnvStep("Guess one.")
        guess = self._index[match.group(1).lower()]
        state.guesses.append(guess)
        bonus = self.config.valid_guess_reward
        if guess == state.secret:
            state.solved = True
            return EnvStep("Right!", reward=bonus + self.config.solved_reward, done=True)
        return EnvStep("higher" if state.secret > guess else "lower", reward=bonus)
