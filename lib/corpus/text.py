"""String helpers shared by the corpus generators: normalisation, casing, deterministic seeds."""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata

_SPACE = re.compile(r"\s+")
# Words kept lower case inside Title Case (the usual English style-guide list).
SMALL_WORDS = frozenset(
    "a an and as at but by for from in into nor of on or per the to via vs vs. with without".split()
)
CASINGS = ("sentence", "title", "upper")


def clean(text: str) -> str:
    """NFKC-normalise (folds ligature code points such as U+FB01) and collapse whitespace."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


# Indexer annotations that MEDLINE appends to a title and a PDF does not print.
_MEDLINE_NOTE = re.compile(r"\s*\[\s*(proceedings|letter|editorial|author's transl)\s*\]\.?$", re.I)


def strip_medline_period(title: str) -> str:
    """MEDLINE ends ~98% of titles with a period that the PDF title block does not have."""
    title = _MEDLINE_NOTE.sub("", title)
    if title.endswith(".") and not title.endswith("..."):
        return title[:-1].rstrip()
    return title


def _has_inner_caps(word: str) -> bool:
    # Acronyms, gene names, chemical formulas (DNA, mRNA, CO2, pH): never re-case them.
    return any(ch.isupper() for ch in word[1:]) or any(ch.isdigit() for ch in word)


def title_case(text: str) -> str:
    out = []
    words = text.split(" ")
    for i, word in enumerate(words):
        after_colon = i > 0 and words[i - 1].endswith((":", "?", "."))
        if _has_inner_caps(word):
            out.append(word)
        elif i > 0 and not after_colon and word.lower() in SMALL_WORDS:
            out.append(word.lower())
        else:
            out.append("-".join(_cap_first(part) for part in word.split("-")))
    return " ".join(out)


def _cap_first(part: str) -> str:
    for j, ch in enumerate(part):
        if ch.isalpha():
            return part[:j] + ch.upper() + part[j + 1 :]
    return part


def sentence_case(text: str) -> str:
    """Lower-case capitalised words after the first, unless the source is already sentence case.

    MEDLINE titles are sentence case already (proper nouns intact), so they pass through; Title
    Case sources (DBLP/ACM) lose capitals except on acronyms and after a colon.
    """
    words = text.split(" ")
    alpha = [w for w in words[1:] if w[:1].isalpha()]
    if not alpha or sum(w[:1].isupper() for w in alpha) / len(alpha) < 0.6:
        return text
    out = [words[0]]
    for i, word in enumerate(words[1:], start=1):
        if words[i - 1].endswith(":"):
            out.append(word)
        else:  # per hyphen part, so "Radiotherapy-Related" becomes "radiotherapy-related"
            out.append("-".join(p if _has_inner_caps(p) else p.lower() for p in word.split("-")))
    return " ".join(out)


def apply_casing(text: str, mode: str) -> str:
    if mode == "upper":
        return text.upper()
    if mode == "title":
        return title_case(text)
    if mode == "sentence":
        return sentence_case(text)
    if mode == "keep":
        return text
    raise ValueError(f"unknown casing mode {mode!r}")


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def text_key(text: str) -> str:
    """Duplicate key: case-, space-, punctuation- and accent-insensitive, with compatibility forms
    folded (``ﬁ`` is ``fi``, a spacing accent is no letter). The corpus de-duplicates by it and the
    leakage guard (lib/data.remove_leaks) compares titles across splits by it: one notion of "the same
    title" for both. The folding matters because PDF extraction, and the corpus's glyph noise that
    imitates it, writes one title in several code-point forms: a leak must not hide behind them."""
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return re.sub(r"[\W_]+", "", folded.casefold()) or text.strip().casefold()


def derived_seed(seed: int, *parts: object) -> int:
    """A seed per (build seed, step): stable across Python processes, unlike hash()."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(seed: int, *parts: object) -> random.Random:
    return random.Random(derived_seed(seed, *parts))
