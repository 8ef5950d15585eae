"""`openenv`: any OpenEnv environment server as an rlhfx environment.

Each episode opens its own session on the server (OpenEnv keeps one environment per
WebSocket session), resets it with the episode's seed and the prompt row's fields the recipe
names, and sends each model reply as one action: `{action_field: reply}`. The server's
observation (one field of it, or all of it as JSON), reward and done come back as the turn's
answer. The server must allow as many concurrent sessions as a process plays episodes at
once (prompts x k). Needs `pip install 'rlhfx[openenv]'`.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from rlhfx.components import Environment, EnvironmentConfig, EnvStep
from rlhfx.errors import UserError

HINT = "pip install 'rlhfx[openenv]'"


class OpenEnvConfig(EnvironmentConfig):
    #: The server, e.g. "http://127.0.0.1:8000".
    url: str
    #: The action's field that carries the model's reply.
    action_field: str = "message"
    #: The observation's field shown to the model; unset: the whole observation as JSON.
    observation_field: str | None = None
    #: Fields of the prompt row passed to the server's reset as keyword arguments.
    reset_fields: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"'{url}' is not an http(s) address")
        if importlib.util.find_spec("openenv") is None:
            raise ValueError(f"the openenv environment needs OpenEnv: {HINT}")
        return url


class OpenEnv(Environment[OpenEnvConfig]):
    """An OpenEnv environment server: reset and step over its session protocol."""

    name = "openenv"

    def reset(self, prompt: str, fields: Mapping[str, Any], seed: int) -> dict[str, Any]:
        from openenv.core import GenericEnvClient

        c = self.config
        client = GenericEnvClient(base_url=c.url).sync()
        try:
            client.connect()
        except Exception as exc:
            raise UserError(f"openenv: cannot reach the server at {c.url}: "
                            f"{type(exc).__name__}: {exc}") from None
        options = {k: fields[k] for k in c.reset_fields if k in fields}
        result = client.reset(seed=seed % 2**31, **options)
        return {"client": client, "opening": self._text(result.observation)}

    def step(self, state: dict[str, Any], reply: str) -> EnvStep:
        result = state["client"].step({self.config.action_field: reply})
        done = bool(result.done)
        if done:
            self._close(state)
        return EnvStep(self._text(result.observation), reward=float(result.reward or 0.0),
                       done=done)

    def final_reward(self, state: dict[str, Any]) -> float | None:
        self._close(state)  # an episode cut by a limit still frees its session
        return None

    def _text(self, observation: Any) -> str:
        field = self.config.observation_field
        if field is not None and isinstance(observation, dict) and field in observation:
            return str(observation[field])
        if isinstance(observation, dict):
            observation = {k: v for k, v in observation.items() if k != "metadata"}
        return json.dumps(observation, default=str)

    @staticmethod
    def _close(state: dict[str, Any]) -> None:
        client = state.pop("client", None)
        if client is not None:
            client.close()
