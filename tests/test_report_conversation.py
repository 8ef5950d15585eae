"""The report shows prompts as conversations: turns with their roles, template markup hidden."""

from __future__ import annotations

from rlhfx.plugins.report.render import conversation_html, conversation_turns


def test_chatml_with_system_and_generation_prompt():
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\nHow do I boil an egg?<|im_end|>\n<|im_start|>assistant\n")
    assert conversation_turns(prompt) == [
        ("system", "You are a helpful assistant."), ("user", "How do I boil an egg?"),
    ]
    html = conversation_html(prompt)
    assert "im_start" not in html and "im_end" not in html
    assert '<div class="turn role-system"><span class="role">system:</span> You are a' in html


def test_hh_layouts_with_several_turns():
    lmflow = "###Human: Hi ###Assistant: Hello! ###Human: A joke? ###Assistant:"
    anthropic = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant:"
    expected = [("user", "Hi"), ("assistant", "Hello!"), ("user", "A joke?")]
    assert conversation_turns(lmflow) == expected
    assert conversation_turns(anthropic) == expected


def test_llama3_headers():
    prompt = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert conversation_turns(prompt) == [("user", "Why?")]


def test_plain_text_stays_as_it_is_and_everything_is_escaped():
    assert conversation_turns("Tell me about Humans: they are") == [
        ("", "Tell me about Humans: they are")
    ]
    assert conversation_html("a <b> & c") == "a &lt;b&gt; &amp; c"
    html = conversation_html("###Human: <script>x</script> ###Assistant: ok")
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert html.count('class="turn') == 2  # a non-empty last assistant turn is kept


def test_text_before_the_first_turn_is_kept():
    assert conversation_turns("Context here.\n\nHuman: Q?\n\nAssistant:") == [
        ("", "Context here."), ("user", "Q?"),
    ]


def test_an_episode_shows_turn_by_turn_with_tool_status_and_rewards_escaped():
    from rlhfx.plugins.report.render import episode_html

    html = episode_html([
        {"role": "assistant", "text": "<tool_call>{\"a\": 1}</tool_call>"},
        {"role": "tool", "text": "error: <b>", "reward": 0.0, "tool": "error"},
        {"role": "assistant", "text": "42"},
        {"role": "user", "text": "right", "reward": 1.0},
    ], end="done")
    assert html.count('class="turn role-assistant"') == 2
    assert '<div class="turn role-tool"><span class="role">tool:</span> error: &lt;b&gt;' in html
    assert "(tool: error)" in html and "(reward 1)" in html
    assert "<b>" not in html and "&lt;tool_call&gt;" in html
    assert html.endswith('<div class="turn meta">episode ended: done</div>')
