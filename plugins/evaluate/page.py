"""The side-by-side HTML page of `rlhfx eval`: the verdict, then every prompt with each model's
answer and reward. Model output is escaped, never markup."""

from __future__ import annotations

from html import escape
from typing import Any

from rlhfx.plugins.report.render import PAGE_STYLE, episode_html

# Wider: one column per model.
STYLE = PAGE_STYLE + """
body { max-width: 1400px; }
td.text { max-width: 30em; }
td.best { background: #eaf6ec; }
"""


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if isinstance(value, float) else escape(str(value))


def _equal_length(c: dict[str, Any]) -> str:
    if c.get("lc_win_rate") is None:
        return "—"
    return f"{c['lc_win_rate']:.3f} ({c['lc_ci_low']:.3f} – {c['lc_ci_high']:.3f})"


def _prompt_cell(prompt: str) -> str:
    from rlhfx.plugins.report.render import conversation_html

    return f'<td class="text">{conversation_html(prompt)}</td>'


def render(result: dict[str, Any]) -> str:
    labels = [m["label"] for m in result["models"]]
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>rlhfx eval</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>rlhfx eval</h1>",
        f'<p class="meta">{result["num_prompts"]} prompts from '
        f'<code>{escape(str(result.get("prompts", "")))}</code> · judge '
        f'<code>{escape(str(result.get("judge", "")))}</code></p>',
        '<table id="models"><thead><tr><th>model</th><th>source</th><th>mean reward</th>'
        "<th>scored</th><th>discarded</th><th>ended by itself</th><th>mean length (characters)"
        "</th></tr></thead><tbody>",
    ]
    for m in result["models"]:
        out.append(
            f"<tr><td>{escape(m['label'])}</td><td><code>{escape(m['source'])}</code></td>"
            f'<td class="num">{_num(m["mean_reward"])}</td><td class="num">{m["scored"]}</td>'
            f'<td class="num">{m["discarded"]}</td>'
            f'<td class="num">{_num(m.get("finished_rate"))}</td>'
            f'<td class="num">{_num(m.get("mean_length"))}</td></tr>'
        )
    out.append("</tbody></table>")
    if result["comparisons"]:
        out.append(
            '<table id="comparisons"><thead><tr><th>A</th><th>B</th><th>A wins</th>'
            "<th>B wins</th><th>ties</th><th>win rate of A</th><th>interval</th>"
            "<th>sign test p</th><th>win rate of A at equal length</th></tr></thead><tbody>"
        )
        for c in result["comparisons"]:
            level = round(100 * c["ci_level"])
            out.append(
                f"<tr><td>{escape(c['a'])}</td><td>{escape(c['b'])}</td>"
                f'<td class="num">{c["wins"]}</td><td class="num">{c["losses"]}</td>'
                f'<td class="num">{c["ties"]}</td><td class="num">{c["win_rate"]:.3f}</td>'
                f'<td class="num">{c["ci_low"]:.3f} – {c["ci_high"]:.3f} ({level}%)</td>'
                f'<td class="num">{_num(c["sign_test_p"], 3)}</td>'
                f'<td class="num">{_equal_length(c)}</td></tr>'
            )
        out.append("</tbody></table>")
        out.append('<p class="meta">A tie counts as half a win; the interval is a paired '
                   "bootstrap over prompts; the sign test leaves ties out. A discarded answer "
                   "loses to any scored one. At equal length: the win rate a logistic fit of "
                   "the outcomes on the answers' length difference predicts where the lengths "
                   "are equal, with its bootstrap interval.</p>")
    head = "".join(f"<th>{escape(label)}</th><th>reward</th>" for label in labels)
    out.append(f'<table id="answers"><thead><tr><th>prompt</th>{head}</tr></thead><tbody>')
    for row in result["rows"]:
        rewards = [row["answers"][label]["reward"] for label in labels]
        scored = [r for r in rewards if r is not None]
        best = max(scored) if len(scored) > 1 and len(set(scored)) > 1 else None
        cells = [_prompt_cell(row["prompt"])]
        for label in labels:
            answer = row["answers"][label]
            css = "text best" if best is not None and answer["reward"] == best else "text"
            if answer.get("turns"):  # an episode: turn by turn
                text = episode_html(answer["turns"], answer.get("episode_end"))
            else:
                text = escape(answer["response"] if not answer["discarded"] else answer["raw"])
            if answer["discarded"]:
                text += f' <span class="tag">discarded: {escape(answer["discarded"])}</span>'
            if answer.get("finished") is False:
                text += ' <span class="tag">cut at the length limit</span>'
            cells.append(f'<td class="{css}">{text}</td>')
            cells.append(f'<td class="num">{_num(answer["reward"])}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></body></html>")
    return "\n".join(out)
