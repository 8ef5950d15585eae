"""Episodes: turns, limits, tool faults, plugin faults, the chat-template rendering of the
environment's messages, and that environment tokens never get a gradient in the real update."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fixtures.tiny import train_tokenizer

from rlhfx import Environment, EnvironmentConfig, EnvStep
from rlhfx.components import RolloutEngine
from rlhfx.episode_text import TurnRenderer
from rlhfx.episodes import DONE, MAX_TOKENS, MAX_TURNS, episode_metrics, run_episodes
from rlhfx.faults import PluginFault
from rlhfx.plugins.environments.calculator import CalculatorEnvironment
from rlhfx.plugins.environments.guess import GuessConfig, GuessNumber, GuessState
from rlhfx.rollouts import Rollout
from rlhfx.tiny import tiny_tokenizer
from rlhfx.tools import format_tool_call

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer("builtin:tiny-gpt-neo")


@pytest.fixture(scope="module")
def any_text():
    """A byte-level tokenizer: tool calls (braces, quotes, digits) decode as written."""
    return train_tokenizer(['<tool_call>{"name": "calculator", "arguments": {}}</tool_call>',
                            "1234 * 5 = 6170"], vocab_size=300)


class Scripted(RolloutEngine):
    """Answers every turn with the next reply of its script (the same for each episode), and
    records the token ids it was given."""

    def __init__(self, tokenizer, replies, eos=True):
        self.tokenizer, self.replies, self.eos = tokenizer, list(replies), eos
        self.turn = 0
        self.seen: list[list[list[int]]] = []

    def generate(self, prompts, sampling, num_samples=1, stop_strings=(), rng=None,
                 progress=None, description="", prompt_ids=None):
        text = self.replies[min(self.turn, len(self.replies) - 1)]
        self.turn += 1
        self.seen.append([list(p) for p in prompt_ids])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.eos:
            ids = [*ids, self.tokenizer.eos_token_id]
        rows = range(len(prompts) * num_samples)
        return [Rollout(i // num_samples, prompts[i // num_samples],
                        list(prompt_ids[i // num_samples]), list(ids), text) for i in rows]


def episodes(tokenizer, env, replies, prompts=("###Human: go ###Assistant:",), k=1, eos=True,
             fields=None):
    from rlhfx.rollouts import SamplingSettings

    engine = Scripted(tokenizer, replies, eos)
    out = run_episodes(engine, tokenizer, env, list(prompts),
                       fields or [{} for _ in prompts], SamplingSettings(max_new_tokens=32),
                       num_samples=k, where="recipe.toml: stages.align.environment")
    return out, engine


def game(**options):
    return GuessNumber(GuessConfig(choices=["bike", "book", "cook", "desk"], **options))


def test_a_game_is_played_turn_by_turn_and_the_tokens_follow_the_turns(tokenizer):
    env = game(max_turns=5, valid_guess_reward=0.1)
    (episode,), engine = episodes(tokenizer, env, ["bike", "cook", "book"],
                                  fields=[{"secret": "book"}])
    assert [t["text"] for t in episode.turns] == ["bike", "higher", "cook", "lower", "book",
                                                  "Right!"]
    assert episode.end == DONE and episode.model_turns == 3
    assert episode.env_reward == pytest.approx(0.1 * 3 + 1.0)
    # the model's tokens as sampled, the game's messages rendered between them
    eos = tokenizer.eos_token_id
    reply = {w: [*tokenizer(w, add_special_tokens=False)["input_ids"], eos]
             for w in ("bike", "cook", "book")}
    message = {w: tokenizer(f"\n###Human: {w} ###Assistant:",
                            add_special_tokens=False)["input_ids"] for w in ("higher", "lower")}
    expected = (reply["bike"] + message["higher"] + reply["cook"] + message["lower"]
                + reply["book"])
    assert episode.response_ids == expected
    mask = ([1] * len(reply["bike"]) + [0] * len(message["higher"]) + [1] * len(reply["cook"])
            + [0] * len(message["lower"]) + [1] * len(reply["book"]))
    assert episode.action_mask == mask
    # each turn generated from the episode's ids so far (never re-tokenised text)
    assert engine.seen[1] == [episode.prompt_ids + reply["bike"] + message["higher"]]


def test_turn_limit_ends_an_episode(tokenizer):
    (episode,), engine = episodes(tokenizer, game(max_turns=2), ["trip", "trip", "trip"],
                                  fields=[{"secret": "bike"}])
    assert episode.end == MAX_TURNS and episode.model_turns == 2 and engine.turn == 2
    assert episode.action_mask[-1] == 1  # it ends on the model's turn: no message after it


def test_token_limit_cuts_the_turn_and_ends_the_episode(tokenizer):
    long = "bike " * 20
    (episode,), _ = episodes(tokenizer, game(max_turns=4, max_episode_tokens=12), [long],
                             fields=[{"secret": "desk"}])
    assert episode.end == MAX_TOKENS and len(episode.response_ids) == 12
    assert episode.model_turns == 1 and not episode.finished
    # room for a reply, but not for the message after it
    (short,), _ = episodes(tokenizer, game(max_turns=4, max_episode_tokens=8), ["bike"],
                           fields=[{"secret": "desk"}])
    assert short.end == MAX_TOKENS and set(short.action_mask) == {1}


def test_seeds_fix_the_secret_and_differ_between_samples(tokenizer):
    env = game(max_turns=1)
    first, _ = episodes(tokenizer, env, ["x"], k=6)
    again, _ = episodes(tokenizer, env, ["x"], k=6)
    assert [e.state.secret for e in first] == [e.state.secret for e in again]
    assert len({e.state.secret for e in first}) > 1


def test_calculator_episode_calls_the_tool_then_answers(any_text):
    env = CalculatorEnvironment(EnvironmentConfig(max_turns=3, max_episode_tokens=2000))
    call = format_tool_call("calculator", {"expression": "1234 * 5"})
    (episode,), _ = episodes(any_text, env, [call, "6170"])
    # the final answer ends the episode; the empty ending is not shown as a turn
    assert [t["role"] for t in episode.turns] == ["assistant", "tool", "assistant"]
    assert episode.turns[1]["text"] == "6170" and episode.turns[1]["tool"] == "ok"
    assert episode.end == DONE and episode.tools["calls"] == 1


def test_tool_faults_are_messages_and_counted(any_text):
    env = CalculatorEnvironment(EnvironmentConfig(max_turns=4, max_episode_tokens=2000))
    replies = [format_tool_call("calculator", {"expression": "9**9**9"}),
               "<tool_call>{not json}</tool_call>",
               format_tool_call("search", {"q": "x"}), "done"]
    (episode,), _ = episodes(any_text, env, replies)
    tool_turns = [t for t in episode.turns if t["role"] == "tool"]
    assert [t["tool"] for t in tool_turns] == ["error", "malformed", "unknown"]
    assert all(t["text"].startswith("error:") for t in tool_turns)
    metrics = episode_metrics([{"episode_model_turns": 4, "episode_env_reward": 0.0,
                                "episode_end": episode.end, "episode_tools": episode.tools}])
    assert metrics["tool_calls"] == 3 and metrics["tool_errors"] == 3


def slow_tool(seconds: float) -> str:
    """Sleeps.

    Args:
        seconds: how long
    """
    time.sleep(seconds)
    return "late"


class SlowTools(Environment):
    name = "slow_tools"
    Config = EnvironmentConfig

    def tools(self):
        return [slow_tool]

    def step(self, state, reply):
        return EnvStep(done=True)


def test_a_tool_past_its_time_limit_is_an_error_message(any_text):
    env = SlowTools(EnvironmentConfig(max_turns=2, tool_timeout=0.2))
    started = time.perf_counter()
    (episode,), _ = episodes(any_text, env,
                             [format_tool_call("slow_tool", {"seconds": 3}), "ok"])
    assert time.perf_counter() - started < 2.5
    assert episode.turns[1]["tool"] == "timeout" and episode.tools["timeout"] == 1


class Broken(Environment):
    name = "broken"
    Config = EnvironmentConfig

    def step(self, state, reply):
        raise KeyError("no such state")


class BadReward(Environment):
    name = "bad_reward"
    Config = EnvironmentConfig

    def step(self, state, reply):
        return EnvStep("x", reward=float("nan"))


class NotAStep(Environment):
    name = "not_a_step"
    Config = EnvironmentConfig

    def step(self, state, reply):
        return ("x", 1.0, False)


@pytest.mark.parametrize(("env", "message"), [
    (Broken(), "environment 'broken'.* failed: KeyError"),
    (BadReward(), "step\\(\\) gave the reward nan"),
    (NotAStep(), "step\\(\\) returned tuple, not an rlhfx.EnvStep"),
])
def test_a_faulty_environment_is_named_with_its_recipe_key(tokenizer, env, message):
    with pytest.raises(PluginFault, match=message) as info:
        episodes(tokenizer, env, ["x"])
    assert str(info.value).startswith("recipe.toml: stages.align.environment:")


def test_a_secret_outside_the_list_is_a_user_error(tokenizer):
    from rlhfx import UserError

    with pytest.raises(UserError, match="secret 'boat' is not one of the game's items"):
        episodes(tokenizer, game(), ["x"], fields=[{"secret": "boat"}])


def test_guess_number_reads_numbers_and_answers_higher_or_lower():
    env = GuessNumber(GuessConfig(low=1, high=20, valid_guess_reward=0.5))
    state = GuessState(secret=11)  # the number 12
    assert env.step(state, "Is it 2?") == EnvStep("higher", reward=0.5)
    assert env.step(state, "maybe 15") == EnvStep("lower", reward=0.5)
    assert env.step(state, "no idea").observation.startswith("Guess")
    assert env.step(state, "12!").done and state.solved


def test_chat_template_renders_tool_messages_after_the_sampled_end_of_turn(tokenizer):
    tok = tiny_tokenizer("builtin:tiny-gpt-neo")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    renderer = TurnRenderer(tok)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    reply = [*tok("call", add_special_tokens=False)["input_ids"], end]
    text = renderer.message_text("tool", "42", reply)
    assert text == "\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n"
    # a reply cut before its end-of-turn token gets the template's end of turn
    cut = renderer.message_text("tool", "42", reply[:-1])
    assert cut == "<|im_end|>" + text
    ids = renderer.message_ids("tool", "42", reply)
    assert ids[1] == tok.convert_tokens_to_ids("<|im_start|>")  # special tokens stay whole
    opening = renderer.opening("What is 2+2?", [slow_tool])
    assert opening.startswith("<|im_start|>system\nYou may call these tools:")
    assert '"name": "slow_tool"' in opening and opening.endswith("<|im_start|>assistant\n")


def test_environment_tokens_get_no_gradient_in_the_update(tmp_path, tokenizer):
    """Through GRPO's real update: the logits that predict tokens the environment wrote get
    exactly zero gradient, those that predict the model's tokens do not."""
    grads = _update_gradients(tmp_path, tokenizer)
    inside = [p for p in ENV_POSITIONS if p < grads.shape[1]]
    assert len(inside) >= 2
    assert float(grads[:, inside].max()) == 0.0
    assert float(grads[:, FIRST_TURN].min()) > 0


def test_model_tokens_after_environment_tokens_get_gradient(tmp_path, tokenizer):
    grads = _update_gradients(tmp_path, tokenizer)
    assert grads.shape[1] > max(SECOND_TURN)
    assert float(grads[:, SECOND_TURN].min()) > 0


FIRST_TURN, ENV_POSITIONS, SECOND_TURN = [0, 1, 2], [3, 4, 5, 6], [7, 8]


def _update_gradients(tmp_path, tokenizer):
    """Gradients of the logits predicting each response token in one GRPO update of two
    episodes (rewards 1 and 0) whose tokens are model, model, model, env x4, model, model."""
    from rlhfx import AlignmentSetup, Batch, Sample
    from rlhfx.plugins.environments import NoReward
    from rlhfx.plugins.grpo import GRPO, GRPOConfig

    config = GRPOConfig(batch_size=1, k=2, beta=0.0, epochs=1, learning_rate=1e-3)
    setup = AlignmentSetup(
        config=config, policy_source="builtin:tiny-gpt-neo", tokenizer=tokenizer, prompts=[],
        eval_prompts=[], cleaners=[], reward=NoReward(), stop_strings=[], stage_dir=tmp_path,
        device="cpu", where="test",
    )
    algorithm = GRPO(config)
    algorithm.setup(setup)
    prompt = tokenizer("###Human: go ###Assistant:", add_special_tokens=False)["input_ids"]
    mask = [1, 1, 1, 0, 0, 0, 0, 1, 1]
    samples = [
        Sample(prompt_id=0, prompt="p", raw_response="r", sample=j, reward=float(1 - j),
               prompt_ids=list(prompt), response_ids=[10 + j, 11, 12, 13, 14, 15, 16, 17, 18],
               action_mask=list(mask))
        for j in range(2)
    ]
    captured = []
    head = algorithm.policy.get_output_embeddings()

    def keep_grad(module, args, output):
        if output.requires_grad:
            output.register_hook(lambda g: captured.append(g.detach().clone()))

    handle = head.register_forward_hook(keep_grad)
    try:
        algorithm.update(Batch(iteration=1, samples=samples, k=2, num_prompts=1, rank=0,
                               world_size=1, seed=0, shared_seed=0))
    finally:
        handle.remove()
    assert len(captured) == 1
    grad = captured[0]
    # the model keeps the last span + 1 positions; position j predicts response token j
    span = grad.shape[1] - 1
    return grad[:, :span].float().abs().sum(-1)  # [2 samples, span positions]


def test_generate_uses_given_prompt_ids_in_every_chunk(tokenizer):
    """Later turns are generated from the episode's ids, chunk after chunk, never re-encoded."""
    from rlhfx.rollouts import SamplingSettings, generate
    from rlhfx.tiny import tiny_causal_lm

    model = tiny_causal_lm("builtin:tiny-gpt-neo")
    given = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    out = generate(model, tokenizer, ["a", "b", "c", "d"], SamplingSettings(max_new_tokens=3),
                   batch_size=2, prompt_ids=given)
    assert [r.prompt_ids for r in out] == given


def test_episodes_through_the_hf_engine(tokenizer):
    import torch

    from rlhfx.rollouts import RolloutSettings, SamplingSettings, make_engine
    from rlhfx.tiny import tiny_causal_lm

    torch.manual_seed(0)
    engine = make_engine(RolloutSettings(), tiny_causal_lm("builtin:tiny-gpt-neo"), tokenizer,
                         batch_size=3, device="cpu", work_dir=Path("."))
    env = game(max_turns=3, max_episode_tokens=40)
    out = run_episodes(engine, tokenizer, env, ["###Human: guess ###Assistant:"] * 3,
                       [{}, {}, {}], SamplingSettings(max_new_tokens=5), num_samples=2)
    assert [(e.prompt_index, e.sample) for e in out] == [(p, j) for p in range(3)
                                                          for j in range(2)]
    for e in out:
        assert len(e.response_ids) == len(e.action_mask) <= 40
        assert e.model_turns == sum(1 for t in e.turns if t["role"] == "assistant") >= 1
        assert e.action_mask[0] == 1


def test_the_examples_of_docs_environments_md_play_an_episode(any_text):
    """The tool and the environment docs/environments.md shows, run as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "environments.md").read_text("utf-8")
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", doc, re.S):
        exec(compile(block, "docs/environments.md", "exec"), namespace)
    echo = namespace["Echo"](EnvironmentConfig(max_turns=3, max_episode_tokens=2000))
    replies = [format_tool_call("word_count", {"text": "one two three"}), "maybe", "banana"]
    (episode,), _ = episodes(any_text, echo, replies, fields=[{"word": "banana"}])
    assert [t["text"] for t in episode.turns] == [replies[0], "3", "maybe", "no, try again",
                                                  "banana", "yes"]
    assert episode.end == DONE and episode.env_reward == pytest.approx(1.0 - 0.2)
