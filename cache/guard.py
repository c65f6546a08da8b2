"""The semantic cache's guard: rejects a near neighbour that would need a different answer.

Embedding similarity cannot tell "flights to Paris" from "flights to Lyon": near misses score
higher than true paraphrases. After the nearest-neighbour search the cache asks this guard,
which compares what carries the answer in the two questions (numbers and units, negation,
names and code tokens, opposite words, times, roles around "to"/"from", and any content word
that one question has and the other lacks) and says no when they differ.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType

from cache import guard_cues as cues
from cache import guard_lexicon as lex
from cache.guard_text import Number, Reading, is_known_word, read_question, stem
from cache.semantic_defaults import DEFAULT_REWORDED_MIN_SIMILARITY

__all__ = ["GuardVerdict", "guard_allows", "guard_check"]

_DROPPABLE_STEMS = MappingProxyType(
    {
        form: name
        for name, words in lex.DROPPABLE_CLASSES.items()
        for w in words
        for form in (w, stem(w))
    }
)


def _opposites() -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for x, y in cues.ANTONYM_PAIRS:
        x, y = lex.SYNONYMS.get(x, x) or x, lex.SYNONYMS.get(y, y) or y
        out.setdefault(x, set()).add(y)
        out.setdefault(y, set()).add(x)
    return {k: frozenset(v) for k, v in out.items()}


_OPPOSITES = MappingProxyType(_opposites())
# Which kinds of question one answer can serve ("what's the way to" was already read as
# "how to"): "how do I" and "where can I" ask for the same steps, "what is X" does not;
# "why", "who" and yes/no questions stand alone.
_COMPATIBLE_FORMS = MappingProxyType(
    {
        "what": frozenset({"what", "quantity", "where"}),
        "how": frozenset({"how", "where"}),
        "quantity": frozenset({"quantity", "what", "when"}),
        "when": frozenset({"when", "quantity"}),
        "where": frozenset({"where", "what", "how"}),
        "why": frozenset({"why"}),
        "who": frozenset({"who"}),
        "yesno": frozenset({"yesno"}),
    }
)
_GIST_NOISE = frozenset(
    {"a", "an", "the", "so", "much", "very", "really", "please", "there", "just", "lot", "oh"}
    | {"well", "okay", "it", "this", "that", "is", "are", "am", "be", "do", "does", "doing"}
    | {"i", "me", "my", "you", "your", "for", "of", "to", "with", "again", "all", "too"}
    | {"kind", "kinds", "thing", "things", "stuff", "sort", "sorts"}
)
_WORD = re.compile(r"[A-Za-z]+")
_INFINITIVE_LEADS = frozenset(
    {"how", "want", "need", "like", "try", "trying", "able", "going", "have", "has", "order"}
    | {"way", "wish", "hope", "plan", "easy", "possible", "ready", "used"}
)


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """Whether a cached answer may be served for the new question, and why not."""

    allowed: bool
    reason: str | None = None
    # True when the questions differ only by rewording, so similarity decided.
    reworded: bool = False


def guard_allows(
    cached_question: str,
    new_question: str,
    *,
    similarity: float | None = None,
    reworded_min_similarity: float = DEFAULT_REWORDED_MIN_SIMILARITY,
) -> bool:
    """True when the cached answer may serve the new question."""
    return guard_check(
        cached_question,
        new_question,
        similarity=similarity,
        reworded_min_similarity=reworded_min_similarity,
    ).allowed


def guard_check(
    cached_question: str,
    new_question: str,
    *,
    similarity: float | None = None,
    reworded_min_similarity: float = DEFAULT_REWORDED_MIN_SIMILARITY,
) -> GuardVerdict:
    """Runs every rule; the first one that finds an answer-changing difference rejects.

    `similarity` (the cosine the cache measured) lets a reworded question through when it
    is at least `reworded_min_similarity`; without it rewordings are rejected.
    """
    a, b = _read(cached_question), _read(new_question)
    fixes_a, fixes_b = _typos(a, b), _typos(b, a)
    if fixes_a:
        a = _read(_respell(cached_question, fixes_a))
    if fixes_b:
        b = _read(_respell(new_question, fixes_b))
    for rule in _RULES:
        reason = rule(a, b)
        if reason is not None:
            return GuardVerdict(allowed=False, reason=reason)
    diff = _difference(a, b)
    if diff is None:
        return GuardVerdict(allowed=True)
    if isinstance(diff, str):
        return GuardVerdict(allowed=False, reason=diff)
    words = f"{_fmt(diff.only_cached)} vs {_fmt(diff.only_new)}"
    if not diff.reworded:
        return GuardVerdict(allowed=False, reason=f"words differ: {words}")
    if similarity is not None and similarity >= reworded_min_similarity:
        return GuardVerdict(allowed=True, reason=f"reworded ({words})", reworded=True)
    return GuardVerdict(
        allowed=False,
        reason=f"reworded ({words}), similarity below {reworded_min_similarity:.2f}",
        reworded=True,
    )


def _typos(r: Reading, other: Reading) -> dict[str, str]:
    """Misspelt words of r and the other question's word each is a slip of.

    Only a plain lower-case word outside the embedder's vocabulary is respelt, and only as a
    common word (in the vocabulary, not a name) that the other question writes in lower case
    too. Names, brands and codes are never respelt: "Zyrtek" is not "Zyrtec", "osama" is not
    "obama", however close the spelling.
    """
    fixes: dict[str, str] = {}
    for u in r.surface - other.surface:
        if not _plain(u, r) or is_known_word(u):
            continue
        for s in sorted(other.surface):
            if _plain(s, other) and is_known_word(s) and _slip(u, s):
                fixes[u] = s
                break
    return fixes


def _plain(word: str, r: Reading) -> bool:
    """A word written in lower case letters only, not read as a name or code."""
    return word.isalpha() and word not in r.entities and word not in r.cased


def _slip(typed: str, word: str) -> bool:
    """True when typed is word with one slip of the fingers: two adjacent letters swapped
    (retrun), one letter left out (shiping) or one added (adresss); never a letter replaced
    by another (Obama / Osama, Kona / Kora), which is how names and models differ.

    The word must be at least 5 letters (one slip in 5) and the first letter must agree.
    """
    if len(word) < 5 or typed[0] != word[0]:
        return False
    if len(typed) == len(word):
        diff = [i for i, (x, y) in enumerate(zip(typed, word, strict=True)) if x != y]
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and typed[diff[0]] == word[diff[1]]
            and typed[diff[1]] == word[diff[0]]
        )
    longer, shorter = (typed, word) if len(typed) > len(word) else (word, typed)
    if len(longer) - len(shorter) != 1:
        return False
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))


def _respell(text: str, fixes: dict[str, str]) -> str:
    return _WORD.sub(lambda m: fixes.get(m.group().lower(), m.group()), text)


@functools.lru_cache(maxsize=8192)
def _read(text: str) -> Reading:
    # Cached questions are read again on every lookup that lands near them.
    return read_question(text)


def _fmt(items: Iterable[object]) -> str:
    return ", ".join(sorted(str(i) for i in items)) or "-"


def _number_str(n: Number) -> str:
    return f"{n.value}{n.unit}" if n.unit else n.value


def _numbers(a: Reading, b: Reading) -> str | None:
    # Same value and unit first; then a number without a unit matches the same value with
    # one ("order 48213" = "order #48213", "2 weeks" = "two wks").
    pairs: dict[int, int] = {}
    free = list(range(len(b.numbers)))
    for lenient in (False, True):
        for i, n in enumerate(a.numbers):
            if i in pairs:
                continue
            for j in free:
                m = b.numbers[j]
                if m.value == n.value and (
                    m.unit == n.unit or (lenient and (not m.unit or not n.unit))
                ):
                    pairs[i] = j
                    free.remove(j)
                    break
    only_a = [n for i, n in enumerate(a.numbers) if i not in pairs]
    only_b = [b.numbers[j] for j in free]
    if only_a or only_b:
        return (
            f"numbers differ: {_fmt(map(_number_str, only_a))} vs {_fmt(map(_number_str, only_b))}"
        )
    if [n.value for n in a.numbers] != [m.value for m in b.numbers]:
        return "numbers in a different order"
    return None


def _negation(a: Reading, b: Reading) -> str | None:
    if a.negations != b.negations:
        return f"negation differs ({a.negations} vs {b.negations})"
    return None


def _has(word: str, r: Reading) -> bool:
    return word in r.lookup or stem(word) in r.lookup


def _direction_words(r: Reading) -> set[str]:
    """The words of r, with "to" only where it is a direction ("ship to"), not "how to"."""
    words = set(r.words)
    if "to" in words and not any(w == "to" and _is_connector(r, i) for i, w in enumerate(r.words)):
        words.discard("to")
    return words


def _antonyms(a: Reading, b: Reading) -> str | None:
    wa, wb = _direction_words(a), _direction_words(b)
    only_b = wb - wa
    for p in sorted(wa - wb):
        for q in _OPPOSITES.get(p, ()):
            if q in only_b:
                return f"opposites: {p} vs {q}"
    return None


def _person(a: Reading, b: Reading) -> str | None:
    # "my order" and "your order" are different things.
    if a.possessive and b.possessive and a.possessive != b.possessive:
        return f"whose differs ({a.possessive} vs {b.possessive} person)"
    # "What can you do?" and "What can I do?" ask about different people. Elsewhere the
    # person flips freely ("Do you accept X?" = "Can I pay with X?"), so this only applies
    # to small talk, where the pronouns are all the questions have.
    if not (_small_talk(a) and _small_talk(b)):
        return None
    if a.person and b.person and a.person != b.person:
        return f"asks about a different person ({a.person} vs {b.person})"
    ga, gb = _gist(a), _gist(b)
    if ga != gb:
        return f"small talk differs: {_fmt(ga - gb)} vs {_fmt(gb - ga)}"
    return None


def _small_talk(r: Reading) -> bool:
    """No content word beyond greetings, thanks and other droppable words."""
    return all(_drop_class(w) is not None for w in r.content)


def _gist(r: Reading) -> frozenset[str]:
    return frozenset(w for w in r.words if w not in _GIST_NOISE)


def _form(a: Reading, b: Reading) -> str | None:
    if a.form and b.form and b.form not in _COMPATIBLE_FORMS[a.form]:
        return f"asks a different question ({a.form} vs {b.form})"
    return None


def _times(a: Reading, b: Reading) -> str | None:
    ta = {w for w in a.words if w in cues.TIME_WORDS}
    tb = {w for w in b.words if w in cues.TIME_WORDS}
    if ta != tb and (ta or tb):
        return f"time differs: {_fmt(ta)} vs {_fmt(tb)}"
    return None


def _comparatives(a: Reading, b: Reading) -> str | None:
    ca = {w for w in a.words if w in cues.COMPARATIVES}
    cb = {w for w in b.words if w in cues.COMPARATIVES}
    if ca != cb:
        return f"comparison differs: {_fmt(ca)} vs {_fmt(cb)}"
    return None


def _sides(r: Reading, i: int, width: int = 3) -> tuple[set[str], set[str]]:
    """Content words (and numbers) just before and just after position i."""

    def pick(ws: Iterable[str]) -> set[str]:
        out: list[str] = []
        for w in ws:
            if w in cues.ROLE_CONNECTORS or len(out) >= width:
                break
            if w not in lex.STOPWORDS and w not in lex.DROPPABLE:
                out.append(stem(w))
        return set(out)

    return pick(reversed(r.words[:i])), pick(r.words[i + 1 :])


def _is_connector(r: Reading, i: int) -> bool:
    w = r.words[i]
    if w not in cues.ROLE_CONNECTORS or w in cues.SYMMETRIC_CONNECTORS:
        return False
    # "how to X", "want to X": an infinitive, not a direction.
    return not (w == "to" and i > 0 and r.words[i - 1] in _INFINITIVE_LEADS)


def _roles(a: Reading, b: Reading) -> str | None:
    # The k-th "to" of one question is compared with the k-th "to" of the other.
    seen: dict[str, list[int]] = {}
    for j in range(len(b.words)):
        if _is_connector(b, j):
            seen.setdefault(b.words[j], []).append(j)
    rank: dict[str, int] = {}
    for i, w in enumerate(a.words):
        if not _is_connector(a, i):
            continue
        k = rank[w] = rank.get(w, -1) + 1
        if k >= len(seen.get(w, ())):
            continue
        la, ra = _sides(a, i)
        lb, rb = _sides(b, seen[w][k])
        if la & rb and ra & lb and (la & rb) != (ra & lb):
            return f"roles swapped around '{w}': {_fmt(la & rb)} / {_fmt(ra & lb)}"
    return None


def _drop_class(word: str) -> str | None:
    """The droppable class of a (possibly stemmed) word, if it may be left out."""
    return _DROPPABLE_STEMS.get(word) or _DROPPABLE_STEMS.get(stem(word))


def _joined(word: str, other: Reading) -> bool:
    """True when word is two adjacent words of the other question run together."""
    return word in other.joined


def _matched(word: str, other: Reading) -> bool:
    if _has(word, other) or _joined(word, other):
        return True
    if "-" in word and all(_has(p, other) for p in word.split("-") if p):
        return True
    return "." in word and all(_has(p, other) for p in word.split(".") if p)


def _qualifies(brand: str, r: Reading, other: Reading) -> bool:
    """A brand may be dropped only before a product the other question names too
    ("Google Pixel 8" = "Pixel 8"), not as a thing of its own ("log in with Google")."""
    for i, w in enumerate(r.words[:-1]):
        if brand in (w, stem(w)):
            return _has(r.words[i + 1], other)
    return False


def _split_droppable(
    words: Iterable[str], r: Reading, other: Reading
) -> tuple[list[str], set[str]]:
    """Words that matter, and the classes of the droppable ones."""
    keep: list[str] = []
    classes: set[str] = set()
    for w in words:
        c = _drop_class(w)
        if c == "brand" and not _qualifies(w, r, other):
            c = None
        if c is None:
            keep.append(w)
        elif c in lex.DISTINCT_CLASSES:
            classes.add(c)
    return keep, classes


def _name_matched(name: str, r: Reading, other: Reading) -> bool:
    # An identifier is compared as written: `getUser` is not `getUsers`.
    if name in r.code:
        return name in other.entities or name in other.words
    return _matched(name, other)


def _entities(a: Reading, b: Reading) -> str | None:
    ua, ca = _split_droppable((e for e in a.entities if not _name_matched(e, a, b)), a, b)
    ub, cb = _split_droppable((e for e in b.entities if not _name_matched(e, b, a)), b, a)
    if ua or ub or ca & cb:
        return f"names differ: {_fmt(ua)} vs {_fmt(ub)}"
    return None


def _run_together(r: Reading, other: Reading) -> frozenset[str]:
    """Stems of r's adjacent word pairs that the other question writes as one word."""
    out: set[str] = set()
    ws = r.words
    for i in range(len(ws) - 1):
        x = ws[i]
        y = ws[i + 2] if ws[i + 1] == "and" and i + 2 < len(ws) else ws[i + 1]
        if x + y in other.lookup or stem(x + y) in other.lookup:
            out.update((stem(x), stem(y)))
    return frozenset(out)


def _unmatched(r: Reading, other: Reading) -> list[str]:
    covered = _run_together(r, other)
    return [w for w in dict.fromkeys(r.content) if w not in covered and not _matched(w, other)]


def _runs(r: Reading, other: Reading) -> tuple[list[str], int]:
    """Words of r the other question lacks, and in how many separate places they sit.

    Droppable words are transparent: they neither count nor split a run.
    """
    missing: list[str] = []
    runs = 0
    in_run = False
    covered = _run_together(r, other)
    for w in r.content:
        c = _drop_class(w)
        if c is not None and (c != "brand" or _qualifies(w, r, other)):
            continue
        if w in covered or _matched(w, other):
            in_run = False
            continue
        if w not in missing:
            missing.append(w)
        if not in_run:
            runs += 1
            in_run = True
    return missing, runs


@dataclass(frozen=True, slots=True)
class _Difference:
    """The content words only one question has, and whether they amount to a rewording."""

    only_cached: list[str]
    only_new: list[str]
    reworded: bool


def _difference(a: Reading, b: Reading) -> _Difference | str | None:
    """None when the content matches; a reason when a droppable word of a distinct class
    (brand, language, small talk) was swapped; else the difference."""
    _, ca = _split_droppable(_unmatched(a, b), a, b)
    _, cb = _split_droppable(_unmatched(b, a), b, a)
    if ca & cb:
        return f"small talk, brand or language differs ({_fmt(ca & cb)})"
    ua, runs_a = _runs(a, b)
    ub, runs_b = _runs(b, a)
    if not ua and not ub:
        return None
    # One slot changed (a swapped word or phrase, or words added in one place) is how a
    # question is turned into a different one. Changes scattered over several places on
    # both sides, with words on each side, are how people reword the same question.
    reworded = bool(ua and ub) and len(ua) + len(ub) >= 3 and max(runs_a, runs_b) >= 2
    return _Difference(only_cached=ua, only_new=ub, reworded=reworded)


def _reordered(a: Reading, b: Reading) -> str | None:
    # The very same words in another order: what differs is what attaches to what
    # ("bought in store, return online" / "bought online, return in store"), which a
    # bag of words cannot read, so it is not served.
    if Counter(a.words) != Counter(b.words):
        return None
    ca = [w for w in a.content if _drop_class(w) is None]
    cb = [w for w in b.content if _drop_class(w) is None]
    if ca != cb:
        return f"same words in another order: {' '.join(ca)} / {' '.join(cb)}"
    return None


_RULES: tuple[Callable[[Reading, Reading], str | None], ...] = (
    _numbers,
    _negation,
    _antonyms,
    _form,
    _person,
    _times,
    _comparatives,
    _roles,
    _entities,
    _reordered,
)
