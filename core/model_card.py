"""A model card (`README.md` with the Hugging Face metadata header) beside every final model.

A saved folder alone does not say what it was trained from, how, on what, or how it scored.
The runner writes the card for each completed stage that produced a `model` (or `adapter`)
folder, and writes it again after later stages, so an evaluate stage's verdict on the model
appears on its card once it is known. A README.md that rlhfx did not write is left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhfx.files import atomic_write_text, read_jsonl

#: In every card rlhfx writes (after the metadata header, which the Hub reads only at the top
#: of the file): only a README.md with it is replaced.
MARK = "<!-- model card written by rlhfx; it is rewritten when the run goes on -->"
#: The placeholder of the Hub's blank card template, which peft saves beside an adapter: such
#: a card says nothing yet and is replaced too.
BLANK_TEMPLATE = "[More Information Needed]"
MODEL_OUTPUTS = ("model", "adapter")
#: Keys of a stage table that name the model it starts from / the data it reads.
BASE_KEYS = ("policy", "model")
DATA_KEYS = ("data", "prompts", "eval_prompts", "eval_data", "source")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

WHAT = {
    "sft": "trained by supervised fine-tuning (TRL's SFTTrainer)",
    "reward_model": "trained as a reward model on preference pairs (TRL's RewardTrainer)",
    "dpo": "trained by offline DPO on preference pairs (TRL's DPOTrainer)",
    "align": "aligned with",
}


def write_model_cards(
    run_dir: Path, data: Mapping[str, Any], stages: Mapping[str, Any], recipe_file: str,
) -> list[Path]:
    """(Re)write the card of every completed stage's model folder; returns the cards written.

    `data` is the recipe as run (its parsed tables), `stages` run_state.json's stage records.
    """
    written = []
    for stage_id in data.get("stages", {}):
        record = stages.get(stage_id, {})
        if record.get("status") != "completed":
            continue
        for output in MODEL_OUTPUTS:
            folder = _folder(run_dir, record.get("outputs", {}).get(output))
            if folder is None:
                continue
            card = folder / "README.md"
            if card.exists() and not _replaceable(card.read_text(encoding="utf-8")):
                continue  # someone's own card: nothing already written is lost
            text = model_card(run_dir, data, stages, recipe_file, stage_id, folder)
            atomic_write_text(card, text)
            written.append(card)
    return written


def _replaceable(text: str) -> bool:
    return MARK in text or BLANK_TEMPLATE in text


def _folder(run_dir: Path, value: str | None) -> Path | None:
    if not value:
        return None
    folder = Path(value) if Path(value).is_absolute() else run_dir / value
    has_model = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
    return folder if folder.is_dir() and has_model else None


def model_card(
    run_dir: Path, data: Mapping[str, Any], stages: Mapping[str, Any], recipe_file: str,
    stage_id: str, folder: Path,
) -> str:
    """The card's text: metadata header, how the model was trained, what the run measured."""
    from rlhfx import __version__

    tables = data["stages"]
    table = tables[stage_id]
    kind = str(table.get("name", stage_id))
    algorithm, options = _algorithm(table)
    base = _base(tables, stage_id)
    datasets = sorted({d for d in _data_sources(tables, table) if _HUB_ID.match(d)})
    adapter = (folder / "adapter_config.json").is_file()
    tags = ["rlhfx", (algorithm or kind).replace("_", "-")]
    if kind in ("sft", "reward_model", "dpo"):
        tags.append("trl")
    header = ["---"]
    if base and _HUB_ID.match(base) and not Path(base).exists():
        header.append(f"base_model: {base}")
    header.append(f"library_name: {'peft' if adapter else 'transformers'}")
    header.append("tags:" + "".join(f"\n- {t}" for t in dict.fromkeys(tags)))
    if datasets:
        header.append("datasets:" + "".join(f"\n- {d}" for d in datasets))
    header.append("---")

    record = stages.get(stage_id, {})
    metrics = _metrics(run_dir / "stages" / stage_id / "metrics.jsonl")
    run_name = data.get("run", {}).get("name") or Path(recipe_file).stem
    what = WHAT.get(kind, f"made by the `{kind}` stage")
    if kind == "align":
        what = f"{what} {(algorithm or '?').upper().replace('_', ' ')}"
    lines = [
        *header, MARK, "",
        f"# {run_name}: {stage_id}",
        "",
        f"{'A LoRA adapter' if adapter else 'A model'} {what}, stage `{stage_id}` "
        f"of the recipe `{Path(recipe_file).name}`, with rlhfx {__version__}.",
        "",
        "## How it was trained",
        "",
        f"- base model: `{base or 'unknown'}`",
    ]
    if algorithm:
        lines.append(f"- algorithm: `{algorithm}`"
                     + (f" with {_inline(options)}" if options else " (its defaults)"))
    reward = table.get("reward")
    if isinstance(reward, Mapping | str):
        name = reward.get("name", "?") if isinstance(reward, Mapping) else reward
        lines.append(f"- reward: `{name}`")
    for key in DATA_KEYS:
        if key in table:
            lines.append(f"- {key.replace('_', ' ')}: `{table[key]}`{_origin(tables, table[key])}")
    iterations = _iterations(metrics, kind)
    if iterations:
        lines.append(f"- {iterations}")
    if "seconds" in record:
        lines.append(f"- time: {_duration(record['seconds'])}")
    lines.append(f"- seed: {data.get('run', {}).get('seed', 42)} (+ the stage's index)")
    lines += ["", "## What the run measured", ""]
    measured = _measured(metrics) + _verdicts(run_dir, tables, stages, stage_id)
    lines += measured or ["Nothing was measured in this stage."]
    lines += ["", "## Recipe", "",
              f"The stage's table (the whole recipe is `{run_dir.name}/recipe.toml`):", "",
              "```toml", _toml({"stages": {stage_id: table}}).rstrip(), "```", ""]
    return "\n".join(lines)


def _algorithm(table: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    value = table.get("algorithm")
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and "name" in value:
        return str(value["name"]), {k: v for k, v in value.items() if k != "name"}
    return None, {}


def _base(tables: Mapping[str, Any], stage_id: str, seen: frozenset[str] = frozenset()) -> str:
    """The model a stage started from, following `@stage` back to an outside source."""
    table = tables.get(stage_id, {})
    for key in BASE_KEYS:
        value = table.get(key)
        if isinstance(value, str):
            ref = _stage_ref(value)
            if ref and ref in tables and ref not in seen:
                return _base(tables, ref, seen | {stage_id}) or value
            return value
    return ""


def _stage_ref(value: str) -> str | None:
    return value[1:].split(".")[0] if value.startswith("@") else None


def _data_sources(tables: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    """The data a stage read: its own sources, and a data stage's source behind `@data.x`."""
    out = []
    for key in DATA_KEYS:
        value = table.get(key)
        if not isinstance(value, str):
            continue
        ref = _stage_ref(value)
        if ref and isinstance(tables.get(ref), Mapping):
            value = tables[ref].get("source", "")
        if isinstance(value, str) and value:
            out.append(value)
    return out


def _origin(tables: Mapping[str, Any], value: Any) -> str:
    ref = _stage_ref(value) if isinstance(value, str) else None
    source = tables.get(ref, {}).get("source") if ref else None
    return f" (from `{source}`)" if isinstance(source, str) else ""


def _metrics(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path)) if path.is_file() else []


def _iterations(metrics: list[dict[str, Any]], kind: str) -> str:
    steps = [r["step"] for r in metrics if isinstance(r.get("step"), int)]
    if not steps:
        return ""
    if any("iteration" in r for r in metrics):
        return f"iterations: {max(steps)}"
    return f"optimizer steps: {max(steps)}"


def _measured(metrics: list[dict[str, Any]]) -> list[str]:
    """Eval reward before and after (the alignment loop), or the trainer's eval figures."""
    evals = [r for r in metrics if _number(r.get("eval_reward_mean"))]
    lines = []
    if evals:
        first, last = evals[0], evals[-1]
        lines.append(
            f"- eval reward (mean over the held-out prompts, the training reward): "
            f"{first['eval_reward_mean']:.4g} before (step {first['step']}), "
            f"{last['eval_reward_mean']:.4g} after (step {last['step']})"
        )
        if _number(first.get("eval_distinct_2")) and _number(last.get("eval_distinct_2")):
            lines.append(f"- eval distinct-2: {first['eval_distinct_2']:.3g} before, "
                         f"{last['eval_distinct_2']:.3g} after")
    before = _last_with(metrics, "eval_before/")
    after = _last_with(metrics, "eval/")
    for key, value in after.items():
        was = before.get(key.replace("eval/", "eval_before/"))
        lines.append(f"- {key}: {value:.4g}" + (f" (before training: {was:.4g})"
                                                 if _number(was) else ""))
    return lines


def _last_with(metrics: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    for record in reversed(metrics):
        found = {k: v for k, v in record.items() if k.startswith(prefix) and _number(v)}
        if found:
            return found
    return {}


def _verdicts(
    run_dir: Path, tables: Mapping[str, Any], stages: Mapping[str, Any], stage_id: str,
) -> list[str]:
    """What each completed evaluate stage that answered with this model found."""
    lines = []
    for other, table in tables.items():
        if table.get("name", other) != "evaluate" or stages.get(other, {}).get("status") != (
            "completed"
        ):
            continue
        models = table.get("models", [])
        mine = [i for i, m in enumerate(models) if isinstance(m, str) and _stage_ref(m) == stage_id]
        result_file = run_dir / "stages" / other / "eval.json"
        if not mine or not result_file.is_file():
            continue
        result = json.loads(result_file.read_text(encoding="utf-8"))
        labels = [m["label"] for m in result.get("models", [])]
        label = labels[mine[0]] if mine[0] < len(labels) else None
        judge = result.get("judge", {}).get("name", "?")
        for m in result.get("models", []):
            if _number(m.get("mean_reward")):
                lines.append(f"- `{other}` stage, judge `{judge}`: {m['label']} mean reward "
                             f"{m['mean_reward']:.4g} over {result.get('num_prompts')} prompts")
        for c in result.get("comparisons", []):
            if label not in (c.get("a"), c.get("b")):
                continue
            lines.append(
                f"- `{other}` stage, judge `{judge}`: win rate of {c['a']} over {c['b']} "
                f"{c['win_rate']:.3g} ({round(100 * c['ci_level'])}% interval "
                f"{c['ci_low']:.3g}-{c['ci_high']:.3g}; {c['wins']} wins, {c['losses']} "
                f"losses, {c['ties']} ties; sign test p = {c['sign_test_p']:.3g})"
                + (f"; length-controlled (win rate at equal answer length) "
                   f"{c['lc_win_rate']:.3g} ({c['lc_ci_low']:.3g}-{c['lc_ci_high']:.3g})"
                   if _number(c.get("lc_win_rate")) else "")
            )
    return lines


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _toml(value: Mapping[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(dict(value))


def _inline(options: Mapping[str, Any]) -> str:
    return ", ".join(f"`{k} = {_toml({'v': v}).partition('=')[2].strip()}`"
                     for k, v in options.items())
