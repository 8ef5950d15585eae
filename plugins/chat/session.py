"""A conversation with one model: the prompt it sees each turn, and streamed generation.

With a chat template the conversation goes through it (`rlhfx.chat`) and generation stops at
the template's end-of-turn token; without one the model continues the plain transcript, and
the answer is cut at the first stop marker (what the default cleaner would cut).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    system: str | None = None
    device: str = "cpu"


@dataclass
class ChatSession:
    model: Any
    tokenizer: Any
    settings: ChatSettings
    messages: list[dict[str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _worker: threading.Thread | None = field(default=None, repr=False)

    @property
    def uses_template(self) -> bool:
        from rlhfx.chat import has_chat_template

        return has_chat_template(self.tokenizer)

    def reset(self) -> None:
        self.messages.clear()

    def prompt_for(self, text: str) -> str:
        """The exact text the model continues when the user says `text` next."""
        from rlhfx.chat import chat_prompt

        messages = [*self.messages, {"role": "user", "content": text}]
        if self.uses_template:
            return chat_prompt(self.tokenizer, messages, self.settings.system)
        parts = [self.settings.system or ""] + [m["content"] for m in messages]
        return "".join(p for p in parts if p)

    def stop_markers(self) -> list[str]:
        from rlhfx.chat import answer_stop_markers

        return answer_stop_markers(self.tokenizer)

    def stream(self, text: str) -> Iterator[str]:
        """Yield the answer to `text` piece by piece; the turn is kept in the history."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from rlhfx.chat import end_of_turn_token_ids
        from rlhfx.rollouts import encode_prompts

        prompt = self.prompt_for(text)
        ids = torch.tensor([encode_prompts(self.tokenizer, [prompt])[0]],
                           device=self.settings.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True)
        s = self.settings
        kwargs: dict[str, Any] = dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
            max_new_tokens=s.max_new_tokens, do_sample=s.temperature > 0,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            eos_token_id=end_of_turn_token_ids(self.tokenizer) or self.tokenizer.eos_token_id,
            stop_strings=self.stop_markers(), tokenizer=self.tokenizer,
        )
        if s.temperature > 0:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        stop = self._stop
        stop.clear()

        class Interrupted(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        kwargs["stopping_criteria"] = StoppingCriteriaList([Interrupted()])
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        self._worker = worker
        worker.start()
        answer = ""
        shown = 0
        markers = self.stop_markers()
        for piece in streamer:
            answer += piece
            cut = _cut(answer, markers)
            # Hold back a tail that could still become a marker, so none is ever printed.
            safe = len(cut) if cut != answer else max(shown, len(answer) - _longest(markers))
            if safe > shown:
                yield answer[shown:safe]
                shown = safe
            if cut != answer:
                break
        worker.join()
        if errors:
            raise errors[0]
        final = _cut(answer, markers)
        if len(final) > shown:
            yield final[shown:]
        self.messages += [{"role": "user", "content": text},
                          {"role": "assistant", "content": final.strip()
                           if self.uses_template else final}]

    def interrupt(self) -> None:
        """Stop the answer being generated (Ctrl-C); the turn is not kept."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join()

    def answer(self, text: str, on_piece: Callable[[str], None] | None = None) -> str:
        out = ""
        for piece in self.stream(text):
            out += piece
            if on_piece is not None:
                on_piece(piece)
        return out


def _cut(text: str, markers: list[str]) -> str:
    positions = [text.find(m) for m in markers if m in text]
    return text[: min(positions)] if positions else text


def _longest(markers: list[str]) -> int:
    return max((len(m) for m in markers), default=0)


def load_session(source: str, settings: ChatSettings) -> ChatSession:
    from rlhfx.loading import loading
    from rlhfx.models import load_causal_lm, load_tokenizer

    with loading(source):
        tokenizer = load_tokenizer(source)
        model = load_causal_lm(source, device=settings.device)
    model.eval()
    return ChatSession(model, tokenizer, settings)
