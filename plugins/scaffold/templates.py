'''Source of the files `rlhfx plugins new` writes, one component per kind.

Placeholders (string.Template): $name (the component's name), $cls (its class), $module,
$dist, $kind.
'''

from __future__ import annotations

PYPROJECT = '''[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "An rlhfx plugin: the $kind '$name'."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["rlhfx"]

# This entry point makes it a plugin: rlhfx loads every module of the `rlhfx` group.
[project.entry-points.rlhfx]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''# $dist

An [rlhfx](https://pypi.org/project/rlhfx/) plugin that adds the $kind `$name`.

```bash
pip install -e .        # rlhfx finds it through the `rlhfx` entry point
rlhfx plugins list      # shows `$name` with `$kind:$name`
rlhfx components show $kind:$name
python -m pytest        # the tests use rlhfx's pytest fixtures (rlhfx_plugins, rlhfx_cli)
```

In a recipe:

```toml
$usage
```

Edit `$module/__init__.py`: the component's options are the fields of its `Config` (a
`#:` comment above a field is its help text in `rlhfx components show`).
'''

USAGE = {
    "reward_source": '[stages.align]\nreward = { name = "$name", words = ["please"], bonus = 0.5 }',
    "cleaner": '[stages.align]\ncleaners = [{ name = "stop_markers" }, { name = "strip" }, '
               '{ name = "$name", max_chars = 400 }, { name = "discard" }]',
    "ranker": '[stages.align.algorithm]\nname = "raft"\nranker = { name = "$name", '
              'fraction = 0.25 }',
    "algorithm": '[stages.align]\nalgorithm = { name = "$name" }',
    "stage": '[stages.$name]\nnote = "hello"',
    "data_format": '[stages.data]\nformat = "$name"',
}

HEAD = '''"""The $kind `$name` (rlhfx plugin $dist)."""

from __future__ import annotations

'''

#: The end of every component module: the hook that registers the class ($hook: its name).
REGISTER = '''
@hookimpl
def $hook(register):
    register($cls)
'''

CODE = {
    "reward_source": HEAD + '''from collections.abc import Sequence

from pydantic import Field
from rlhfx import ComponentConfig, RewardSource, hookimpl


class ${cls}Config(ComponentConfig):
    #: Words that earn the bonus (matched case-insensitively, each occurrence counts).
    words: list[str] = Field(default_factory=lambda: ["please", "thank"], min_length=1)
    #: Reward per occurrence.
    bonus: float = 1.0


class $cls(RewardSource[${cls}Config]):
    """A bonus for each occurrence of the configured words."""

    name = "$name"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        words = [w.lower() for w in self.config.words]
        return [self.config.bonus * sum(text.lower().count(w) for w in words)
                for text in responses]

''',
    "cleaner": HEAD + '''from pydantic import Field
from rlhfx import CleanResult, ComponentConfig, ResponseCleaner, hookimpl


class ${cls}Config(ComponentConfig):
    #: Longest answer kept, in characters; longer ones are cut at the last space before it.
    max_chars: int = Field(default=400, ge=1)


class $cls(ResponseCleaner[${cls}Config]):
    """Cut answers longer than `max_chars` at a word boundary."""

    name = "$name"

    def clean(self, prompt: str, response: str) -> CleanResult:
        limit = self.config.max_chars
        if len(response) <= limit:
            return CleanResult(response)
        cut = response[:limit]
        if " " in cut:
            cut = cut[: cut.rindex(" ")]
        return CleanResult(cut, changed=True)

''',
    "ranker": HEAD + '''import math
from collections.abc import Sequence

from pydantic import Field
from rlhfx import ComponentConfig, Ranker, Sample, hookimpl


class ${cls}Config(ComponentConfig):
    #: Share of the scored samples to keep, best first.
    fraction: float = Field(default=0.25, gt=0, le=1)


class $cls(Ranker[${cls}Config]):
    """Keep the best `fraction` of all scored samples, whatever their prompt."""

    name = "$name"

    def select(self, samples: Sequence[Sample]) -> list[int]:
        scored = [i for i, s in enumerate(samples) if not s.discarded and s.reward is not None]
        scored.sort(key=lambda i: float(samples[i].reward or 0.0), reverse=True)
        return scored[: math.ceil(self.config.fraction * len(scored))]

''',
    "algorithm": HEAD + '''from typing import Any

from pydantic import Field
from rlhfx import AlgorithmConfig, AlignmentAlgorithm, AlignmentSetup, Batch, hookimpl


class ${cls}Config(AlgorithmConfig):
    # The shared options (iterations, response lengths, sampling, lora, dtype, seed, eval,
    # guards, checkpoints) come from AlgorithmConfig; these are the algorithm's own.
    #: Prompts sampled per iteration (over all processes).
    prompts: int = Field(default=8, ge=1)
    #: Answers sampled per prompt; each is weighed against its prompt's mean reward.
    k: int = Field(default=4, ge=2)
    learning_rate: float = Field(default=1e-3, gt=0)


class $cls(AlignmentAlgorithm[${cls}Config]):
    """REINFORCE with a group baseline: answers that beat their prompt's mean reward become
    more likely, the others less likely."""

    name = "$name"

    def prompts_per_iteration(self) -> int:
        return self.config.prompts

    def samples_per_prompt(self) -> int:
        return self.config.k

    def setup(self, setup: AlignmentSetup) -> None:
        import torch

        self.run = setup  # kept for the update: its device, autocast, ...
        self.policy = setup.load_policy()  # the loop samples with it, checkpoints and saves it
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.config.learning_rate)

    def update(self, batch: Batch) -> dict[str, Any]:
        import torch

        # Every process sees every sample and takes the same step, so the processes' weights
        # stay equal without exchanging gradients.
        losses, groups = [], 0
        self.policy.train()
        for group in batch.groups():
            usable = [s for s in group if batch.usable(s) and s.response_ids
                      and s.token_status != "prefix"]  # tokens a cleaner cut off the front
            if len(usable) < 2:
                continue
            groups += 1
            baseline = sum(s.reward for s in usable) / len(usable)
            for sample in usable:
                ids = torch.tensor([sample.prompt_ids + sample.response_ids],
                                   device=self.run.device)
                labels = ids.clone()
                labels[0, : len(sample.prompt_ids)] = -100  # the answer's tokens only
                with self.run.autocast():
                    nll = self.policy(input_ids=ids, labels=labels).loss
                loss = (sample.reward - baseline) * nll / len(usable)
                loss.backward()
                losses.append(loss.item())
                sample.trained = True  # the samples file and `trained_reward_mean` show it
        if losses:
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.policy.eval()
        return {
            "train_loss": sum(losses) if losses else None,
            "groups_used": groups,  # appears as `$name/groups_used` in metrics.jsonl
        }

    def state_dict(self) -> dict[str, Any]:  # with the optimizer, a resume continues exactly
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])

''',
    "stage": HEAD + '''from rlhfx import ComponentConfig, Stage, StageContext, hookimpl


class ${cls}Config(ComponentConfig):
    #: Text written to the stage's `notes.txt`.
    note: str = "hello"


class $cls(Stage[${cls}Config]):
    """Write a note into the stage directory (a later stage can read `@<id>.notes`)."""

    name = "$name"
    outputs = ("notes",)

    def run(self, ctx: StageContext) -> dict[str, str]:
        path = ctx.stage_dir / "notes.txt"
        if ctx.is_main:
            path.write_text(self.config.note + "\\n", encoding="utf-8")
        return {"notes": str(path)}

''',
    "data_format": HEAD + '''from typing import Any

from rlhfx import hookimpl
from rlhfx.data.preference import ASSISTANT, HUMAN, BadRow, Example, PreferenceFormat, Turn


class $cls(PreferenceFormat):
    """Records of the form {"question": ..., "good": ..., "bad": ...}."""

    name = "$name"

    def sniff(self, record: dict[str, Any]) -> bool:
        return {"question", "good", "bad"} <= set(record)

    def parse(self, record: dict[str, Any]) -> Example:
        texts = {}
        for key in ("question", "good", "bad"):
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                raise BadRow(f"no_{key}", f"`{key}` is missing or empty")
            texts[key] = value.strip()
        question = Turn(HUMAN, texts["question"])
        return Example([question, Turn(ASSISTANT, texts["good"])],
                       [question, Turn(ASSISTANT, texts["bad"])])

''',
}

TEST_HEAD = '''"""Tests of the $kind `$name`, with the pytest fixtures rlhfx provides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

# The built-in tiny policy (random weights, nothing downloaded) and prompts, aligned by RAFT
# for one short iteration: a run of a few seconds on a laptop CPU.
TINY_ALIGN = """[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"

[stages.align.algorithm]
name = "raft"
iterations = 1
batch_size = 2
k = 2
min_new_tokens = 4
max_new_tokens = 8
epochs = 1
torch_threads = 1
"""


def run_recipe(rlhfx_cli, tmp_path: Path, recipe: str) -> Path:
    """Validate and run a recipe (TOML text) with the CLI, as a user would; the run directory."""
    path = tmp_path / "recipe.toml"
    path.write_text(recipe, encoding="utf-8")
    checked = rlhfx_cli("validate", str(path))
    assert checked.exit_code == 0, checked.output
    result = rlhfx_cli("run", str(path), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def sampled(run_dir: Path, iteration: int = 1) -> list[dict]:
    """The samples an align stage wrote for one iteration (prompt, response, reward, ...)."""
    path = run_dir / "stages" / "align" / "iterations" / f"iter-{iteration:04d}" / "samples.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_registered_through_the_entry_point(rlhfx_plugins):
    entry = rlhfx_plugins().get("$kind", "$name")
    assert entry.plugin.distribution == "$dist"
    assert entry.plugin.status == "loaded"


def test_unknown_options_are_rejected(rlhfx_plugins):
    config = rlhfx_plugins().get("$kind", "$name").cls.Config
    with pytest.raises(ValidationError):
        config(no_such_option=1)


def test_components_show(rlhfx_cli):
    result = rlhfx_cli("components", "show", "$kind:$name")
    assert result.exit_code == 0, result.output
    assert "$name" in result.stdout

'''

TESTS = {
    "reward_source": TEST_HEAD + '''
def test_scores(rlhfx_plugins):
    cls = rlhfx_plugins().get("reward_source", "$name").cls
    source = cls(cls.Config(words=["please"], bonus=0.5))
    assert source.score(["p", "p"], ["Please, please!", "no"]) == [1.0, 0.0]


def test_scores_the_answers_of_a_run(rlhfx_cli, rlhfx_plugins, tmp_path):
    reward = ('\\n[stages.align.reward]\\nname = "$name"\\n'
              'words = ["a", "e"]\\nbonus = 0.5\\n')
    rows = sampled(run_recipe(rlhfx_cli, tmp_path, TINY_ALIGN + reward))
    cls = rlhfx_plugins().get("reward_source", "$name").cls
    source = cls(cls.Config(words=["a", "e"], bonus=0.5))
    scored = [row for row in rows if not row["discarded"]]
    assert scored
    for row in scored:
        assert row["reward"] == source.score([row["prompt"]], [row["response"]])[0]
''',
    "cleaner": TEST_HEAD + '''
def test_cuts_long_answers_at_a_word(rlhfx_plugins):
    cls = rlhfx_plugins().get("cleaner", "$name").cls
    cleaner = cls(cls.Config(max_chars=10))
    result = cleaner.clean("p", "one two three four")
    assert (result.text, result.changed) == ("one two", True)
    assert cleaner.clean("p", "short").changed is False


def test_cleans_the_answers_of_a_run(rlhfx_cli, tmp_path):
    tables = ('\\n[[stages.align.cleaners]]\\nname = "$name"\\nmax_chars = 12\\n'
              '\\n[stages.align.reward]\\nname = "length"\\n')
    rows = sampled(run_recipe(rlhfx_cli, tmp_path, TINY_ALIGN + tables))
    assert rows and all(len(row["response"]) <= 12 for row in rows)
    assert any(row["changed"] for row in rows)  # 4-8 tokens of a random policy run longer
''',
    "ranker": TEST_HEAD + '''
def test_keeps_the_best_scored_samples(rlhfx_plugins):
    from rlhfx import Sample

    cls = rlhfx_plugins().get("ranker", "$name").cls
    rewards = [1.0, 5.0, None, 3.0]
    samples = [Sample(prompt_id=i, prompt="p", raw_response="r", reward=r,
                      discarded=r is None) for i, r in enumerate(rewards)]
    assert cls(cls.Config(fraction=0.5)).select(samples) == [1, 3]


def test_chooses_what_a_run_trains_on(rlhfx_cli, tmp_path):
    tables = ('\\n[stages.align.algorithm.ranker]\\nname = "$name"\\nfraction = 0.5\\n'
              '\\n[stages.align.reward]\\nname = "length"\\n')
    rows = sampled(run_recipe(rlhfx_cli, tmp_path, TINY_ALIGN + tables))
    assert any(row["trained"] for row in rows)
    for prompt_id in {row["prompt_id"] for row in rows}:  # RAFT ranks each prompt's answers
        group = [row for row in rows if row["prompt_id"] == prompt_id and not row["discarded"]]
        kept = [row["reward"] for row in group if row["trained"]]
        left = [row["reward"] for row in group if not row["trained"]]
        assert len(kept) == -(-len(group) // 2)  # the best half, rounded up
        assert not left or min(kept) >= max(left)
''',
    "algorithm": TEST_HEAD + '''
RECIPE = """[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
reward = "length"

[stages.align.algorithm]
name = "$name"
iterations = ITERATIONS
prompts = 2
k = 2
max_new_tokens = 8
torch_threads = 1
"""


def test_a_run_trains_saves_and_resumes(rlhfx_cli, tmp_path):
    run_dir = run_recipe(rlhfx_cli, tmp_path, RECIPE.replace("ITERATIONS", "1"))
    align = run_dir / "stages" / "align"
    assert (align / "model" / "config.json").exists()  # the final model, a plain HF checkpoint
    assert any(row["trained"] for row in sampled(run_dir))
    # More iterations later: the run continues from its checkpoint (optimizer state too).
    run_recipe(rlhfx_cli, tmp_path, RECIPE.replace("ITERATIONS", "2"))
    records = [json.loads(line) for line in (align / "metrics.jsonl").read_text().splitlines()]
    iterations = [r for r in records if "iteration" in r and "$name/groups_used" in r]
    assert [r["iteration"] for r in iterations] == [1, 2]
    assert all(r["train_loss"] is not None for r in iterations)
''',
    "stage": TEST_HEAD + '''
def test_runs_in_a_recipe(rlhfx_cli, tmp_path):
    run_dir = run_recipe(rlhfx_cli, tmp_path, '[stages.$name]\\nnote = "hi there"\\n')
    notes = run_dir / "stages" / "$name" / "notes.txt"
    assert notes.read_text() == "hi there\\n"
''',
    "data_format": TEST_HEAD + '''
def test_sniffs_and_parses(rlhfx_plugins):
    from rlhfx.data.preference import BadRow

    fmt = rlhfx_plugins().get("data_format", "$name").cls()
    record = {"question": "Hi?", "good": "Hello!", "bad": "Go away."}
    assert fmt.sniff(record) and not fmt.sniff({"prompt": "x"})
    example = fmt.parse(record)
    assert [t.text for t in example.chosen] == ["Hi?", "Hello!"]
    assert example.rejected is not None and example.rejected[-1].text == "Go away."
    with pytest.raises(BadRow):
        fmt.parse({"question": "Hi?", "good": "", "bad": "x"})


def test_a_data_stage_reads_it(rlhfx_cli, tmp_path):
    source = tmp_path / "pairs.jsonl"
    rows = [{"question": f"Question {i}?", "good": f"Good {i}.", "bad": f"Bad {i}."}
            for i in range(4)]
    source.write_text("".join(json.dumps(row) + "\\n" for row in rows), encoding="utf-8")
    recipe = (f'[stages.data]\\nsource = {json.dumps(source.as_posix())}\\n'
              'format = "$name"\\neval_size = 0\\n')
    run_dir = run_recipe(rlhfx_cli, tmp_path, recipe)
    state = json.loads((run_dir / "run_state.json").read_text())
    pairs = Path(run_dir / state["stages"]["data"]["outputs"]["rm"]).read_text()
    assert all(row["good"] in pairs and row["bad"] in pairs for row in rows)
''',
}

# The environment kind: kept as its own entries so the templates above can change apart.
USAGE["environment"] = ('[stages.align]\nalgorithm = { name = "grpo" }\n'
                        'environment = { name = "$name", max_turns = 3 }')

CODE["environment"] = HEAD + '''from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlhfx import Environment, EnvironmentConfig, EnvStep, hookimpl


class ${cls}Config(EnvironmentConfig):
    #: The word the model must say; a prompt row's `target` field overrides it.
    target: str = "please"
    #: Reward when the model says it.
    reward: float = 1.0


@dataclass
class ${cls}State:
    target: str
    tries: int = 0


class $cls(Environment[${cls}Config]):
    """The model has a few turns to say the target word; each miss is answered "Try again"."""

    name = "$name"

    def reset(self, prompt: str, fields: Mapping[str, Any], seed: int) -> ${cls}State:
        return ${cls}State(str(fields.get("target", self.config.target)))

    def step(self, state: ${cls}State, reply: str) -> EnvStep:
        state.tries += 1
        if state.target.lower() in reply.lower():
            return EnvStep("Well done.", reward=self.config.reward, done=True)
        return EnvStep("Try again.")

'''

TESTS["environment"] = TEST_HEAD + '''
def test_answers_each_turn(rlhfx_plugins):
    cls = rlhfx_plugins().get("environment", "$name").cls
    env = cls(cls.Config(reward=2.0))
    state = env.reset("Say the word.", {"target": "thanks"}, seed=0)
    miss = env.step(state, "hello")
    assert (miss.observation, miss.reward, miss.done) == ("Try again.", 0.0, False)
    hit = env.step(state, "Thanks!")
    assert (hit.reward, hit.done, state.tries) == (2.0, True, 2)


# RAFT trains on single replies; an algorithm that trains on episodes plays the environment.
EPISODES = """[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
reward = "none"
environment = { name = "$name", max_turns = 2, max_episode_tokens = 24 }

[stages.align.algorithm]
name = "grpo"
iterations = 1
batch_size = 2
k = 2
max_new_tokens = 6
torch_threads = 1
"""


def test_plays_episodes_in_a_run(rlhfx_cli, tmp_path):
    rows = sampled(run_recipe(rlhfx_cli, tmp_path, EPISODES))
    assert len(rows) == 4
    for row in rows:
        assert row["turns"][0]["role"] == "assistant"
        misses = [t for t in row["turns"] if t["role"] != "assistant"]
        assert all(t["text"] in ("Try again.", "Well done.") for t in misses)
'''
