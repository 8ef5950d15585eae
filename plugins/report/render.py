"""The report page: one HTML file with its figures inlined as base64 PNG, so it opens from disk
(or as an e-mail attachment) with no network and nothing beside it. Every piece of text that
came from the run is escaped: responses are model output and may contain anything.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from .collect import RunData, Snapshot, StageData, training_views
from .figures import Chart

#: The look of rlhfx's HTML pages (this report, `rlhfx eval`'s page): text, tables, tags and
#: conversation turns. A page adds its own rules after it.
PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1d1d1f; line-height: 1.4; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { white-space: pre-wrap; word-break: break-word; max-width: 26em; }
.tag { font-size: 0.8em; background: #fde7e7; color: #c62828; border-radius: 3px;
       padding: 0 0.3em; }
.turn { margin: 0 0 0.3em 0; } .turn:last-child { margin-bottom: 0; }
.role { font-size: 0.8em; font-weight: 600; text-transform: uppercase; color: #555; }
"""

STYLE = PAGE_STYLE + """
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
       margin-top: 2em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; border: 1px solid #eee; padding: 0.4em; flex: 0 1 calc(50% - 1.4em);
         min-width: 0; box-sizing: border-box; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85em; color: #555; margin-top: 0.3em; }
.up { color: #1a7f37; } .down { color: #c62828; }
.status-completed { color: #1a7f37; } .status-running { color: #b26a00; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.88em; }
.role-system .role { color: #8250df; } .role-assistant .role { color: #1a7f37; }
.role-tool .role { color: #b26a00; }
"""

# ----------------------------------------------------------------------------- conversations
# Prompts are often a conversation written in a chat layout. The page shows its turns with
# their roles and hides the layout's markup. Known layouts: ChatML (`<|im_start|>user\n...
# <|im_end|>`), Llama 3 headers, and the HH-RLHF ones (`###Human: ... ###Assistant:` and
# `\n\nHuman: ... \n\nAssistant:`).

_CHATML = re.compile(r"<\|im_start\|>(\w+)\n?(.*?)(?:<\|im_end\|>|(?=<\|im_start\|>)|\Z)", re.S)
_LLAMA3 = re.compile(
    r"<\|start_header_id\|>(\w+)<\|end_header_id\|>(.*?)(?:<\|eot_id\|>|"
    r"(?=<\|start_header_id\|>)|\Z)", re.S,
)
_HH_MARK = re.compile(r"###\s*(Human|Assistant|System)\s*:|(?:^|\n\n)(Human|Assistant|System):")
_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
          "system": "system"}
_STRAY = re.compile(r"<\|begin_of_text\|>|<\|endoftext\|>|</?s>")


def conversation_turns(prompt: str) -> list[tuple[str, str]]:
    """The (role, text) turns of a prompt in a known chat layout; `[("", prompt)]` otherwise.

    Roles are `user`, `assistant` or `system`; the empty assistant turn a generation prompt
    ends with is left out.
    """
    text = str(prompt)
    for pattern in (_CHATML, _LLAMA3):
        found = list(pattern.finditer(text))
        if found:
            turns = [(_role(m[1]), m[2].strip()) for m in found]
            return _without_open_turn(turns)
    marks = list(_HH_MARK.finditer(text))
    if not marks:
        return [("", text)]
    turns = []
    head = _STRAY.sub("", text[: marks[0].start()]).strip()
    if head:
        turns.append(("", head))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        turns.append((_role(m[1] or m[2]), text[m.end():end].strip()))
    return _without_open_turn(turns)


def _role(name: str) -> str:
    return _ROLES.get(name.lower(), name.lower())


def _without_open_turn(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if len(turns) > 1 and turns[-1][0] == "assistant" and not turns[-1][1]:
        turns = turns[:-1]
    return turns


def conversation_html(prompt: str) -> str:
    """A prompt as escaped HTML: one block per turn with its role, or the plain text."""
    turns = conversation_turns(prompt)
    if len(turns) == 1 and not turns[0][0]:
        return escape(turns[0][1])
    return "".join(
        f'<div class="turn role-{escape(role or "text")}">'
        + (f'<span class="role">{escape(role)}:</span> ' if role else "")
        + f"{escape(body)}</div>"
        for role, body in turns
    )


def render(run: RunData, charts: Sequence[Chart], max_samples: int = 50) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rlhfx report: {escape(run.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>rlhfx run: {escape(run.name)}</h1>",
        '<p class="meta">',
        f"Run directory <code>{escape(str(run.directory))}</code> · status "
        f"<b>{escape(run.status)}</b> · report written "
        f"{escape(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
    ]
    if (run.directory / "tensorboard").is_dir():
        parts.append('<p class="meta">TensorBoard has these metrics too: <code>tensorboard '
                     f'--logdir {escape(str(run.directory / "tensorboard"))}</code></p>')
    if run.status != "completed":
        parts.append('<p class="meta">This run has not finished (it may still be going, or it '
                     "was interrupted): the report shows what it had written so far. Run the "
                     "same report command again to update it.</p>")
    parts += _verdict_headline(run)
    parts += _stages_section(run, charts)
    for stage in run.stages:
        parts += _stage_section(stage, [c for c in charts if c.stage == stage.id], max_samples,
                                run)
    parts.append("<h2>Recipe</h2>")
    if run.recipe_text is None:
        parts.append("<p>No <code>recipe.toml</code> in the run directory.</p>")
    else:
        parts.append(f'<pre id="recipe">{escape(run.recipe_text)}</pre>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- sections


def _verdict_in_words(c: dict[str, Any]) -> str:
    """One sentence on a comparison: who the judge prefers and whether the interval says so."""
    a, b = escape(str(c["a"])), escape(str(c["b"]))
    low = float(c["ci_low"]) if _is_num(c.get("ci_low")) else None
    high = float(c["ci_high"]) if _is_num(c.get("ci_high")) else None
    if low is not None and low > 0.5:
        word = f'<b class="up">{a} is better than {b}</b>'
    elif high is not None and high < 0.5:
        word = f'<b class="down">{a} is worse than {b}</b>'
    else:
        word = f"<b>no clear difference between {a} and {b}</b> (the interval includes 0.5)"
    sentence = (f"By the judge, {word}: {a}'s answer wins on {_num(c.get('wins'))} prompts, "
                f"loses on {_num(c.get('losses'))}, ties on {_num(c.get('ties'))}.")
    la, lb = c.get("mean_length_a"), c.get("mean_length_b")
    if _is_num(c.get("lc_win_rate")) and _is_num(la) and _is_num(lb):
        sentence += (f" {a}'s answers average {la:.0f} characters against {b}'s {lb:.0f}; at "
                     f"equal length the judge's fit gives {a} {_num(c['lc_win_rate'])}.")
    return sentence


def _verdict_headline(run: RunData) -> list[str]:
    """The judges' verdicts first: the answer to "did alignment help?" before the details."""
    rows, sentences = [], []
    for stage in run.stages:
        verdict = stage.verdict
        if not verdict:
            continue
        views = training_views(run, stage)
        ended = {m["label"]: m.get("finished_rate") for m in verdict["models"]}
        for c in verdict["comparisons"]:
            if not isinstance(c, dict) or not {"a", "b", "win_rate"} <= set(c):
                continue
            a, b = str(c["a"]), str(c["b"])
            va, vb = views.get(a), views.get(b)
            training = (f"{_num(vb.value)} → {_num(va.value)}"
                        if va is not None and vb is not None else "—")
            rows.append([
                f'<a href="#stage-{escape(stage.id)}">{escape(stage.id)}</a>',
                f"{escape(a)} over {escape(b)}", _num(c["win_rate"]),
                f"{_num(c.get('ci_low'))} – {_num(c.get('ci_high'))}",
                f"{_num(c.get('wins'))} / {_num(c.get('losses'))} / {_num(c.get('ties'))}",
                _num(c.get("sign_test_p")), _num(c.get("n", verdict.get("num_prompts"))),
                _length_controlled(c), training, f"{_num(ended.get(b))} → {_num(ended.get(a))}",
            ])
            sentences.append(f"<li>{_verdict_in_words(c)}</li>")
    if not rows:
        return []
    head = ["stage", "comparison", "judge: win rate", "95% interval", "wins / losses / ties",
            "sign test p", "prompts", "judge at equal length", "training reward: eval mean",
            "answers ended by themselves"]
    return ['<h2 id="verdict">Verdict of the independent judge</h2>',
            f'<ul id="verdict-words">{"".join(sentences)}</ul>',
            _table(head, rows, numeric=frozenset({2, 3, 4, 5, 6, 7, 8, 9}),
                   attrs='id="verdict-summary"'),
            '<p class="meta">The judge is a reward source the alignment never optimised '
            "against; the training reward's column is the view of the reward it did optimise "
            "(its own eval, before and after). Win rate: a tie counts half; interval: paired "
            "bootstrap over prompts; at equal length: the win rate a logistic fit in the "
            "answers' length difference predicts for equally long answers, with its bootstrap "
            "interval (reward-model judges tend to pay for length); the last column is the "
            "share of answers that ended by themselves rather than at the length limit. "
            "Details: each stage's section below.</p>"]


def _stages_section(run: RunData, charts: Sequence[Chart]) -> list[str]:
    rows = []
    for s in run.stages:
        what = s.component + (f" ({s.algorithm})" if s.algorithm else "")
        steps = f"{len(s.records)} records, last step {s.last_step}" if s.records else "—"
        rows.append([
            escape(s.id), escape(what),
            f'<span class="status-{escape(s.status.split()[0])}">{escape(s.status)}</span>',
            _seconds(s.seconds), escape(steps),
            escape(", ".join(f"{k}: {v}" for k, v in s.outputs.items()) or "—"),
        ])
    out = ["<h2>Stages</h2>", _table(
        ["stage", "component", "status", "wall time", "metrics", "outputs"], rows,
        numeric=frozenset({3}), attrs='id="stages"')]
    out += _figures([c for c in charts if c.stage == ""])
    return out


def _stage_section(stage: StageData, charts: Sequence[Chart], max_samples: int,
                   run: RunData | None = None) -> list[str]:
    if stage.unsupported:
        return [f'<h2 id="stage-{escape(stage.id)}">Stage {escape(stage.id)}</h2>',
                f'<p class="meta">{escape(stage.unsupported)}</p>']
    summary = _summary_table(stage)
    rm = _reward_model_table(stage)
    verdict = _verdict_section(stage, run)
    if not (summary or rm or verdict or charts or stage.evals or stage.is_alignment):
        return []
    title = stage.component + (f" with {stage.algorithm}" if stage.algorithm else "")
    out = [f'<h2 id="stage-{escape(stage.id)}">Stage {escape(stage.id)} '
           f"<small>({escape(title)})</small></h2>"]
    if rm:
        out += ["<h3>Reward model accuracy</h3>", rm]
    out += verdict
    if summary:
        out += ["<h3>Before and after</h3>", summary]
    out += _warnings(stage)
    out += _figures(charts)
    if stage.is_alignment:
        out += _samples_section(stage, max_samples)
    return out


#: (label, series, higher is better?) for the before/after table of an alignment stage.
SUMMARY = (
    ("eval reward (mean)", "eval_reward_mean", True),
    ("sample reward (mean)", "reward_mean", True),
    ("reward of the samples trained on (mean)", "trained_reward_mean", True),
    ("distinct-2 (eval)", "eval_distinct_2", True),
    ("distinct-2 (samples)", "distinct_2", True),
    ("distinct-1 (samples)", "distinct_1", True),
    ("discarded share (samples)", "discarded_rate", False),
    ("changed by cleaners (samples)", "changed_rate", None),
    ("KL to reference", "kl_mean", None),
    ("response length (tokens)", "response_tokens_mean", None),
)


def _summary_table(stage: StageData) -> str:
    if not stage.is_alignment:
        return ""
    rows = []
    for label, name, better in SUMMARY:
        points = stage.series(name)
        if not points:
            continue
        (s0, first), (s1, last) = points[0], points[-1]
        change = last - first
        css = ""
        if better is not None and abs(change) > 1e-12:
            css = "up" if (change > 0) == better else "down"
        rows.append([
            escape(label), _num(first), _num(last),
            f'<span class="{css}">{change:+.4g}</span>' if len(points) > 1 else "—",
            escape(f"{s0} → {s1}"),
        ])
    if not rows:
        return ""
    return _table(["figure", "first", "last", "change", "steps"], rows,
                  numeric=frozenset({1, 2, 3}), attrs=f'id="summary-{escape(stage.id)}"')


def _warnings(stage: StageData) -> list[str]:
    """What the stage's own guards flagged (RAFT: distinct-2 collapsing, cleaners busier)."""
    items = [
        f"<li>step {record['step']}: {escape(str(message))}</li>"
        for record in stage.records
        if isinstance(record.get("warnings"), list)
        for message in record["warnings"]
    ]
    if not items:
        return []
    return ["<h3>Warnings</h3>", f'<ul id="warnings-{escape(stage.id)}">', *items, "</ul>"]


def _reward_model_table(stage: StageData) -> str:
    rm = stage.rm_eval
    if not rm:
        return ""
    rows = []
    for key, label in (("before", "before training"), ("after", "after training")):
        result = rm.get(key)
        if isinstance(result, dict):
            interval = "—"
            if _is_num(result.get("ci_low")) and _is_num(result.get("ci_high")):
                interval = f"{_num(result['ci_low'])} – {_num(result['ci_high'])}"
            rows.append([escape(label), _num(result.get("accuracy")), interval,
                         _num(result.get("mean_margin")), _num(result.get("pairs"))])
    counts = ", ".join(f"{k.replace('_', ' ')}: {rm[k]}" for k in
                       ("train_pairs", "validation_pairs", "train_pairs_over_max_length")
                       if isinstance(rm.get(k), int))
    table = _table(["when", "pairwise accuracy", "95% interval", "mean margin",
                    "held-out pairs"], rows,
                   numeric=frozenset({1, 2, 3, 4}), attrs=f'id="rm-{escape(stage.id)}"')
    note = ("<p class=\"meta\">Share of held-out preference pairs where the model scores the "
            "preferred answer higher" + (f" ({escape(counts)})" if counts else "") + ".</p>")
    return table + note


def _judge_name(judge: Any) -> str:
    """`reward_model (model = .../judge/model)`: the judge table in a few words."""
    if not isinstance(judge, dict):
        return str(judge or "?")
    options = ", ".join(f"{k} = {v}" for k, v in judge.items() if k != "name")
    return f"{judge.get('name', '?')}" + (f" ({options})" if options else "")


def _verdict_section(stage: StageData, run: RunData | None) -> list[str]:
    """A judge's verdict (an eval.json in the stage): each comparison's win rate with its
    interval and the judge's mean rewards, beside the training reward's eval figures for the
    same models when an alignment stage of the run produced them."""
    verdict = stage.verdict
    if not verdict:
        return []
    means = {m["label"]: m.get("mean_reward") for m in verdict["models"]}
    views = training_views(run, stage) if run is not None else {}
    head = ["comparison", "win rate", "interval", "wins / losses / ties", "sign test p",
            "at equal length", "judge: mean reward", "training reward: eval mean"]
    rows = []
    for c in verdict["comparisons"]:
        if not isinstance(c, dict) or not {"a", "b", "win_rate"} <= set(c):
            continue
        a, b = str(c["a"]), str(c["b"])
        level = c.get("ci_level")
        shown = f" ({round(100 * level)}%)" if isinstance(level, float) and _is_num(level) else ""
        interval = f"{_num(c.get('ci_low'))} – {_num(c.get('ci_high'))}{shown}"
        va, vb = views.get(a), views.get(b)
        training = "—"
        if va is not None and vb is not None:
            training = (f"{_num(vb.value)} → {_num(va.value)} "
                        f"<small>({escape(va.stage)}, step {vb.step} → {va.step})</small>")
        rows.append([
            f"{escape(a)} over {escape(b)}", _num(c["win_rate"]), interval,
            f"{_num(c.get('wins'))} / {_num(c.get('losses'))} / {_num(c.get('ties'))}",
            _num(c.get("sign_test_p")), _length_controlled(c),
            f"{_num(means.get(b))} → {_num(means.get(a))}", training,
        ])
    models = [[escape(str(m["label"])), f"<code>{escape(str(m.get('source', '')))}</code>",
               _num(m.get("mean_reward")), _num(m.get("scored")), _num(m.get("discarded")),
               _num(m.get("finished_rate")), _num(m.get("mean_length"))]
              for m in verdict["models"]]
    out = ["<h3>Verdict of the judge</h3>",
           f'<p class="meta">{_num(verdict.get("num_prompts"))} prompts, each answered once by '
           f"every model; judge <code>{escape(_judge_name(verdict.get('judge')))}</code>.</p>"]
    if rows:
        out.append(_table(head, rows, numeric=frozenset({1, 2, 3, 4, 5, 6, 7}),
                          attrs=f'id="verdict-{escape(stage.id)}"'))
        out.append('<p class="meta">Win rate: share of prompts where the first model\'s '
                   "answer scores higher under the judge (a tie counts half, a discarded answer "
                   "loses to any scored one); interval: paired bootstrap over prompts. The last "
                   "column is the view of the reward the alignment stage optimised: its mean "
                   "on that stage's own eval answers before and after alignment.</p>")
    out.append(_table(["model", "source", "judge: mean reward", "scored", "discarded",
                       "ended by itself", "mean length (characters)"], models,
                      numeric=frozenset({2, 3, 4, 5, 6}),
                      attrs=f'id="verdict-models-{escape(stage.id)}"'))
    if stage.directory is not None and (stage.directory / "eval.html").exists():
        out.append(f'<p class="meta">Every answer side by side: <code>'
                   f"{escape(str(stage.directory / 'eval.html'))}</code></p>")
    return out


def _length_controlled(c: dict[str, Any]) -> str:
    """The win rate at equal answer length with its interval; "—" for older results."""
    if not _is_num(c.get("lc_win_rate")):
        return "—"
    return (f"{_num(c['lc_win_rate'])} [{_num(c.get('lc_ci_low'))} – "
            f"{_num(c.get('lc_ci_high'))}]")


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _figures(charts: Sequence[Chart]) -> list[str]:
    if not charts:
        return []
    out = ['<div class="figures">']
    for chart in charts:
        data = base64.b64encode(chart.path.read_bytes()).decode("ascii")
        out.append(
            f'<figure><img class="figure" alt="{escape(chart.title)}" '
            f'data-file="{escape(chart.path.name)}" src="data:image/png;base64,{data}">'
            + (f"<figcaption>{escape(chart.caption)}</figcaption>" if chart.caption else "")
            + "</figure>"
        )
    out.append("</div>")
    return out


# ----------------------------------------------------------------------------- samples


def _samples_section(stage: StageData, max_samples: int) -> list[str]:
    if stage.evals:
        first, last = stage.evals[0], stage.evals[-1]
        out = ["<h3>Eval prompts before and after</h3>"]
        if first is last:
            out.append(f'<p class="meta">Only one evaluation so far (step {first.step}).</p>')
        else:
            out.append(f'<p class="meta">The policy\'s responses to the held-out eval prompts '
                       f"at step {first.step} (before alignment) and step {last.step}, with "
                       f"their rewards.</p>")
        return [*out, _paired(stage, first, last, max_samples, "eval")]
    samples = stage.samples
    if not samples:
        return ["<h3>Eval prompts before and after</h3>",
                "<p>No responses recorded yet (no eval or sample files).</p>"]
    first, last = samples[0], samples[-1]
    out = ["<h3>Training samples, first and last step</h3>",
           '<p class="meta">This stage wrote no eval responses, so these are the responses '
           f"sampled for training at step {first.step} and step {last.step}.</p>"]
    if _shared_prompts(first, last) >= 0.5:
        return [*out, _paired(stage, first, last, max_samples, "samples")]
    return [*out, _side_by_side(stage, first, last, max_samples)]


def _reward(row: dict[str, Any]) -> Any:
    return row.get("reward", row.get("score"))


def _response_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return '<td class="text">—</td>'
    tag = ' <span class="tag">discarded</span>' if row.get("discarded") else ""
    turns = row.get("turns")
    if isinstance(turns, list) and turns:
        return f'<td class="text">{episode_html(turns, row.get("episode_end"))}{tag}</td>'
    return f'<td class="text">{escape(str(row.get("response", "")))}{tag}</td>'


def episode_html(turns: Sequence[Any], end: Any = None) -> str:
    """An episode turn by turn: the model's replies and what the environment answered, with
    each answer's reward and how its tool call went."""
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("role") or "text")
        notes = []
        if isinstance(turn.get("tool"), str):
            notes.append(f"tool: {turn['tool']}")
        if isinstance(turn.get("reward"), int | float) and turn["reward"]:
            notes.append(f"reward {_num(float(turn['reward']))}")
        note = f' <span class="meta">({escape(", ".join(notes))})</span>' if notes else ""
        out.append(f'<div class="turn role-{escape(role)}"><span class="role">'
                   f'{escape(role)}:</span> {escape(str(turn.get("text", "")))}{note}</div>')
    if end:
        out.append(f'<div class="turn meta">episode ended: {escape(str(end))}</div>')
    return "".join(out)


def _shared_prompts(a: Snapshot, b: Snapshot) -> float:
    prompts = {r.get("prompt") for r in b.rows}
    return sum(r.get("prompt") in prompts for r in a.rows) / max(len(a.rows), 1)


def _paired(stage: StageData, first: Snapshot, last: Snapshot, limit: int, kind: str) -> str:
    """One row per prompt: before and after side by side (a prompt sampled k times pairs the
    i-th sample before with the i-th after)."""
    later: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in last.rows:
        later[row.get("prompt")].append(row)
    single = first is last
    head = ["prompt", f"response at step {first.step}", "reward"]
    if not single:
        head += [f"response at step {last.step}", "reward", "change"]
    body = []
    for row in first.rows[:limit]:
        waiting = later[row.get("prompt")]
        after = waiting.pop(0) if waiting and not single else None
        cells = [f'<td class="text">{conversation_html(str(row.get("prompt", "")))}</td>',
                 _response_cell(row), f'<td class="num">{_num(_reward(row))}</td>']
        if not single:
            delta = _delta(_reward(row), _reward(after) if after else None)
            cells += [_response_cell(after),
                      f'<td class="num">{_num(_reward(after) if after else None)}</td>',
                      f'<td class="num">{delta}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    foot = [["mean reward", "", _num(_mean(_reward(r) for r in first.rows))]]
    if not single:
        foot[0] += ["", _num(_mean(_reward(r) for r in last.rows)), ""]
    return _raw_table(head, body, foot, f'id="{kind}-{escape(stage.id)}" class="samples"',
                      more=len(first.rows) - limit)


def _side_by_side(stage: StageData, first: Snapshot, last: Snapshot, limit: int) -> str:
    head = [f"prompt at step {first.step}", "response", "reward",
            f"prompt at step {last.step}", "response", "reward"]
    body = []
    for i in range(min(limit, max(len(first.rows), len(last.rows)))):
        cells = []
        for snap in (first, last):
            row = snap.rows[i] if i < len(snap.rows) else None
            prompt = conversation_html(str(row.get("prompt", ""))) if row else "—"
            cells += [f'<td class="text">{prompt}</td>', _response_cell(row),
                      f'<td class="num">{_num(_reward(row) if row else None)}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    foot = [["mean reward", "", _num(_mean(_reward(r) for r in first.rows)),
             "", "", _num(_mean(_reward(r) for r in last.rows))]]
    return _raw_table(head, body, foot, f'id="samples-{escape(stage.id)}" class="samples"',
                      more=max(len(first.rows), len(last.rows)) - limit)


# ----------------------------------------------------------------------------- helpers


def _table(head: list[str], rows: Iterable[list[str]], numeric: frozenset[int] = frozenset(),
           attrs: str = "") -> str:
    body = [
        "<tr>" + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        ) + "</tr>"
        for row in rows
    ]
    return _raw_table([escape(h) for h in head], body, [], attrs)


def _raw_table(head: list[str], body: list[str], foot: list[list[str]], attrs: str,
               more: int = 0) -> str:
    out = [f"<table {attrs}>", "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead>", "<tbody>", *body, "</tbody>"]
    if foot:
        out.append("<tfoot>" + "".join(
            "<tr>" + "".join(f"<th>{c}</th>" for c in row) + "</tr>" for row in foot
        ) + "</tfoot>")
    out.append("</table>")
    if more > 0:
        out.append(f'<p class="meta">… and {more} more (see the files in the stage '
                   "directory, or raise --max-samples).</p>")
    return "\n".join(out)


def _num(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "—"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return escape(str(value))


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _mean(values: Iterable[Any]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(xs) / len(xs) if xs else None


def _delta(before: Any, after: Any) -> str:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (before, after)):
        return "—"
    change = float(after) - float(before)
    css = "up" if change > 0 else "down" if change < 0 else ""
    return f'<span class="{css}">{change:+.4g}</span>'
