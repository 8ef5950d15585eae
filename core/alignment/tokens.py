"""The sampled tokens that make up a cleaned response.

Token-level algorithms (PPO, GRPO, RLOO, ...) train on the policy's own sampled tokens, and a
KL estimate stays honest only if those are exactly the sampled ones. A cleaner that cuts the
text (at the next `###Human` turn, say) leaves a prefix of the tokens; this finds it.
"""

from __future__ import annotations

from typing import Any


def cut_to_clean_text(
    tokenizer: Any, ids: list[int], raw: str, cleaned: str
) -> tuple[list[int], str]:
    """The sampled tokens that make up `cleaned`, and how they were found.

    `cleaned` normally lies inside `raw` (cleaners cut and strip). Then the response keeps the
    shortest prefix of its tokens that decodes past the end of the cleaned text ("cut"); when
    only whitespace follows, all tokens (EOS included) are kept ("kept"). A cleaner that
    rewrote the text leaves no such prefix: the cleaned text is tokenized afresh
    ("retokenized"). When anything but whitespace precedes the cleaned text, the tokens are
    returned uncut with "prefix": a token-level update must drop that sample (its leading
    tokens cannot be removed, and training on them would reward what the cleaner hides).
    """
    start = raw.find(cleaned) if cleaned else 0
    if start < 0:
        return tokenizer(cleaned, add_special_tokens=False)["input_ids"], "retokenized"
    if raw[:start].strip():
        return list(ids), "prefix"
    end = start + len(cleaned)
    if not raw[end:].strip():
        return list(ids), "kept"
    lo, hi = 0, len(ids)
    while lo < hi:  # smallest k whose decoded prefix reaches `end` (length grows with k)
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= end:
            hi = mid
        else:
            lo = mid + 1
    return list(ids[:lo]), "cut"
