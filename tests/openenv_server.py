"""A small OpenEnv server for the adapter's test: a countdown game served on 127.0.0.1 only.

    python openenv_server.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

from openenv.core.env_server import Action, Environment, Observation, State, create_app


class Say(Action):
    message: str


class Heard(Observation):
    text: str = ""


class Countdown(Environment):
    """Reset with `start` (default 3); each step must say the next number down."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self.next = 3
        self._state = State(step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None,
              **kwargs: Any) -> Heard:
        self.next = int(kwargs.get("start", 3))
        self._state = State(step_count=0, episode_id=episode_id)
        return Heard(text=f"count down from {self.next}")

    def step(self, action: Say, timeout_s: float | None = None, **kwargs: Any) -> Heard:
        self._state.step_count += 1
        right = action.message.strip() == str(self.next)
        self.next -= 1
        done = not right or self.next == 0
        return Heard(text="good" if right else f"wrong: {action.message.strip()}",
                     reward=1.0 if right else 0.0, done=done)

    @property
    def state(self) -> State:
        return self._state


app = create_app(Countdown, Say, Heard, env_name="countdown", max_concurrent_envs=8)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
