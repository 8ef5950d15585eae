"""Write the quickstart's preference pairs and prompt sets from `quickstart_topics.py` and
templates (not part of the package, which ships the files this writes).

    python tools/make_quickstart_data.py          # rewrites plugins/quickstart/data/

Each pair puts a helpful answer (a topic's short or long answer) against one unhelpful kind:
evasive, rude, off-topic, repetitive, junk-filled, or unfinished (a helpful answer cut off
mid-sentence, as by a length limit). Lengths are balanced pair by pair (the chosen answer is
the longer one in about half of the pairs, in every kind where the kind allows it), so a
reward model cannot win on length; the off-topic answers are fluent, helpful answers
to another question, so it must read the prompt. A quarter of the topics are held out: their
pairs measure the reward model's accuracy and their questions are the evaluation prompts.
Deterministic: the same code writes the same files (a test checks the committed ones).
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from quickstart_topics import EVAL_ONLY, TOPICS, Topic

from rlhfx.plugins.quickstart import (
    DATA_DIR,
    EVAL_PROMPTS,
    HELD_OUT_PAIRS,
    TRAIN_PAIRS,
    TRAIN_PROMPTS,
)

SEED = 20261123
HELD_OUT_FRACTION = 0.25
KINDS = ("evasive", "rude", "off_topic", "repetitive", "junk", "unfinished")
#: The kinds `make_pairs` draws from; "unfinished" pairs come from `unfinished_pairs`.
BAD_KINDS = KINDS[:-1]
#: Pairs per topic: one of each kind, plus this many of kinds drawn at random.
EXTRA_PAIRS_TRAIN, EXTRA_PAIRS_HELD_OUT = 1, 0
MULTI_TURN_FRACTION = 0.25

GREETINGS = [
    ("Hi there, can I ask you something?", "Of course! What would you like to know?"),
    ("Hello! I need some advice.", "Happy to help. What's on your mind?"),
    ("Hey, quick question for you.", "Sure, go ahead."),
]
FOLLOW_UPS = ["Thanks! Another question: ", "Great, that helps. ", "Okay. Different topic: ", ""]

EVASIVE_SHORT = [
    "I'm not sure about that one.",
    "Hard to say, really.",
    "You could probably find that online somewhere.",
    "That depends.",
    "I'd rather not get into {subject}.",
    "Maybe ask someone else about {subject}.",
    "There's no simple answer to that.",
    "I don't really know much about {subject}, sorry.",
    "Good question. I'll leave that one to you.",
]
EVASIVE_SENTENCES = [
    "That's an interesting question, and people have many different opinions about {subject}.",
    "It really depends on your situation and what you're hoping to get out of it.",
    "Some people swear by one approach, while others prefer something else entirely.",
    "I wouldn't want to point you in the wrong direction.",
    "There are a lot of factors involved, and it's hard to give a general answer.",
    "You might want to do some more research before deciding anything.",
    "In the end, only you can decide what works best for you.",
    "Everyone's experience with {subject} is a little different.",
    "It's one of those things where the details matter a great deal.",
    "Whatever you choose, take your time and see how it goes.",
    "{Subject} is a topic a lot of people wonder about.",
    "I hope that gives you something to think about!",
]
RUDE_SHORT = [
    "Seriously? Look it up yourself.",
    "That's a pretty dumb question.",
    "Why are you asking me? Figure it out.",
    "Ugh, not {subject} again. Next question.",
    "Nobody cares about {subject}.",
    "Do I look like a search engine?",
    "Work it out on your own, it's not hard.",
    "Wow. You really don't know that?",
]
RUDE_SENTENCES = [
    "Honestly, I can't believe someone would need help with {subject}.",
    "This is the kind of thing a child could figure out in five minutes.",
    "I'm not going to hold your hand through it.",
    "Maybe try thinking for once before asking.",
    "People ask me about {subject} all the time and it gets old fast.",
    "If you can't manage this, I don't know what to tell you.",
    "Stop wasting my time with questions like this.",
    "Go bother someone else.",
]
RUDE_WRAPPERS = [  # rude, though the content is right: tone matters too
    ("Ugh, fine. ", " Now stop bothering me."),
    ("Obviously: ", " Everyone knows that."),
    ("Took you long enough to ask. ", " Try to remember it this time."),
]
JUNK_TOKENS = ["###", "#", ":)", ";)", "!!!", "lol", "~~~", "^^", "xD", ":D", "$$$", "@@",
               "...", "???", "thanks!!", "<3", "*****", "zzz", "qwx", "&&"]
BRIDGES = ["", "", "Good question! ", "Here's a tip: ", "Sure. "]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, topic: Topic) -> str:
    return template.format(subject=topic.subject, Subject=_cap(topic.subject))


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


# ------------------------------------------------------------------------------ bad answers


def evasive(topic: Topic, rng: random.Random) -> list[str]:
    short = [_fill(t, topic) for t in rng.sample(EVASIVE_SHORT, 2)]
    long = [
        " ".join(_fill(s, topic) for s in rng.sample(EVASIVE_SENTENCES, n)) for n in (3, 4, 6)
    ]
    return short + long


def rude(topic: Topic, rng: random.Random) -> list[str]:
    short = [_fill(t, topic) for t in rng.sample(RUDE_SHORT, 2)]
    rant = " ".join(_fill(s, topic) for s in rng.sample(RUDE_SENTENCES, rng.randint(3, 5)))
    head, tail = rng.choice(RUDE_WRAPPERS)
    return [*short, rant, head + topic.short + tail]


def off_topic(topic: Topic, others: Sequence[Topic], rng: random.Random) -> list[str]:
    other = rng.sample([t for t in others if t is not topic], 2)
    bridge = rng.choice(BRIDGES)
    return [bridge + other[0].short, bridge + other[1].long, other[1].short]


def repetitive(topic: Topic, rng: random.Random) -> list[str]:
    first = _sentences(topic.short)[0]
    words = topic.short.split()
    stutter = " ".join(w + " " + w if rng.random() < 0.4 else w for w in words)
    loop_word = rng.choice(["I think that", "you should", "it is", "the best way is"])
    climb = f"{_cap(topic.subject)} is important. It is very important. " + " ".join(
        "It is " + ", ".join(["very"] * k) + " important." for k in range(2, rng.randint(4, 6))
    )
    return [
        " ".join([first] * rng.randint(3, 5)),
        " ".join(["Sure!"] * rng.randint(2, 6)) + " " + first,
        stutter,
        " ".join([loop_word] * rng.randint(4, 9)) + ".",
        climb,
    ]


def junk(topic: Topic, rng: random.Random) -> list[str]:
    def sprinkle(text: str, rate: float) -> str:
        out = []
        for word in text.split():
            out.append(word)
            if rng.random() < rate:
                out.append(rng.choice(JUNK_TOKENS))
        return " ".join(out)

    noise = " ".join(rng.choice(JUNK_TOKENS) for _ in range(rng.randint(4, 10)))
    wrap = f"{rng.choice(JUNK_TOKENS)} Sure!!! {topic.short} {rng.choice(JUNK_TOKENS)} " + " ".join(
        rng.choice(JUNK_TOKENS) for _ in range(rng.randint(2, 5))
    )
    return [sprinkle(topic.short, 0.3), sprinkle(topic.long, 0.2), noise, wrap]


def bad_answers(kind: str, topic: Topic, others: Sequence[Topic], rng: random.Random) -> list[str]:
    makers: dict[str, Callable[[], list[str]]] = {
        "evasive": lambda: evasive(topic, rng),
        "rude": lambda: rude(topic, rng),
        "off_topic": lambda: off_topic(topic, others, rng),
        "repetitive": lambda: repetitive(topic, rng),
        "junk": lambda: junk(topic, rng),
    }
    return makers[kind]()


# ------------------------------------------------------------------------------ prompts


def hh_prompt(turns: Sequence[tuple[str, str]], question: str) -> str:
    """Dahoas layout: earlier (human, assistant) turns, then the question, ending in
    "Assistant:" where the answer goes."""
    text = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns)
    return f"{text}\n\nHuman: {question}\n\nAssistant:"


def context(topic: Topic, others: Sequence[Topic], rng: random.Random) -> list[tuple[str, str]]:
    """Earlier turns for a multi-turn prompt: a greeting, or a finished exchange on another
    topic (whose answer is then a tempting off-topic reply)."""
    if rng.random() < MULTI_TURN_FRACTION:
        if rng.random() < 0.4:
            return [rng.choice(GREETINGS)]
        other = rng.choice([t for t in others if t is not topic])
        return [(rng.choice(other.questions), other.short)]
    return []


# ------------------------------------------------------------------------------ pairs


def choose(good: Sequence[str], bad: Sequence[str], chosen_longer: bool, rng: random.Random):
    """A (chosen, rejected) pair whose length order matches `chosen_longer` when possible."""
    combos = [(g, b) for g in good for b in bad if g != b]
    fitting = [(g, b) for g, b in combos if (len(g) > len(b)) == chosen_longer]
    return rng.choice(fitting or combos)


def make_pairs(topics: Sequence[Topic], extra: int, rng: random.Random) -> list[dict]:
    rows = []
    for topic in topics:
        kinds = [*BAD_KINDS, *rng.sample(BAD_KINDS, extra)]
        for n, kind in enumerate(kinds):
            question = topic.questions[n % len(topic.questions)]
            turns = context(topic, topics, rng)
            bad = bad_answers(kind, topic, topics, rng)
            if kind == "off_topic" and turns and turns[0][1] != topic.short:
                bad.append(turns[0][1])  # the answer to the earlier question
            chosen, rejected = choose([topic.short, topic.long], bad, rng.random() < 0.5, rng)
            rows.append({
                "prompt": hh_prompt(turns, question),
                "chosen": " " + chosen,
                "rejected": " " + rejected,
                "kind": kind,
                "topic": topic.subject,
            })
    rng.shuffle(rows)
    return rows


def cut_mid_sentence(text: str, min_chars: int, rng: random.Random) -> str:
    """`text` stopped mid-sentence past `min_chars` characters, as an answer looks when it runs
    into a length limit: after a word that does not end a sentence, sometimes inside a word."""
    words = text.split()
    ends = [n for n in range(1, len(words))  # cut after words[:n]
            if len(" ".join(words[:n])) > min_chars and not words[n - 1].endswith((".", "!", "?"))]
    n = rng.choice(ends or [len(words) - 1])
    cut = " ".join(words[:n])
    if rng.random() < 0.3 and len(words[n]) > 3:
        cut += " " + words[n][: rng.randint(1, len(words[n]) - 2)]
    return cut


def unfinished_pairs(topics: Sequence[Topic], seed: int) -> list[dict]:
    """Two pairs a topic, each a whole answer against the long answer cut off mid-sentence:
    the whole long answer against an early cut of itself, and a longer cut against either the
    whole short answer or the long answer's first sentences (alternately). They teach a reward
    model to prefer an answer that ends over one stopped by a length limit, whichever is longer.
    Their own random stream, so that the other pairs do not change with them."""
    rng = random.Random(seed)
    rows = []
    for n, topic in enumerate(topics):
        long_sentences = _sentences(topic.long)
        opening = " ".join(long_sentences[: max(1, len(long_sentences) // 2)])
        shorter_whole = topic.short if n % 2 or opening == topic.long else opening
        for chosen, rejected in (
            (topic.long, cut_mid_sentence(topic.long, len(topic.long) // 3, rng)),
            (shorter_whole, cut_mid_sentence(topic.long, len(shorter_whole) + 10, rng)),
        ):
            question = topic.questions[rng.randrange(len(topic.questions))]
            rows.append({
                "prompt": hh_prompt(context(topic, topics, rng), question),
                "chosen": " " + chosen,
                "rejected": " " + rejected,
                "kind": "unfinished",
                "topic": topic.subject,
            })
    return rows


def with_unfinished(pairs: list[dict], topics: Sequence[Topic], seed: int) -> list[dict]:
    """`pairs` with the topics' unfinished pairs put in at random places (the others keep
    their order)."""
    rng = random.Random(seed)
    rows = list(pairs)
    for row in unfinished_pairs(topics, seed + 1):
        rows.insert(rng.randint(0, len(rows)), row)
    return rows


def make_prompts(topics: Sequence[Topic], rng: random.Random) -> list[dict]:
    rows = [
        {"prompt": hh_prompt(context(t, topics, rng), q), "question": q, "topic": t.subject}
        for t in topics
        for q in t.questions
    ]
    rng.shuffle(rows)
    return rows


def eval_only_prompts(seed: int) -> list[dict]:
    """Prompts of the questions that have no pairs, after the held-out topics' ones, with an
    opening greeting in about as many as the other prompts have earlier turns. Their own
    random stream, so the other files do not change with them."""
    rng = random.Random(seed)
    rows = []
    for subject, question in EVAL_ONLY:
        turns = [rng.choice(GREETINGS)] if rng.random() < MULTI_TURN_FRACTION else []
        rows.append({"prompt": hh_prompt(turns, question), "question": question,
                     "topic": subject})
    rng.shuffle(rows)
    return rows


def split_topics(rng: random.Random) -> tuple[list[Topic], list[Topic]]:
    order = list(TOPICS)
    rng.shuffle(order)
    cut = round(len(order) * HELD_OUT_FRACTION)
    return order[cut:], order[:cut]


def build() -> dict[Path, list[dict]]:
    """Every file's rows, computed (nothing written)."""
    rng = random.Random(SEED)
    train, held_out = split_topics(rng)
    return {
        TRAIN_PAIRS: with_unfinished(make_pairs(train, EXTRA_PAIRS_TRAIN, rng), train, SEED + 2),
        HELD_OUT_PAIRS: with_unfinished(make_pairs(held_out, EXTRA_PAIRS_HELD_OUT, rng),
                                        held_out, SEED + 4),
        TRAIN_PROMPTS: make_prompts(train, rng),
        EVAL_PROMPTS: make_prompts(held_out, rng) + eval_only_prompts(SEED + 1),
    }


def to_jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _longer_share(rows: Sequence[dict]) -> float:
    return sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / max(1, len(rows))


def summary(rows: Sequence[dict]) -> str:
    """Pair count and how often the chosen answer is the longer one, overall and per kind."""
    per_kind = []
    for kind in KINDS:
        of_kind = [r for r in rows if r["kind"] == kind]
        per_kind.append(f"{kind} {len(of_kind)} ({_longer_share(of_kind):.2f})")
    return (f"{len(rows)} pairs, chosen longer in {_longer_share(rows):.2f}; "
            f"per kind (chosen longer): {', '.join(per_kind)}")


def main(argv: Sequence[str] = ()) -> int:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for path, rows in build().items():
        path.write_text(to_jsonl(rows), encoding="utf-8")
        line = summary(rows) if "chosen" in rows[0] else f"{len(rows)} prompts"
        print(f"{path.name}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
