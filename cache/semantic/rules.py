"""Hard cues that change the answer: numbers, code identifiers, and small edits.

A learned verifier weighs words; these cues are facts it must not weigh away: "Python 3.8"
and "Python 3.12", "2 pm" and "4 pm", `rm -r` and `rm -f` need different answers however
alike the rest of the question is. Digits of every script count (Arabic-Indic, Devanagari,
full-width), so the rule holds beyond English. And two questions that differ in one or two
words only differ in what is asked ("turn on" / "turn off"), unless the change is a typo.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from difflib import SequenceMatcher

# A run of digits, with inner separators ("3.12", "1,000", "14:30").
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
# Code-like tokens: quoted or backticked text, flags, and identifiers with inner
# punctuation or mixed case (user_id, os.path, replaceAll, --force, -rf).
_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|“([^”]+)”")
_IDENTIFIER = re.compile(
    r"(?<![\w-])(?:--?[A-Za-z][\w-]*|[A-Za-z_]\w*(?:[._/:]\w+)+|[a-z]+[A-Z]\w*|\w*_\w+)"
)


def _ascii_digits(text: str) -> str:
    """Digits of any script as ASCII digits, so "٣" and "3" are the same number."""
    return "".join(
        str(unicodedata.decimal(ch)) if ch.isdigit() and not ch.isascii() else ch for ch in text
    )


def numbers(text: str) -> Counter[str]:
    return Counter(_NUMBER.findall(_ascii_digits(text)))


def identifiers(text: str) -> Counter[str]:
    quoted = ["".join(groups).strip().lower() for groups in _QUOTED.findall(text)]
    return Counter(quoted + [m.lower() for m in _IDENTIFIER.findall(text)])


_ENDS = " \t\n?.!¿¡？。！"


def same_question(cached_question: str, new_question: str) -> bool:
    """The same text but for case, spacing and the closing mark: one answer fits both
    whatever the classifier scores. (It never saw such pairs: identical questions arrive
    by meaning only when small talk set their conversations apart.)"""

    def norm(text: str) -> str:
        return " ".join(text.casefold().split()).strip(_ENDS)

    return norm(cached_question) == norm(new_question)


def cue_mismatch(cached_question: str, new_question: str) -> str | None:
    """Why the two questions cannot share an answer, or None when no hard cue differs."""
    if numbers(cached_question) != numbers(new_question):
        return "numbers differ"
    if identifiers(cached_question) != identifiers(new_question):
        return "code identifiers or quoted names differ"
    return small_edit(cached_question, new_question)


_WORDS = re.compile(r"\w+")
_APOSTROPHES = re.compile(r"['’]")
_NOT = re.compile(r"n['’]t\b")


def _words(text: str) -> list[str]:
    """Lower-case words, digits as ASCII; "n't" is the word "not" (so "can't" is no typo of
    "can"), other apostrophes are dropped so that "what's" reads as "whats"."""
    return _WORDS.findall(_APOSTROPHES.sub("", _NOT.sub(" not", _ascii_digits(text.lower()))))


def small_edit(cached_question: str, new_question: str) -> str | None:
    """Why two nearly identical questions differ in meaning, or None.

    When the questions are the same words in another order ("can A donate to B" / "can B
    donate to A"), or differ in at most two places of at most two words each ("turn on" /
    "turn off", "Series S" / "Series X", "open" / "close"), the change is what the new
    question asks about, unless it is a slip of the keyboard (one edit in a word of four
    letters or more, two in one of eight or more: "passwrod", "whats" / "what is").
    Questions further apart are rewordings or other questions: the classifier's call.
    """
    a = _words(cached_question)
    b = _words(new_question)
    if a == b:
        return None
    if sorted(a) == sorted(b):
        return "the same words in another order"
    changes = [
        op for op in SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"
    ]
    if len(changes) > MAX_CHANGES or any(
        max(i2 - i1, j2 - j1) > MAX_CHANGED_WORDS for _, i1, i2, j1, j2 in changes
    ):
        return None
    for _, i1, i2, j1, j2 in changes:
        before, after = "".join(a[i1:i2]), "".join(b[j1:j2])
        if not _is_slip(before, after):
            return f"only {' '.join(a[i1:i2]) or '-'!r} / {' '.join(b[j1:j2]) or '-'!r} differ"
    return None


# A "small edit": at most this many changed places of at most this many words each.
MAX_CHANGES = 2
MAX_CHANGED_WORDS = 2


def _is_slip(before: str, after: str) -> bool:
    longest = max(len(before), len(after))
    return longest >= 4 and _edit_distance(before, after) <= (1 if longest < 8 else 2)


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(
                rows[-1][j] + 1,
                row[j - 1] + 1,
                rows[-1][j - 1] + (a[i - 1] != b[j - 1]),
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]
