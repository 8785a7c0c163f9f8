"""What a flatten's follow-up owes the operator: the outcome of each position its last word left open.

A flatten's report (or a follow-up) can leave a position not known closed: its closing order in doubt (the answer
lost), waiting for the exchange's Retry-After, behind an exit still working, failed beside such an exit, or more
closing orders placed. The operator's last word is then that the position is held; once its outcome is known
(nothing held any more, or a failure for good), the follow-up says it, once. A report that was the whole truth (its
closing orders answered filled) owes nothing, so no follow-up repeats it. What is owed is stored with the record that
said it (kv `flatten_owed`), so a start after a stop knows it too."""

from __future__ import annotations

from typing import Any

# What the FLATTEN alert pages for: the answer to such a word pages too, so that it reaches wherever the page went.
PAGED = frozenset({"in_doubt", "waiting", "after_exit", "failed"})
SAID = PAGED | {"closing"}  # "closing": more closing orders placed by a follow-up (a warning)


def loaded(stored: Any) -> dict[str, str]:
    """The owed words as stored (an old record, or none: nothing owed)."""
    if not isinstance(stored, dict):
        return {}
    return {str(sym): str(word) for sym, word in stored.items() if word in SAID}


def said_now(owed: dict[str, str], said: dict[str, str]) -> dict[str, str]:
    """`owed` with what was said now (symbol -> word). A word that paged is kept until answered: a later warning
    of the same position (more closing orders placed) does not make its answer a warning."""
    out = dict(owed)
    for sym, word in said.items():
        if out.get(sym) not in PAGED:
            out[sym] = word
    return out


def answer(owed: dict[str, str], symbol: str, outcome: str) -> list[dict[str, str]]:
    """The answer owed for `symbol`, whose outcome is known now (taken out of `owed`); none when nothing was owed.
    `outcome`: `closed` (a closing order sold it), `gone` (nothing held any more, no closing order known to have
    sold it) or `failed` (still held, said as failed for good)."""
    word = owed.pop(symbol, None)
    return [] if word is None else [{"symbol": symbol, "said": word, "outcome": outcome}]


def pages(answers: list[dict[str, Any]]) -> bool:
    """Whether answers to these words page: one of them paged."""
    return any(a.get("said") in PAGED for a in answers if isinstance(a, dict))
