"""How an episode's turns become tokens: the opening prompt and each environment message.

The model's own turns are kept as the ids it sampled. What the environment says is rendered by
the policy's chat template exactly as a conversation would continue (the end of the model's
turn, the `tool` or `user` message, the start of the next assistant turn) and tokenised on its
own, so the sampled ids before it are never re-tokenised. A tokenizer without a chat template
gets the `###Human:` / `###Assistant:` layout of rlhfx's plain prompts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

#: Stands for the model's reply while the template is rendered (found again by search).
_REPLY = "\u2063REPLY\u2063"
_PLAIN_ROLE = {"user": "###Human:", "tool": "###Tool:"}


class TurnRenderer:
    """Renders an episode's opening prompt and environment messages for one tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        template = getattr(tokenizer, "chat_template", None)
        self.template: str | None = template if isinstance(template, str) and template else None

    def opening(self, prompt: str, tools: Sequence[Callable[..., Any]] = ()) -> str:
        """A plain question as the first user message, with the tools the template shows
        (a template that cannot show tools gets them in a system message)."""
        from rlhfx.tools import tool_schemas

        schemas = tool_schemas(tools) if tools else []
        if self.template is None:
            head = f"###System: {tool_instructions(schemas)}\n" if schemas else ""
            return f"{head}###Human: {prompt} ###Assistant:"
        messages = [{"role": "user", "content": prompt}]
        if schemas and "tools" not in self.template:
            messages.insert(0, {"role": "system", "content": tool_instructions(schemas)})
            schemas = []
        return str(self.tokenizer.apply_chat_template(
            messages, tools=schemas or None, tokenize=False, add_generation_prompt=True))

    def message_text(self, role: str, content: str, reply_ids: Sequence[int]) -> str:
        """The text between the model's last sampled token and its next turn."""
        if self.template is None:
            return f"\n{_PLAIN_ROLE.get(role, '###Human:')} {content} ###Assistant:"
        tail = self._tail(role, content)
        # The template closes the assistant turn (e.g. "<|im_end|>\n"); the part the model
        # already wrote (its end-of-turn token) is not written twice.
        written = self.tokenizer.decode(list(reply_ids[-8:]), skip_special_tokens=False)
        for k in range(min(len(written), len(tail)), 0, -1):
            if written.endswith(tail[:k]):
                return tail[k:]
        return tail

    def message_ids(self, role: str, content: str, reply_ids: Sequence[int]) -> list[int]:
        text = self.message_text(role, content, reply_ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _tail(self, role: str, content: str) -> str:
        conversation = [{"role": "user", "content": "?"},
                        {"role": "assistant", "content": _REPLY}]
        try:
            text = self.tokenizer.apply_chat_template(
                [*conversation, {"role": role, "content": content}], tokenize=False,
                add_generation_prompt=True)
        except Exception:  # a template without this role: the message comes as the user's
            if role == "user":
                raise
            return self._tail("user", content)
        text = str(text)
        return text[text.rindex(_REPLY) + len(_REPLY):]


def tool_instructions(schemas: Sequence[dict[str, Any]]) -> str:
    """Tool schemas and the call layout, for templates that do not show tools themselves."""
    listed = "\n".join(json.dumps(s) for s in schemas)
    return ("You may call these tools:\n" + listed + "\nTo call one, reply with "
            '<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> and nothing else; '
            "the result comes back in the next message.")
