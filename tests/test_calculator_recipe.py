"""recipes/smollm2_calculator.toml, stage by stage, on a tiny model: the same recipe with the
model swapped and the counts shrunk runs data -> SFT -> RAFT with the calculator -> the
three-way accuracy table. (The real recipe is measured by hand, not in the test suite.)"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from fixtures.tiny import tiny_config, train_tokenizer

from rlhfx.episode_text import tool_instructions
from rlhfx.plugins.environments.calculator import calculator
from rlhfx.tools import format_tool_call, tool_schemas

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|endoftext|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def tiny_chat_model(path: Path) -> str:
    """A tiny GPT-Neo whose byte-level tokenizer knows the task's text, with a chat template."""
    import torch
    from transformers import GPTNeoForCausalLM

    corpus = [tool_instructions(tool_schemas([calculator])),
              format_tool_call("calculator", {"expression": "1234 * 56"}),
              "What is 4821 - 372? 4821 - 372 = 4449. <|user|> <|assistant|> <|tool|>"] * 3
    tokenizer = train_tokenizer(corpus, vocab_size=1200)
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    model = GPTNeoForCausalLM(tiny_config(tokenizer, max_position_embeddings=1024,
                                          window_size=1024))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return json.dumps(v)


def tiny_recipe(tmp_path: Path) -> Path:
    recipe = tomllib.loads((RECIPES / "smollm2_calculator.toml").read_text(encoding="utf-8"))
    real = recipe["stages"]["sft"]["model"]
    tiny = tiny_chat_model(tmp_path / "tiny")
    stages = recipe["stages"]
    for table in stages.values():
        for key in ("tokenizer", "model"):
            if table.get(key) == real:
                table[key] = tiny
    for run in stages["tool_eval"]["runs"]:
        run["model"] = tiny if run["model"] == real else run["model"]
    stages["calc_data"].update(train_questions=4, eval_questions=6, demonstrations=8)
    stages["sft"].update(max_steps=2, batch_size=4, epochs=1, max_length=256, save_steps=10,
                         logging_steps=1)
    stages["align"]["algorithm"].update(iterations=1, batch_size=2, k=2, train_batch_size=2,
                                        min_new_tokens=8, max_new_tokens=8, torch_threads=1)
    stages["tool_eval"]["max_new_tokens"] = 8
    lines = [f"[run]\nseed = {recipe['run']['seed']}\n"]
    for name, table in stages.items():
        lines.append(f"[stages.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_calculator_recipe_runs_on_a_tiny_model(rlhfx_cli, tmp_path):
    recipe = tiny_recipe(tmp_path)
    out = tmp_path / "run"
    result = rlhfx_cli("run", str(recipe), "-o", str(out))
    assert result.exit_code == 0, result.output
    data = out / "stages" / "calc_data"
    train = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (data / "eval.jsonl").read_text().splitlines()]
    demos = [json.loads(x) for x in (data / "demos.jsonl").read_text().splitlines()]
    assert len(train) == 4 and len(held) == 6 and len(demos) == 2 * 8
    # one row per model turn: the call, then the answer with the tool's result as context only
    calls, answers = demos[0::2], demos[1::2]
    assert all(d["completion"].startswith("<tool_call>") for d in calls)
    assert all("<|tool|>" in d["prompt"] and "<tool_call>" not in d["completion"]
               and d["prompt"].startswith(c["prompt"] + c["completion"])
               for c, d in zip(calls, answers, strict=True))
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert all(r["answer"] == calculator(r["expression"]) for r in train + held)
    samples = (out / "stages" / "align" / "iterations" / "iter-0001" / "samples.jsonl")
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(rows) == 4 and all(r["turns"] for r in rows)
    assert all("You may call these tools" in r["prompt"] for r in rows)
    results = json.loads((out / "stages" / "tool_eval" / "results.json").read_text())
    assert [r["label"] for r in results["runs"]] == ["base_no_tools", "sft_tools", "rl_tools"]
    assert [r["tools"] for r in results["runs"]] == [False, True, True]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results["runs"])
    assert [(c["after"], c["before"]) for c in results["comparisons"]] == [
        ("sft_tools", "base_no_tools"), ("rl_tools", "sft_tools")]
    assert all(0.0 <= c["sign_test_p"] <= 1.0 for c in results["comparisons"])
    with_tools = [json.loads(x) for x in
                  (out / "stages" / "tool_eval" / "rl_tools.jsonl").read_text().splitlines()]
    assert len(with_tools) == 6 and all(r["turns"] for r in with_tools)
