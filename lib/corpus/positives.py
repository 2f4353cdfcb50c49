"""Correct titles as PDF extraction delivers them (issue 29).

Real title blocks come out of a PDF with marks that do not make the title wrong: a footnote or
affiliation marker glued to the end, sub- and superscripts split into spaced tokens, Greek and math
symbols, ligature code points and spacing accents, small capitals, a line-break hyphen, a closing
full stop. Real titles also take forms that look like headings or trailers but are titles: errata,
corrigenda, editorials, highlights, parts of a series, introductions to special issues. A corpus whose
positives never carry these, while its negatives (``truncated``, ``trailer_glued``, ``ocr_damage``)
do, teaches that they mean "wrongly extracted".

Each transformation is a small function ``(rng, title) -> str | None`` (None: the title has nothing
it applies to). ``data.positive_noise`` gives each one's rate, drawn independently per positive;
``data.title_forms`` the share of positives rewritten into a title form. No negative rule produces
what these produce from the same title: markers, spaced scripts, symbols, glyphs, small capitals and
hyphen breaks are marks the negative rules never add (``ocr_damage`` no longer appends markers,
``toc_line`` puts only page numbers >= 10 after a bare space, ``heading_glued`` never joins the form
labels with a colon), and tests/test_corpus.py checks it over many titles and seeds. The one exception is
opt-in: ``data.noise_on_negatives`` puts the same marks on negatives (lib/corpus/build.py), always on top of
a negative rule's string, which the same test shows no positive rule makes.
"""

from __future__ import annotations

import random
import re

from lib.corpus.sources import Record
from lib.corpus.text import title_case

# ---------------------------------------------------------------------------------------- noise

# Footnote / affiliation markers glued after the title. Digits only 1-3 (a table-of-contents line's page
# number after a bare space is >= 10, see negatives.gen_toc_line); no letters (a trailing " a" reads as a
# title cut after an article, the ``truncated`` kind).
MARKERS = ("*", " *", "∗", " ∗", "**", "†", " †", "‡", "⋆", " ⋆", "1", " 1", "2", " 2", "3", "1,2", " 1,2", "*,†", "¹")


def add_marker(rng: random.Random, title: str) -> str | None:
    """``... Performances*``, ``... Platforms *``, ``... telescope. ⋆``, ``... CONSTRUCTIONS 1``."""
    if title[-1:] in "*∗†‡⋆¹" or title[-1:].isdigit():
        return None  # would read as a longer number or a doubled marker
    return title + rng.choice(MARKERS)


# A chemical / gene token's digits after a letter: "CoO2", "H2O", "Ca2+", "CD4+", "PD-L1".
_SCRIPT = re.compile(r"(?<=[A-Za-z\)\]])(\d+[+\-−]?)(?=[A-Z(]|\s|$|[,;:)/\-])")


def split_scripts(rng: random.Random, title: str) -> str | None:
    """Sub- and superscripts set apart by spaces: ``Na x CoO 2 • yH 2 O``, ``Ca 2+``."""
    words = title.split(" ")
    candidates = [i for i, w in enumerate(words) if any(c.isupper() for c in w) and _SCRIPT.search(w)]
    if not candidates:
        return None
    for i in candidates:
        if rng.random() < 0.8 or i == candidates[0]:
            words[i] = _SCRIPT.sub(lambda m: f" {m.group(1)} ", words[i]).strip()
    out = re.sub(r"\s+", " ", " ".join(words))
    return out if out != title else None


# MEDLINE spells symbols out; the PDF prints them.
_GREEK = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ε",
    "kappa": "κ",
    "lambda": "λ",
    "mu": "μ",
    "sigma": "σ",
    "tau": "τ",
    "omega": "ω",
    "theta": "θ",
    "pi": "π",
    "psi": "ψ",
}
_GREEK_WORD = re.compile(r"(?<![A-Za-z])(" + "|".join(_GREEK) + r")(?![a-z])", re.I)
_MATH = (("+/-", "±"), (">or=", "≥"), ("<or=", "≤"), ("-->", "→"), ("->", "→"), (" x ", " × "))


def print_symbols(rng: random.Random, title: str) -> str | None:
    """Greek letters and math as printed, sometimes set apart by extraction: ``TNF-α``, ``σ(pp → Z)``."""
    spaced = rng.random() < 0.3

    def greek(m: re.Match) -> str:
        symbol = _GREEK[m.group(1).lower()]
        symbol = symbol.upper() if m.group(1).isupper() and len(m.group(1)) > 1 and title.isupper() else symbol
        return f" {symbol} " if spaced else symbol

    out = _GREEK_WORD.sub(greek, title)
    for plain, symbol in _MATH:
        out = out.replace(plain, f" {symbol.strip()} " if plain.startswith(" ") or spaced else symbol)
    out = re.sub(r"\s+", " ", out).strip()
    return out if out != title else None


_LIGATURES = (("ffi", "ﬃ"), ("ffl", "ﬄ"), ("fi", "ﬁ"), ("fl", "ﬂ"), ("ff", "ﬀ"))
_ACCENTS = {"é": "´e", "è": "`e", "á": "´a", "ó": "´o", "í": "´ı", "ü": "¨u", "ö": "¨o", "ä": "¨a", "ç": "¸c"}


def glyph_noise(rng: random.Random, title: str) -> str | None:
    """Glyphs extraction keeps that a clean string would not: ligature code points (``speciﬁc``),
    spacing accents (``Mod´elisation``), ``þ`` for a superscript plus (``Na þ /Glucose``)."""
    options = []
    if re.search(r"ffi|ffl|fi|fl|ff", title):
        options.append(lambda t: _replace_all(t, _LIGATURES))
    if any(ch in title for ch in _ACCENTS):
        options.append(lambda t: "".join(_ACCENTS.get(ch, ch) for ch in t))
    if re.search(r"[A-Za-z\d]\+", title):
        options.append(lambda t: re.sub(r"(?<=[A-Za-z\d])\+", " þ ", t).replace("  ", " ").strip())
    if not options:
        return None
    out = rng.choice(options)(title)
    return out if out != title else None


def _replace_all(text: str, pairs) -> str:
    for plain, glyph in pairs:
        text = text.replace(plain, glyph)
    return text


def small_caps(rng: random.Random, title: str) -> str | None:
    """Small capitals as text extraction splits them: ``T HERMAL C ONDUCTIVITY OF T HIN F ILMS``."""
    words = title.split(" ")
    if len(words) < 2:
        return None
    out = []
    for word in words:  # a capital then small capitals: the split falls where the glyph size changes
        if len(word) >= 3 and word[0].isupper() and word[1:].isalpha():
            out.append(f"{word[0]} {word[1:].upper()}")
        else:
            out.append(word.upper())
    return " ".join(out)


def hyphen_break(rng: random.Random, title: str) -> str | None:
    """A line-break hyphen kept inside a long word: ``Ther- modynamic``, ``Classifi- cation``."""
    words = title.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 8 and w.isalpha()]
    if not long_words:
        return None
    i = rng.choice(long_words)
    cut = rng.randint(3, len(words[i]) - 3)
    words[i] = f"{words[i][:cut]}- {words[i][cut:]}"
    return " ".join(words)


def full_stop(rng: random.Random, title: str) -> str | None:
    """The closing full stop some title blocks print (MEDLINE's own period is always removed first)."""
    return None if title[-1:] in ".?!:;," else title + "."


# In the order applied; a marker goes last, after a full stop (``telescope. ⋆``).
NOISE = {
    "scripts": split_scripts,
    "symbols": print_symbols,
    "glyphs": glyph_noise,
    "hyphen_break": hyphen_break,
    "small_caps": small_caps,
    "full_stop": full_stop,
    "marker": add_marker,
}


def add_noise(rng: random.Random, title: str, rates: dict[str, float]) -> tuple[str, list[str]]:
    """``title`` with each transformation of ``rates`` applied at its rate; the names applied."""
    applied = []
    for name, transform in NOISE.items():
        rate = rates.get(name, 0.0)
        if rate <= 0 or rng.random() >= rate:
            continue
        changed = transform(rng, title)
        if changed and changed != title:
            title = changed
            applied.append(name)
    return title, applied


# ---------------------------------------------------------------------------------------- forms

# negatives.gen_heading_glued never joins negatives.COLON_FORM_LABELS to a title with ": ", so
# "Editorial: <title>" is a title form and "Editorial <title>" a heading glued before a title.
_ROMAN = ("I", "II", "III", "IV")


def _topic(rng: random.Random, record: Record) -> str | None:
    keywords = [k for k in record.keywords if 1 <= len(k.split()) <= 4 and k[:1].isalpha()]
    if len(keywords) >= 2 and rng.random() < 0.5:
        a, b = rng.sample(keywords, 2)
        return title_case(f"{a} and {b}")
    if keywords:
        return title_case(rng.choice(keywords))
    return None


def erratum(rng: random.Random, title: str, record: Record) -> str | None:
    """``Erratum to “<title>”``, ``Corrigendum: <title>``, ``Correction to: <title>``."""
    label = rng.choice(["Erratum", "Corrigendum", "Correction", "Retraction"])
    style = rng.randrange(4)
    if style == 0:
        return f"{label} to “{title}”"
    if style == 1:
        return f'{label} to "{title}"'
    if style == 2:
        return f"{label} to: {title}"
    return f"{label}: {title}"


def labelled(rng: random.Random, title: str, record: Record) -> str | None:
    """``Editorial: <title>``, ``Highlight: <title>``, ``Research Highlight: <title>``, ``Guest Editorial: ...``."""
    label = rng.choice(["Editorial", "Guest Editorial", "Highlight", "Research Highlight", "Commentary", "Perspective"])
    return f"{label}: {title}"


def part_of_series(rng: random.Random, title: str, record: Record) -> str | None:
    """A review or series in parts: ``<title>: Part 1``, ``<title>, Part II``, ``<title> (Part 2)``."""
    number = rng.choice([str(rng.randint(1, 4)), rng.choice(_ROMAN)])
    part = rng.choice(["Part", "Part", "PART"]) if not title.isupper() else "PART"
    style = rng.randrange(3)
    if style == 0:
        return f"{title}: {part} {number}"
    if style == 1:
        return f"{title}, {part} {number}"
    return f"{title} ({part} {number})"


def special_issue(rng: random.Random, title: str, record: Record) -> str | None:
    """``Introduction: Feature Issue on <topic>``, ``Introduction to the Special Issue on <topic>``,
    ``Editorial: Special Section on <topic>``; the topic from the record's keywords."""
    topic = _topic(rng, record)
    if not topic:
        return None
    issue = rng.choice(["Special Issue", "Feature Issue", "Special Section", "Focus Issue"])
    head = rng.choice(["Introduction: ", "Introduction to the ", "Editorial: ", "Guest Editorial: ", "Preface: "])
    return f"{head}{issue} on {topic}"


FORMS = {"erratum": erratum, "labelled": labelled, "part_of_series": part_of_series, "special_issue": special_issue}


def title_form(rng: random.Random, title: str, record: Record) -> tuple[str, str | None]:
    """``title`` in one of the forms (picked uniformly among those that apply) and the form's name."""
    names = list(FORMS)
    rng.shuffle(names)
    for name in names:
        out = FORMS[name](rng, title, record)
        if out:
            if title.isupper():
                out = out.upper()
            return out, name
    return title, None
