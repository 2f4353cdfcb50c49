"""Wrongly extracted "titles": real non-title strings of a record, and extraction errors made
from a real title (truncation, neighbouring text glued on, citation and contents lines, OCR and
ligature damage), plus generic headings, near-empty strings and bare numbers.

Every generator takes a ``Ctx`` (random source, casing mixtures, a sampler of positive-title
lengths so negatives are not told apart by length alone) and returns a string or ``None`` when the
record lacks what the kind needs.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from lib.corpus.sources import Record
from lib.corpus.text import apply_casing, pick, title_case

REAL_KINDS = ("affiliation", "authors", "venue", "abstract", "copyright", "keywords")
TITLE_KINDS = ("truncated", "heading_glued", "header_glued", "authors_after", "affiliation_after",
               "citation", "toc_line", "ocr_damage")
GENERIC_KINDS = ("heading", "near_empty", "number")
ALL_KINDS = REAL_KINDS + TITLE_KINDS + GENERIC_KINDS

MONTHS = ("January February March April May June July August September October November "
          "December").split()
# Headings a title extractor picks up instead of, or before, the title.
HEADINGS = (
    "Abstract", "Contents", "Table of Contents", "References", "Bibliography", "Introduction",
    "Acknowledgements", "Acknowledgments", "Appendix", "Summary", "Conclusions", "Conclusion",
    "Discussion", "Methods", "Materials and Methods", "Results", "Related Work", "Background",
    "Preface", "Foreword", "Index", "Glossary", "Notation", "List of Figures", "List of Tables",
    "Keywords", "Executive Summary", "Overview", "Outline", "Revised", "Draft", "Errata",
    "Supplementary Material", "Supporting Information", "Reference", "Proof", "Preliminaries",
    "Motivation", "Experimental Section", "Case Report", "Case Presentation", "Future Work",
    "Evaluation", "Implementation", "Problem Statement", "Definitions", "Main Results",
    "Literature Review", "Data and Methods", "Study Design", "Limitations", "Recommendations",
    "Author Contributions", "Funding", "Conflict of Interest", "Ethics Statement", "Highlights",
    "Graphical Abstract", "Objectives", "Purpose", "Findings", "Nomenclature", "Symbols",
    "Contents Lists", "Abbreviations", "Corrigendum", "Editorial", "Letter to the Editor",
)
NUMBERED_HEADINGS = ("Chapter", "Part", "Section", "Appendix", "Figure", "Table", "Lemma",
                     "Theorem", "Definition", "Algorithm", "Example", "Exercise", "Lecture")
PREFIX_LABELS = (
    "Abstract", "Research Article", "Original Article", "Review Article", "Review", "Letter",
    "Short Communication", "Brief Report", "Technical Note", "Running title:", "Running head:",
    "Article", "Research Paper", "Full Paper", "Position Paper", "Case Report", "Communication",
    "Editorial", "Commentary", "Perspective", "Minireview", "Original Research", "Rapid Report",
    "Technical Report", "Preprint", "Author manuscript", "Accepted manuscript", "Introduction",
    "Summary", "Invited Review", "Discussion Paper", "Working Paper", "Thesis", "Survey",
)
RUNNING_HEADERS = (
    "ARTICLE IN PRESS", "Author manuscript", "HHS Public Access", "NIH Public Access",
    "Europe PMC Funders Group", "Open Access", "RESEARCH ARTICLE", "Research Article Open Access",
    "BioMed Central", "Available online at www.sciencedirect.com", "Accepted Manuscript",
    "This is a preprint", "Draft - do not cite", "Published in final edited form as:",
    "Contents lists available at ScienceDirect", "Check for updates", "CORRESPONDENCE",
    "Peer reviewed", "Page 1 of 12", "Supplementary data", "OPEN", "PERSPECTIVE",
)
CONFERENCE_WORDS = ("International Conference on", "Annual Meeting of the Society for",
                    "Workshop on", "Symposium on", "European Conference on", "Annual Congress of")
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "7th", "9th", "10th", "12th", "15th", "21st", "33rd")
SECTION_NUMBERS = ("1", "2", "3", "1.", "2.1", "3.2", "4.1.2", "I.", "II.", "IV.", "A.", "B.2")
_LIGATURE = re.compile(r"ffi|ffl|fi|fl|ff")
_EMAIL = re.compile(r"\s*(Electronic address:)?\s*\S+@\S+", re.I)


@dataclass
class Ctx:
    rng: random.Random
    title_casing: dict[str, float]
    other_casing: dict[str, float]
    target_words: Callable[[], int]

    def case_title(self, title: str) -> str:
        return apply_casing(title, pick(self.rng, self.title_casing))

    def case_other(self, text: str) -> str:
        return apply_casing(text, pick(self.rng, self.other_casing))


def _upper_or_not(ctx: Ctx, text: str, p_upper: float = 0.3) -> str:
    return text.upper() if ctx.rng.random() < p_upper else text


def _clip_words(text: str, n_words: int) -> str:
    return " ".join(text.split()[:max(1, n_words)])


def _journal_name(record: Record) -> str:
    # MEDLINE's full titles are lower case with a place qualifier: "Chemical science (Cambridge)".
    name = re.sub(r"\s*[(:;].*$", "", record.journal).strip() or record.journal
    return title_case(name) if name[1:] == name[1:].lower() else name


# --------------------------------------------------------------------------- authors / affiliations


def format_authors(ctx: Ctx, authors, n: int) -> str:
    rng, chosen = ctx.rng, list(authors[:max(1, n)])
    # Title pages mostly print full names; initials-first and Vancouver styles come from reference lists.
    style = rng.choices(range(6), weights=[35, 15, 10, 5, 20, 15])[0]
    if style == 0:
        names = [f"{fore} {last}".strip() for last, fore, _ in chosen]
    elif style == 1:
        names = [" ".join(f"{i}." for i in ini) + f" {last}" if ini else last for last, _, ini in chosen]
    elif style == 2:
        names = [f"{last} {ini}".strip() for last, _, ini in chosen]
    elif style == 3:
        names = [f"{last}, " + " ".join(f"{i}." for i in ini) if ini else last for last, _, ini in chosen]
    elif style == 4:  # affiliation markers as plain digits, as text extraction flattens superscripts
        names = [f"{fore} {last}{rng.choice(['1', '2', '1,2', '*', 'a', '1*', ''])}".strip()
                 for last, fore, _ in chosen]
    else:
        names = [f"{fore} {last}".strip().upper() for last, fore, _ in chosen]
    joiner = rng.choice([", ", ", ", " · ", "; "] + ([" and "] if len(names) == 2 else []))
    text = joiner.join(names)
    if len(names) > 2 and joiner == ", " and rng.random() < 0.5:
        text = ", ".join(names[:-1]) + rng.choice([" and ", ", and ", " & "]) + names[-1]
    if len(authors) > len(chosen) and rng.random() < 0.3:
        text += rng.choice([", et al.", " et al", ", ..."])
    return text


def _author_count(ctx: Ctx, record: Record) -> int:
    return min(len(record.authors), max(1, round(ctx.target_words() / 2.6)))


def affiliation_fragment(ctx: Ctx, record: Record, target_words: int) -> str:
    aff = ctx.rng.choice(record.affiliations)
    if ctx.rng.random() < 0.85:
        aff = _EMAIL.sub("", aff)
    parts, out = [p for p in aff.rstrip(" .;").split(", ") if p], []
    for part in parts:
        out.append(part)
        if len(" ".join(out).split()) >= target_words:
            break
    text = ", ".join(out) if out else aff
    if ctx.rng.random() < 0.15:
        text = ctx.rng.choice(["1 ", "2 ", "a ", "* ", "† "]) + text
    return text + ("." if ctx.rng.random() < 0.15 else "")


# --------------------------------------------------------------------------- real non-title strings


def gen_affiliation(ctx: Ctx, record: Record) -> str | None:
    if not record.affiliations:
        return None
    return ctx.case_other(affiliation_fragment(ctx, record, ctx.target_words()))


def gen_authors(ctx: Ctx, record: Record) -> str | None:
    if not record.authors:
        return None
    return ctx.case_other(format_authors(ctx, record.authors, _author_count(ctx, record)))


def _date(iso: str, style: int) -> str:
    y, m, d = iso.split("-")
    month = MONTHS[int(m) - 1]
    return [f"{int(d)} {month} {y}", f"{month} {int(d)}, {y}", iso, f"{int(d)} {month[:3]} {y}"][style]


def venue_line(ctx: Ctx, record: Record) -> str | None:
    rng, r = ctx.rng, record
    name, abbrev = _journal_name(r), (r.journal_abbrev or _journal_name(r)).rstrip(".")
    vol, iss, pages, year = r.volume or str(rng.randint(1, 90)), r.issue, r.pages, r.year
    options = [name]
    if year:
        options += [
            f"{abbrev}. {year};{vol}" + (f"({iss})" if iss else "") + (f":{pages}" if pages else ""),
            f"{name}, {vol} ({year})" + (f" {pages}" if pages else ""),
            f"{name} {year}, {vol}" + (f", {pages}" if pages else ""),
            f"{name}, Vol. {vol}" + (f", No. {iss}" if iss else "") + (f", pp. {pages}" if pages else "") + f", {year}",
            f"{name} ({year}) {vol}" + (f":{pages}" if pages else ""),
            f"{abbrev} {vol} ({year})",
        ]
    if r.doi:
        options += [f"doi:{r.doi}", f"https://doi.org/{r.doi}", f"DOI {r.doi}"]
    if r.dates:
        style = rng.randrange(4)  # one date style per line, as a journal prints it
        parts = [f"{s.capitalize()}: {_date(d, style)}" for s, d in r.dates]
        options.append(rng.choice([" / ", "; ", " "]).join(parts))
        options.append(f"Published online {_date(r.dates[-1][1], style)}")
    return rng.choice(options)


def gen_venue(ctx: Ctx, record: Record) -> str | None:
    if not record.journal:
        return None
    return ctx.case_other(venue_line(ctx, record))


def gen_abstract(ctx: Ctx, record: Record) -> str | None:
    if len(record.abstract.split()) < 12:
        return None
    return ctx.case_other(_clip_words(record.abstract, ctx.target_words()))


def gen_copyright(ctx: Ctx, record: Record) -> str | None:
    if not record.copyright:
        return None
    text = record.copyright
    if len(text.split()) > 18:  # long licence notices: the first sentence is what a title line catches
        text = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    if ctx.rng.random() < 0.5:  # footers are often set without the final stop
        text = text.rstrip(".")
    return ctx.case_other(_clip_words(text, 30))


def gen_keywords(ctx: Ctx, record: Record) -> str | None:
    if len(record.keywords) < 2:
        return None
    rng, words, chosen = ctx.rng, ctx.target_words(), []
    for kw in record.keywords:
        chosen.append(kw)
        if len(" ".join(chosen).split()) >= words - 1:
            break
    label = rng.choice(["Keywords:", "Key words:", "KEY WORDS:", "Index Terms—", "Keywords", "KEYWORDS"])
    return ctx.case_other(f"{label} " + rng.choice(["; ", ", ", " · "]).join(chosen))


# --------------------------------------------------------------------------- title-derived errors


def truncate(ctx: Ctx, title: str) -> str | None:
    words = title.split()
    if len(words) < 3:
        return None
    keep = ctx.rng.randint(max(1, round(0.35 * len(words))), len(words) - 1)
    # Mostly the first line of a wrapped title block; sometimes only its last line.
    return " ".join(words[:keep] if ctx.rng.random() < 0.8 else words[-keep:])


def gen_truncated(ctx: Ctx, record: Record) -> str | None:
    return truncate(ctx, ctx.case_title(record.title))


def _heading(ctx: Ctx) -> str:
    rng = ctx.rng
    if rng.random() < 0.25:
        word = rng.choice(NUMBERED_HEADINGS)
        number = rng.choice([str(rng.randint(1, 12)), rng.choice("ABCD"), rng.choice(["I", "II", "III", "IV"])])
        text = f"{word} {number}"
    else:
        text = rng.choice(HEADINGS)
        if rng.random() < 0.35:
            text = f"{rng.choice(SECTION_NUMBERS)} {text}"
    return _upper_or_not(ctx, text, 0.35)


def gen_heading_glued(ctx: Ctx, record: Record) -> str | None:
    rng, title = ctx.rng, ctx.case_title(record.title)
    if rng.random() < 0.3:  # section number (of a sub-heading or a numbered title page) then title
        if rng.random() < 0.3:
            title = truncate(ctx, title) or title
        return f"{rng.choice(SECTION_NUMBERS)} {title}"
    label = _upper_or_not(ctx, rng.choice(PREFIX_LABELS), 0.3)
    return f"{label}{rng.choice([' ', ' ', ': ', ' - ', '. '])}{title}" if not label.endswith(":") else f"{label} {title}"


def _conference(ctx: Ctx, record: Record) -> str:
    rng = ctx.rng
    topic = _journal_name(record) if record.journal else "Information Systems"
    year = record.year or str(rng.randint(1990, 2021))
    return f"Proceedings of the {rng.choice(ORDINALS)} {rng.choice(CONFERENCE_WORDS)} {topic}, {year}"


def gen_header_glued(ctx: Ctx, record: Record) -> str | None:
    rng = ctx.rng
    choice = rng.randrange(5)
    if choice == 0 and record.copyright:
        header = _clip_words(re.split(r"(?<=\.)\s", record.copyright, maxsplit=1)[0], 12)
    elif choice == 1:
        header = _conference(ctx, record)
    elif choice == 2:
        header = rng.choice(RUNNING_HEADERS)
    else:
        header = venue_line(ctx, record) or rng.choice(RUNNING_HEADERS)
    return f"{_upper_or_not(ctx, header, 0.2)} {ctx.case_title(record.title)}"


def gen_authors_after(ctx: Ctx, record: Record) -> str | None:
    if not record.authors:
        return None
    names = format_authors(ctx, record.authors, ctx.rng.randint(1, 4))
    return f"{ctx.case_title(record.title)}{ctx.rng.choice([' ', ' ', ' by ', ', '])}{names}"


def gen_affiliation_after(ctx: Ctx, record: Record) -> str | None:
    if not record.affiliations:
        return None
    aff = affiliation_fragment(ctx, record, ctx.rng.randint(2, 8))
    return f"{ctx.case_title(record.title)} {aff}"


def _citation_authors(ctx: Ctx, record: Record) -> str:
    if not record.authors:
        return "Anonymous"
    return format_authors(ctx, record.authors, ctx.rng.randint(1, 3))


def gen_citation(ctx: Ctx, record: Record) -> str | None:
    rng, title = ctx.rng, ctx.case_title(record.title)
    journal = record.journal_abbrev or _journal_name(record) or "Technical report"
    year, vol = record.year or str(rng.randint(1975, 2021)), record.volume or str(rng.randint(1, 60))
    pages = record.pages or f"{rng.randint(1, 400)}-{rng.randint(401, 900)}"
    styles = [
        lambda: f"{_citation_authors(ctx, record)} ({year}). {title}. {journal}, {vol}, {pages}.",
        lambda: f"{_citation_authors(ctx, record)}, “{title},” {journal}, vol. {vol}, pp. {pages}, {year}.",
        lambda: f"[{rng.randint(1, 60)}] {_citation_authors(ctx, record)}. {title}. {journal} {year};{vol}:{pages}",
        lambda: f"{year}), “{title},” {rng.choice(['working paper', 'mimeo', journal, f'{journal} {vol}'])}",
        lambda: f"{title}”, {journal} {vol}",
        lambda: f"{title}\", {journal}, {year}",
        lambda: f"{rng.choice('ABCDEFGHJKLMNPRSTW')}.: {title}",
        lambda: f"{title}, {journal} {vol} ({year}) {pages}",
        lambda: f"{title}. In: {_conference(ctx, record)}, pp. {pages}",
    ]
    text = rng.choice(styles)()
    # Extraction usually stops at the line end, before a reference's closing stop.
    return text if rng.random() < 0.3 else text.rstrip(".")


def gen_toc_line(ctx: Ctx, record: Record) -> str | None:
    rng, title = ctx.rng, ctx.case_title(record.title)
    if rng.random() < 0.3:
        title = truncate(ctx, title) or title
    leader = rng.choice([" " + "." * rng.randint(4, 40), " " + ". " * rng.randint(3, 15),
                         " " + ":" * rng.randint(4, 30), " " + "…" * rng.randint(2, 12), " "])
    prefix = rng.choice(["", "", f"{rng.choice(SECTION_NUMBERS)} ", "CONTENTS ", "Contents "])
    return f"{prefix}{title}{leader.rstrip()} {rng.randint(1, 450)}"


def ocr_damage(ctx: Ctx, title: str) -> str | None:
    rng, text = ctx.rng, title
    damages = [_lose_ligature, _unknown_glyph, _run_together, _split_word, _marker_residue]
    rng.shuffle(damages)
    applied = 0
    for damage in damages:
        changed = damage(rng, text)
        if changed and changed != text:
            text, applied = changed, applied + 1
            if applied >= rng.choice([1, 1, 2]):
                break
    return text if text != title else None


def _lose_ligature(rng: random.Random, text: str) -> str | None:
    hits = list(_LIGATURE.finditer(text))
    if not hits:
        return None
    m = rng.choice(hits)
    return text[:m.start()] + rng.choice([" ", "", "?", " "]) + text[m.end():]


def _unknown_glyph(rng: random.Random, text: str) -> str | None:
    special = [i for i, ch in enumerate(text) if ord(ch) > 127 or ch in "-'\":"]
    if special and rng.random() < 0.7:
        i = rng.choice(special)
        return text[:i] + "?" + text[i + 1:]
    return rng.choice([f"? {text}", f"{text} ?", text.replace(" ", " ? ", 1)])


def _run_together(rng: random.Random, text: str) -> str | None:
    words = text.split(" ")
    if len(words) < 3:
        return None
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words) - 1)
        words[i:i + 2] = [words[i] + words[i + 1]]
        if len(words) < 2:
            break
    return " ".join(words)


def _split_word(rng: random.Random, text: str) -> str | None:
    long_words = [w for w in text.split(" ") if len(w) >= 7 and w.isalpha()]
    if not long_words:
        return None
    word = rng.choice(long_words)
    cut = rng.randint(2, len(word) - 2)
    return text.replace(word, f"{word[:cut]} {word[cut:]}", 1)


def _marker_residue(rng: random.Random, text: str) -> str | None:
    return text + rng.choice([" 1", " *", " ∗", " †", " \\Lambda", " ?", "1", " (1)"])


def gen_ocr_damage(ctx: Ctx, record: Record) -> str | None:
    return ocr_damage(ctx, ctx.case_title(record.title))


# --------------------------------------------------------------------------- generic strings


def gen_heading(ctx: Ctx) -> str:
    return _heading(ctx)


def gen_near_empty(ctx: Ctx) -> str:
    rng = ctx.rng
    pieces = ["?", "*", "†", "•", "-", "–", "©", "..", "|", "I", "S", "a", "ii", "iv", "x", "A B",
              "I S", "1 2 3", "( )", "[ ]", "#", "§", "et al", "n/a", "o", "Q", "––"]
    return " ".join(rng.choice(pieces) for _ in range(rng.choice([1, 1, 1, 2])))


def gen_number(ctx: Ctx) -> str:
    rng = ctx.rng
    n, m = rng.randint(1, 999), rng.randint(1, 60)
    return rng.choice([
        str(n), f"- {m} -", f"Page {m}", f"page {m} of {m + rng.randint(1, 30)}", f"p. {n}",
        f"pp. {n}-{n + m}", f"Vol. {m}", f"No. {m}", str(rng.randint(1950, 2021)), f"{m}({rng.randint(1, 12)})",
        f"ISSN {rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}", f"({m})", f"[{m}]", f"{m}.{rng.randint(1, 9)}",
        f"{m} {rng.randint(1, 99)} {rng.randint(1, 99)}", f"S{m}", f"{n}–{n + m}", f"{rng.randint(1, 12)}/{m}",
    ])


GENERATORS: dict[str, Callable[[Ctx, Record], str | None]] = {
    "affiliation": gen_affiliation, "authors": gen_authors, "venue": gen_venue,
    "abstract": gen_abstract, "copyright": gen_copyright, "keywords": gen_keywords,
    "truncated": gen_truncated, "heading_glued": gen_heading_glued, "header_glued": gen_header_glued,
    "authors_after": gen_authors_after, "affiliation_after": gen_affiliation_after,
    "citation": gen_citation, "toc_line": gen_toc_line, "ocr_damage": gen_ocr_damage,
}
GENERIC_GENERATORS: dict[str, Callable[[Ctx], str]] = {
    "heading": gen_heading, "near_empty": gen_near_empty, "number": gen_number,
}


def kind_available(kind: str, records: list[Record]) -> bool:
    """Whether any record can feed ``kind`` (DBLP/ACM has no affiliations, abstracts, ...)."""
    if kind in GENERIC_GENERATORS:
        return True
    needs = {
        "affiliation": lambda r: r.affiliations, "affiliation_after": lambda r: r.affiliations,
        "authors": lambda r: r.authors, "authors_after": lambda r: r.authors,
        "venue": lambda r: r.journal, "abstract": lambda r: len(r.abstract.split()) >= 12,
        "copyright": lambda r: r.copyright, "keywords": lambda r: len(r.keywords) >= 2,
    }.get(kind, lambda r: True)
    return any(needs(r) for r in records)
