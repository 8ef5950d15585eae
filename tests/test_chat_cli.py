"""`rlhfx chat`: one-shot answers, the interactive loop, chat templates, streaming."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = "builtin:tiny-gpt-neo"
PROMPT = "###Human: How do I cook rice? ###Assistant:"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def templated_model(tmp_path_factory) -> Path:
    """The tiny model saved with a ChatML chat template."""
    from rlhfx.models import load_causal_lm, load_tokenizer

    out = tmp_path_factory.mktemp("templated")
    tokenizer = load_tokenizer(TINY)
    tokenizer.chat_template = CHATML
    load_causal_lm(TINY).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_one_shot_prints_the_greedy_answer(rlhfx_cli):
    from rlhfx.models import load_causal_lm, load_tokenizer
    from rlhfx.rollouts import SamplingSettings, generate

    result = rlhfx_cli("chat", TINY, "-p", PROMPT, "--temperature", "0",
                       "--max-new-tokens", "12", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (expected,) = generate(load_causal_lm(TINY), load_tokenizer(TINY), [PROMPT],
                           SamplingSettings(max_new_tokens=12, do_sample=False),
                           stop_strings=["###Human"])
    text = expected.text.split("###Human")[0]
    assert text.strip() and result.stdout == text + "\n"


def test_chat_template_and_history(templated_model):
    from rlhfx.plugins.chat.session import ChatSettings, load_session

    session = load_session(str(templated_model), ChatSettings(temperature=0, max_new_tokens=6,
                                                              system="Be brief."))
    assert session.uses_template
    assert session.prompt_for("Hi") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    pieces = list(session.stream("Hi"))
    answer = "".join(pieces)
    assert "<|im_end|>" not in answer and "<|im_start|>" not in answer
    assert session.messages == [{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": answer.strip()}]
    assert f"assistant\n{answer.strip()}<|im_end|>\n<|im_start|>user\nAnd?" in \
        session.prompt_for("And?")
    session.reset()
    assert session.messages == []


def test_interactive_loop_with_reset_and_quit(rlhfx_cli, templated_model):
    result = rlhfx_cli("chat", str(templated_model), "--temperature", "0",
                       "--max-new-tokens", "4", "--show-prompt",
                       input="Hello\n/reset\nBye\n/quit\nnever read\n")
    assert result.exit_code == 0, result.output
    assert "chatting with its chat template" in result.stdout
    assert result.stdout.count("model: ") == 2 and "new conversation" in result.stdout
    # After /reset the second prompt holds only the new turn.
    assert "prompt: '<|im_start|>user\\nBye<|im_end|>\\n<|im_start|>assistant\\n'" in \
        result.stderr


def test_a_model_that_cannot_load_is_a_one_line_error(rlhfx_cli, tmp_path):
    result = rlhfx_cli("chat", "./no/such/model", "-p", "hi")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_an_interrupted_answer_is_not_kept(templated_model):
    from rlhfx.plugins.chat.session import ChatSettings, load_session

    session = load_session(str(templated_model), ChatSettings(temperature=0,
                                                              max_new_tokens=200))
    pieces = session.stream("Hi")
    next(pieces)  # the first words are out; Ctrl-C now
    session.interrupt()
    assert session._worker is not None and not session._worker.is_alive()
    assert session.messages == []
    session.settings.max_new_tokens = 3
    assert isinstance(session.answer("Again"), str)  # the session still answers afterwards
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
