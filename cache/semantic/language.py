"""Which semantic path, if any, may read a question: the fail-closed gate in front of matching.

An embedder that cannot read a language maps its questions to near-identical vectors
(all-MiniLM-L6-v2 turns two different Chinese questions into cosine 1.0), and no verifier can
tell them apart. So before a question is embedded, its language is identified
(py3langid, a maintained detector that bundles its model) and the share of its letters the
path's tokenizer actually reads is measured (letters that end up in unknown or
single-character pieces are not read). A question in a language no path was measured for, or
one the tokenizer cannot read, gets exact caching only: it is neither looked up nor stored
by meaning.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Questions are re-read on store right after their lookup; a small memo saves the second read.
RECENT_ROUTES = 1024
# A path reads a question when at least this share of its letters falls in multi-character
# word pieces the vocabulary knows (English questions score 0.9 and more, see docs/cache.md).
DEFAULT_MIN_COVERAGE = 0.75


class PieceTokenizer(Protocol):
    """A subword tokenizer: pieces of a text with their character spans."""

    unknown_token: str

    def pieces(self, text: str) -> list[tuple[str, tuple[int, int]]]: ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where a question goes: `path` names the semantic path, None means exact caching only."""

    language: str
    path: str | None
    reason: str | None = None  # why no path, for logs and tests
    coverage: float = 1.0


class Gate(Protocol):
    """What the cache asks before matching a question by meaning."""

    def route(self, text: str) -> Route: ...


@dataclass(frozen=True, slots=True)
class SemanticPath:
    """An embedder measured for some languages, with the tokenizer it reads them with."""

    name: str
    languages: frozenset[str]
    tokenizer: PieceTokenizer | None = None
    min_coverage: float = DEFAULT_MIN_COVERAGE


class WordPieceTokenizer:
    """A Hugging Face `tokenizer.json` (the embedder's own), read with the tokenizers library."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        model = self._tokenizer.model
        self.unknown_token = str(getattr(model, "unk_token", "[UNK]"))
        self._prefix = str(getattr(model, "continuing_subword_prefix", "##") or "")

    @classmethod
    def of_model(cls, model_dir: str | Path) -> WordPieceTokenizer:
        """The tokenizer shipped in a sentence-transformers model folder."""
        return cls(Path(model_dir) / "tokenizer.json")

    def pieces(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        out = []
        for token, span in zip(encoding.tokens, encoding.offsets, strict=True):
            if self._prefix and token.startswith(self._prefix):
                token = token[len(self._prefix) :]
            out.append((token, span))
        return out


def coverage(text: str, tokenizer: PieceTokenizer) -> float:
    """Share of the text's letters that land in known pieces longer than one character.

    A vocabulary that spells a script letter by letter (all-MiniLM-L6-v2 with Chinese,
    Cyrillic or Greek) leaves its meaning to chance, so single letters count as unread.
    """
    letters = read = 0
    for token, (start, end) in tokenizer.pieces(text):
        span = text[start:end]
        n = sum(ch.isalpha() for ch in span)
        if not n:
            continue
        letters += n
        if token == tokenizer.unknown_token:
            continue
        if n > 1:
            read += n
    return read / letters if letters else 1.0


class LanguageGate:
    """Routes each question to the semantic path measured for its language, or to none.

    `paths` are tried in order: a language is served by the first path that lists it.
    """

    def __init__(self, paths: Iterable[SemanticPath]) -> None:
        self.paths = tuple(paths)
        by_language: dict[str, SemanticPath] = {}
        for path in self.paths:
            for language in path.languages:
                by_language.setdefault(language, path)
        self._by_language: Mapping[str, SemanticPath] = by_language
        # Computed once: every question the detector is unsure of weighs these.
        self.languages = frozenset(by_language)
        self._recent: OrderedDict[str, Route] = OrderedDict()

    def route(self, text: str) -> Route:
        """The route of one question (remembered for the next few calls)."""
        route = self._recent.get(text)
        if route is not None:
            self._recent.move_to_end(text)
            return route
        route = self._route(text)
        self._recent[text] = route
        if len(self._recent) > RECENT_ROUTES:
            self._recent.popitem(last=False)
        return route

    def _route(self, text: str) -> Route:
        language = detect_language(text, self.languages)
        path = self._by_language.get(language)
        if path is None:
            return Route(language, None, reason=f"no semantic path for language {language!r}")
        if path.tokenizer is None:
            return Route(language, path.name)
        read = coverage(text, path.tokenizer)
        if read < path.min_coverage:
            reason = f"{path.name} reads {read:.0%} of the letters"
            return Route(language, None, reason=reason, coverage=read)
        return Route(language, path.name, coverage=read)


def english_gate(model_dir: str | Path | None = None) -> LanguageGate:
    """English only, read with the tokenizer of `model_dir` (default: all-MiniLM-L6-v2).

    The one path measured for the default embedder; without a `tokenizer.json` in the
    folder (a hub id, say) the language check alone applies.
    """
    from cache.embedder import default_model_path

    folder = Path(model_dir or default_model_path())
    tokenizer = (
        WordPieceTokenizer.of_model(folder) if (folder / "tokenizer.json").is_file() else None
    )
    warm_up(["en"])
    return LanguageGate(
        [SemanticPath(name="minilm", languages=frozenset({"en"}), tokenizer=tokenizer)]
    )


def detect_language(text: str, preferred: frozenset[str] = frozenset()) -> str:
    """ISO 639-1 code of the text's language; "und" for text without letters.

    py3langid decides, except where it is unsure of a short Latin-script text ("wifi
    password" reads as Shona to it) or names a language with little written text (it
    takes many short English questions for Nigerian Pidgin): there the word frequencies of
    wordfreq's lists choose among its top guesses and the `preferred` languages, when they
    know most of the words.
    """
    if not any(ch.isalpha() for ch in text):
        return "und"
    ranked = _identifier().rank(text)[:CANDIDATES]
    top, confidence = ranked[0]
    lists = _word_lists()
    if (confidence >= SURE and top in lists) or not _is_latin(text):
        return str(top)
    words = _LATIN_WORD.findall(text.lower())
    candidates = {lang for lang, _ in ranked if lang in lists} | preferred
    scores = {lang: _zipf_sum(words, lang) for lang in candidates}
    if not scores:
        return str(top)
    best = max(scores, key=lambda lang: scores[lang])
    known = sum(_zipf(w, best) > 0 for w in words) / len(words)
    return best if known >= KNOWN_WORDS else str(top)


# py3langid's normalised probability above which its answer stands alone.
SURE = 0.5
# How many of py3langid's top guesses the word lists weigh.
CANDIDATES = 8
# wordfreq's choice stands only when its list knows at least this share of the words.
KNOWN_WORDS = 0.75
_LATIN_WORD = re.compile(r"[^\W\d_]+")


def _is_latin(text: str) -> bool:
    return all(unicodedata.name(ch, "").startswith("LATIN") for ch in text if ch.isalpha())


def _zipf(word: str, language: str) -> float:
    from wordfreq import zipf_frequency

    # The small lists (the most frequent words) keep memory low; rarer words count as unknown.
    return float(zipf_frequency(word, language, wordlist="small"))


def _zipf_sum(words: list[str], language: str) -> float:
    return sum(_zipf(w, language) for w in words)


@functools.cache
def _word_lists() -> frozenset[str]:
    from wordfreq import available_languages

    return frozenset(available_languages())


def warm_up(languages: Iterable[str] = ()) -> None:
    """Loads the detector and these languages' word lists now, not on a request's path."""
    for lang in languages:
        if lang in _word_lists():
            _zipf("a", lang)
    detect_language("warm up the detector")


@functools.cache
def _identifier():  # type: ignore[no-untyped-def]
    """py3langid's identifier with normalised probabilities, loaded once (about 0.1 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
