"""docs/hooks.md documents every hook in core/hookspecs.py: exact signature, each argument,
when it is called, and an example that is loaded here as a real plugin. Adding a hook, or
changing a hook's arguments, without updating the docs fails these tests."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import click
import pytest

from rlhfx import hookspecs, registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
HEADING = re.compile(r"^## `(?P<name>rlhfx_\w+)\((?P<args>[^)]*)\)`\s*$", re.M)


def spec_hooks() -> dict[str, list[str]]:
    """Hook name -> argument names, read from the hook specifications themselves."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, marker)
    }


def doc_sections() -> dict[str, tuple[list[str], str]]:
    """Hook name -> (documented argument names, section text)."""
    text = DOC.read_text(encoding="utf-8")
    matches = list(HEADING.finditer(text))
    out = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        args = [a.strip() for a in m["args"].split(",") if a.strip()]
        assert m["name"] not in out, f"{m['name']} is documented twice"
        out[m["name"]] = (args, text[m.end():end])
    return out


HOOKS = sorted(spec_hooks())


def test_there_are_hooks_to_document():
    assert {"rlhfx_register_reward_sources", "rlhfx_register_cleaners",
            "rlhfx_register_rankers", "rlhfx_register_algorithms"} <= set(HOOKS)


def test_every_hook_is_documented_and_nothing_else():
    documented = set(doc_sections())
    assert set(HOOKS) - documented == set(), "hooks missing from docs/hooks.md"
    assert documented - set(HOOKS) == set(), "docs/hooks.md documents hooks that do not exist"


@pytest.mark.parametrize("hook", HOOKS)
def test_documented_signature_matches_the_spec(hook):
    args, _ = doc_sections()[hook]
    assert args == spec_hooks()[hook]


@pytest.mark.parametrize("hook", HOOKS)
def test_each_argument_is_described(hook):
    _, body = doc_sections()[hook]
    assert "\nArguments:\n" in body
    block = body.split("\nArguments:\n", 1)[1].split("\nWhen it is called:", 1)[0]
    described = re.findall(r"^- `(\w+)`: \S", block, re.M)
    assert described == spec_hooks()[hook]


@pytest.mark.parametrize("hook", HOOKS)
def test_says_when_it_is_called(hook):
    _, body = doc_sections()[hook]
    when = re.search(r"^When it is called: (.+?)(?:\n\n|\Z)", body, re.M | re.S)
    assert when is not None and len(when.group(1).split()) >= 5


@pytest.mark.parametrize("hook", HOOKS)
def test_spec_docstring_describes_each_argument(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    for arg in spec_hooks()[hook]:
        assert f":param {arg}:" in doc, f"{hook}: docstring lacks ':param {arg}:'"
    assert "Called" in doc


def example_plugin(hook: str) -> types.ModuleType:
    _, body = doc_sections()[hook]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert len(blocks) == 1, f"{hook}: expected one python example"
    module = types.ModuleType(f"docs_example_{hook}")
    exec(compile(blocks[0], f"docs/hooks.md ({hook})", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("hook", HOOKS)
def test_example_is_a_working_plugin(hook, tmp_path):
    module = example_plugin(hook)
    impl = getattr(module, hook, None)
    assert impl is not None and hasattr(impl, f"{hookspecs.PROJECT}_impl"), (
        f"the example of {hook} must define it with @hookimpl"
    )
    assert set(inspect.signature(impl).parameters) <= set(spec_hooks()[hook])

    system = registry.PluginSystem()  # nothing else loaded: no name clashes
    system.strict = True  # a broken example raises here, with its error
    info = registry.PluginInfo(module.__name__, "0", False, "docs")
    system.add_plugin(module, info)
    assert info.status == "loaded"

    kind = {v: k for k, v in registry.REGISTER_HOOKS.items()}.get(hook)
    if kind is not None:
        assert len(system.names(kind)) == 1, f"the example of {hook} registers nothing"
        entry = system.get(kind, system.names(kind)[0])
        entry.cls(entry.cls.Config())  # builds from its default config
    elif hook == "rlhfx_register_commands":
        group = click.Group("rlhfx")
        system.add_commands(group)
        assert info.status == "loaded" and group.commands
    elif hook == "rlhfx_log_metrics":
        system.pm.hook.rlhfx_log_metrics(run_dir=str(tmp_path), stage="s", step=3,
                                         metrics={"reward": 1.5})
        assert any(tmp_path.iterdir()), "the example of rlhfx_log_metrics wrote nothing"
    else:  # a new kind of hook: teach this test how to exercise its example
        pytest.fail(f"no check for the example of {hook}")


# ----------------------------------------------------------------------------- consumed
ALIGN = """[run]
seed = 1

[stages.align]
policy = "builtin:tiny-gpt-neo"
prompts = "builtin:tiny-prompts"
{extra}
[stages.align.algorithm]
{algorithm}
iterations = 1
min_new_tokens = 6
max_new_tokens = 6
torch_threads = 1
"""
RAFT = 'name = "raft"\nbatch_size = 2\nk = 2\nepochs = 1\ntrain_batch_size = 2'
WORDS = 'reward = { name = "pattern_penalty", rules = [{ pattern = "[a-z]+", penalty = -1 }] }'


def _run(tmp_path, hook: str, recipe: str) -> list[dict]:
    """Run `recipe` with the hook's example loaded beside the installed plugins."""
    import io
    import json

    from rich.console import Console

    from rlhfx.recipe import load_recipe
    from rlhfx.runner import run_recipe

    registry.get_plugins(extra=[(example_plugin(hook), f"docs_{hook}")])
    path = tmp_path / "recipe.toml"
    path.write_text(recipe, encoding="utf-8")
    out = tmp_path / "run"
    run_recipe(load_recipe(path), console=Console(file=io.StringIO()), output_dir=out)
    stage = next(p for p in (out / "stages").iterdir() if p.is_dir())
    metrics = stage / "metrics.jsonl"
    return [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []


CONSUMERS = {
    "rlhfx_register_stages": ('[stages.numbers]\nname = "count"\nprompts = 3\n',
                              lambda recs: recs == [{"step": 0, "time": recs[0]["time"],
                                                     "count": 3}]),
    "rlhfx_register_algorithms": (
        ALIGN.format(extra=WORDS, algorithm='name = "spread"\nk = 2\nprompts = 2'),
        lambda recs: recs[-1]["spread/best_minus_worst"] is not None
        and recs[-1]["num_samples"] == 4),
    "rlhfx_register_reward_sources": (
        ALIGN.format(extra='reward = { name = "polite", bonus = 2.0 }', algorithm=RAFT),
        lambda recs: recs[-1]["reward_mean"] is not None and recs[-1]["num_trained"] == 2),
    "rlhfx_register_cleaners": (
        ALIGN.format(extra=WORDS + '\ncleaners = [{ name = "no_shouting" }]', algorithm=RAFT),
        lambda recs: recs[-1]["num_samples"] == 4),
    "rlhfx_register_rankers": (
        ALIGN.format(extra=WORDS, algorithm=RAFT + '\nranker = { name = "threshold" }'),
        lambda recs: recs[-1]["num_trained"] == 4 - round(4 * recs[-1]["discarded_rate"])),
    # Every sample is one of the engine's canned answers ("yes" or "no"), so every reward (the
    # length in characters) is 2 or 3; the policy's own 6 sampled tokens would be longer.
    "rlhfx_register_rollout_engines": (
        ALIGN.format(extra='reward = { name = "length", unit = "chars" }\n'
                           'rollouts = { engine = "canned", answers = ["yes", "no"] }',
                     algorithm=RAFT),
        lambda recs: recs[-1]["num_samples"] == 4
        and 2 <= recs[-1]["reward_min"] <= recs[-1]["reward_max"] <= 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("hook", sorted(CONSUMERS))
def test_example_works_in_the_stage_that_consumes_it(hook, tmp_path):
    recipe, check = CONSUMERS[hook]
    records = _run(tmp_path, hook, recipe)
    assert records and check(records), records
