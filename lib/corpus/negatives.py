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
from collections.abc import Callable
from dataclasses import dataclass

from lib.corpus.sources import Record
from lib.corpus.text import apply_casing, pick, title_case

REAL_KINDS = ("affiliation", "authors", "venue", "abstract", "copyright", "keywords", "org_header", "figure_label")
TITLE_KINDS = (
    "truncated",
    "heading_glued",
    "header_glued",
    "authors_after",
    "affiliation_after",
    "citation",
    "toc_line",
    "ocr_damage",
    "trailer_glued",
)
GENERIC_KINDS = ("heading", "near_empty", "number", "form_field")
ALL_KINDS = REAL_KINDS + TITLE_KINDS + GENERIC_KINDS

MONTHS = ("January February March April May June July August September October November December").split()
# Headings a title extractor picks up instead of, or before, the title.
HEADINGS = (
    "Abstract",
    "Contents",
    "Table of Contents",
    "References",
    "Bibliography",
    "Introduction",
    "Acknowledgements",
    "Acknowledgments",
    "Appendix",
    "Summary",
    "Conclusions",
    "Conclusion",
    "Discussion",
    "Methods",
    "Materials and Methods",
    "Results",
    "Related Work",
    "Background",
    "Preface",
    "Foreword",
    "Index",
    "Glossary",
    "Notation",
    "List of Figures",
    "List of Tables",
    "Keywords",
    "Executive Summary",
    "Overview",
    "Outline",
    "Revised",
    "Draft",
    "Errata",
    "Supplementary Material",
    "Supporting Information",
    "Reference",
    "Proof",
    "Preliminaries",
    "Motivation",
    "Experimental Section",
    "Case Report",
    "Case Presentation",
    "Future Work",
    "Evaluation",
    "Implementation",
    "Problem Statement",
    "Definitions",
    "Main Results",
    "Literature Review",
    "Data and Methods",
    "Study Design",
    "Limitations",
    "Recommendations",
    "Author Contributions",
    "Funding",
    "Conflict of Interest",
    "Ethics Statement",
    "Highlights",
    "Graphical Abstract",
    "Objectives",
    "Purpose",
    "Findings",
    "Nomenclature",
    "Symbols",
    "Contents Lists",
    "Abbreviations",
    "Corrigendum",
    "Editorial",
    "Letter to the Editor",
)
NUMBERED_HEADINGS = (
    "Chapter",
    "Part",
    "Section",
    "Appendix",
    "Figure",
    "Table",
    "Lemma",
    "Theorem",
    "Definition",
    "Algorithm",
    "Example",
    "Exercise",
    "Lecture",
)
PREFIX_LABELS = (
    "Abstract",
    "Research Article",
    "Original Article",
    "Review Article",
    "Review",
    "Letter",
    "Short Communication",
    "Brief Report",
    "Technical Note",
    "Running title:",
    "Running head:",
    "Article",
    "Research Paper",
    "Full Paper",
    "Position Paper",
    "Case Report",
    "Communication",
    "Editorial",
    "Commentary",
    "Perspective",
    "Minireview",
    "Original Research",
    "Rapid Report",
    "Technical Report",
    "Preprint",
    "Author manuscript",
    "Accepted manuscript",
    "Introduction",
    "Summary",
    "Invited Review",
    "Discussion Paper",
    "Working Paper",
    "Thesis",
    "Survey",
)
# Labels that, joined to a title with ": ", make a legitimate title form (positives.FORM_LABELS).
COLON_FORM_LABELS = frozenset({"Editorial", "Introduction", "Commentary", "Perspective", "Highlight"})
RUNNING_HEADERS = (
    "ARTICLE IN PRESS",
    "Author manuscript",
    "HHS Public Access",
    "NIH Public Access",
    "Europe PMC Funders Group",
    "Open Access",
    "RESEARCH ARTICLE",
    "Research Article Open Access",
    "BioMed Central",
    "Available online at www.sciencedirect.com",
    "Accepted Manuscript",
    "This is a preprint",
    "Draft - do not cite",
    "Published in final edited form as:",
    "Contents lists available at ScienceDirect",
    "Check for updates",
    "CORRESPONDENCE",
    "Peer reviewed",
    "Page 1 of 12",
    "Supplementary data",
    "OPEN",
    "PERSPECTIVE",
)
CONFERENCE_WORDS = (
    "International Conference on",
    "Annual Meeting of the Society for",
    "Workshop on",
    "Symposium on",
    "European Conference on",
    "Annual Congress of",
)
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "7th", "9th", "10th", "12th", "15th", "21st", "33rd")
SECTION_NUMBERS = ("1", "2", "3", "1.", "2.1", "3.2", "4.1.2", "I.", "II.", "IV.", "A.", "B.2")
# Generic vocabulary of report documentation pages, memos and forms (hand-written, the usual
# wording of such pages; no string is taken from any evaluation file).
FORM_FIELDS = (
    "Report No.",
    "Government Accession No.",
    "Recipient's Catalog No.",
    "Title and Subtitle",
    "Report Date",
    "Performing Organization Code",
    "Performing Organization Report No.",
    "Performing Organization Name and Address",
    "Work Unit No.",
    "Contract or Grant No.",
    "Contract Number",
    "Grant No.",
    "Grant Number",
    "Program Element Number",
    "Project Number",
    "Task Number",
    "Sponsoring Agency Name and Address",
    "Sponsoring/Monitoring Agency Name(s)",
    "Sponsoring Agency Code",
    "Type of Report and Period Covered",
    "Supplementary Notes",
    "Distribution Statement",
    "Distribution/Availability Statement",
    "Security Classification",
    "Security Classif. (of this report)",
    "No. of Pages",
    "Number of Pages",
    "Price",
    "Author(s)",
    "Principal Investigator",
    "Period of Performance",
    "Dates Covered",
    "Subject Terms",
    "Limitation of Abstract",
    "Name of Responsible Person",
    "Telephone Number",
    "Date Submitted",
    "Project Title",
    "Project Duration",
    "Status",
    "Reference",
    "Our ref.",
    "Document ID",
)
FORM_STATEMENTS = (
    "Approved for public release",
    "Approved for public release; distribution unlimited",
    "Approved for public release; distribution is unlimited",
    "Distribution unlimited",
    "Unclassified",
    "UNCLASSIFIED",
    "For official use only",
    "Not for distribution",
    "Not for quotation",
    "Do not cite without permission",
    "Subject to revision",
    "REPORT DOCUMENTATION PAGE",
    "Form Approved",
    "Technical Report Documentation Page",
    "Standard Form 298",
    "Prescribed by ANSI Std. Z39.18",
    "Internal use only",
    "Confidential",
    "Comments welcome",
    "Preliminary version",
    "Work in progress",
    "Under review",
)
STATUS_LINES = (
    "Technical Report",
    "Final Report",
    "Interim Report",
    "Progress Report",
    "Annual Report",
    "Quarterly Progress Report",
    "Final Technical Report",
    "Working Paper",
    "Discussion Paper",
    "Research Report",
    "Research Memorandum",
    "Technical Memorandum",
    "Technical Note",
    "Internal Report",
    "Internal Note",
    "Memorandum",
    "Memo",
    "Occasional Paper",
    "Project Report",
    "Deliverable",
    "Report",
    "Report No.",
    "Technical Report No.",
    "Working Paper No.",
    "Discussion Paper No.",
    "Research Paper No.",
    "DRAFT",
    "Draft",
    "Draft Version",
    "Preliminary Draft",
    "Revised Draft",
    "Working Draft",
    "Unpublished manuscript",
    "Submitted manuscript",
    "Manuscript",
    "Revised version",
    "Final version",
)
# Figure / table / diagram labels: generic axis, unit and block names.
FIGURE_WORDS = ("Figure", "Fig.", "FIGURE", "FIG.", "Table", "TABLE", "Chart", "Plate", "Scheme", "Exhibit")
AXIS_LABELS = (
    "Time (s)",
    "Time (min)",
    "Time (h)",
    "Time [ms]",
    "Frequency (Hz)",
    "Frequency [kHz]",
    "Temperature (°C)",
    "Temperature (K)",
    "Voltage (V)",
    "Current (mA)",
    "Pressure (kPa)",
    "Concentration (mg/l)",
    "Concentration (µM)",
    "Distance (m)",
    "Depth (cm)",
    "Mass (g)",
    "Energy (eV)",
    "Wavelength (nm)",
    "Amplitude",
    "Intensity (a.u.)",
    "Number of samples",
    "Number of iterations",
    "Error rate (%)",
    "Accuracy (%)",
    "Response time",
    "Throughput",
    "Sample size",
    "Input",
    "Output",
    "Controller",
    "Sensor",
    "Amplifier",
    "Filter",
    "Encoder",
    "Decoder",
    "Channel",
    "Receiver",
    "Transmitter",
    "Power supply",
    "Control unit",
    "Feedback",
    "Data bus",
    "Memory",
    "Processor",
    "Database",
    "User interface",
    "Server",
    "Client",
)
ORG_WORDS = re.compile(
    r"\b(Department|Dept\.?|Laborator|Labs?\b|Institut|Cent(er|re)|Universit|College|School|Division|"
    r"Program|Unit\b|Faculty|Foundation|Agency|Council|Ministry|Academy|Society|Service|Group|"
    r"Hospital|Clinic\b|Bureau|Office|Board|Commission|Administration|Corporation|Company|"
    r"Inc\.?$|Ltd\.?$|GmbH|LLC|Pharmaceuticals?\b|Technologies)",
    re.I,
)
REPORT_SERIES = (
    "Technical Report Series",
    "Research Report Series",
    "Working Paper Series",
    "Discussion Papers",
    "Technical Memorandum",
    "Report Series",
    "Occasional Papers",
    "Technical Reports",
    "Annual Report",
    "Research Bulletin",
    "Contractor Report",
)
EEO_STATEMENTS = (
    "An Equal Opportunity Employer",
    "An Equal Opportunity/Affirmative Action Employer",
    "Equal Opportunity Employer",
    "an equal opportunity/affirmative action institution",
    "AA/EOE",
    "An Affirmative Action/Equal Opportunity Employer",
    "is an equal opportunity employer",
)
PRESENTED_AT = (
    "Paper presented at the",
    "Presented at the",
    "Paper presented to the",
    "Poster presented at the",
    "Invited talk at the",
    "Submitted to",
    "To appear in",
    "Accepted for publication in",
    "Prepared for the",
    "Contribution to the",
)
MEETINGS = (
    "Annual Meeting",
    "Annual Conference",
    "International Conference",
    "Workshop",
    "Symposium",
    "National Conference",
    "Spring Meeting",
    "Joint Meeting",
)
# Words a wrapped title line ends on: prepositions, articles, conjunctions ...
DANGLING_WORDS = frozenset(
    "a an and as at but by for from in into nor of on or per the to via vs with without "
    "between among towards toward under over through using its their".split()
)
# ... or an adjective whose noun went to the next line.
_ADJECTIVE = re.compile(r"(al|ic|ive|ous|ary|ar|ent|ant|ible|able|less|ful|ian|ical|ular)$", re.I)
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
    return " ".join(text.split()[: max(1, n_words)])


def _journal_name(record: Record) -> str:
    # MEDLINE's full titles are lower case with a place qualifier: "Chemical science (Cambridge)".
    name = re.sub(r"\s*[(:;].*$", "", record.journal).strip() or record.journal
    return title_case(name) if name[1:] == name[1:].lower() else name


# --------------------------------------------------------------------------- authors / affiliations


def format_authors(ctx: Ctx, authors, n: int) -> str:
    rng, chosen = ctx.rng, list(authors[: max(1, n)])
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
        names = [
            f"{fore} {last}{rng.choice(['1', '2', '1,2', '*', 'a', '1*', ''])}".strip() for last, fore, _ in chosen
        ]
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
    low = max(1, round(0.35 * len(words)))
    keep = ctx.rng.randint(low, len(words) - 1)
    if ctx.rng.random() < 0.8:  # mostly the first line of a wrapped title block ...
        if ctx.rng.random() < 0.6:  # ... often broken after a preposition, article, conjunction or adjective
            dangling = [k for k in range(low, len(words)) if is_dangling(words[k - 1])]
            if dangling:
                keep = ctx.rng.choice(dangling)
        return " ".join(words[:keep])
    return " ".join(words[-keep:])  # sometimes only its last line


def is_dangling(word: str) -> bool:
    """A word a title cannot end on: function word, or adjective-shaped (its noun is missing)."""
    bare = word.strip(",;:-").lower()
    return bare in DANGLING_WORDS or (len(bare) >= 5 and bare.isalpha() and bool(_ADJECTIVE.search(bare)))


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
    separator = rng.choice([" ", " ", ": ", " - ", ". "])
    if separator == ": " and label.title() in COLON_FORM_LABELS:
        separator = " "  # "Editorial: <title>" is a title form (lib/corpus/positives), not a glued heading
    return f"{label}{separator}{title}" if not label.endswith(":") else f"{label} {title}"


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
        lambda: f'{title}", {journal}, {year}',
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
    leader = rng.choice(
        [
            " " + "." * rng.randint(4, 40),
            " " + ". " * rng.randint(3, 15),
            " " + ":" * rng.randint(4, 30),
            " " + "…" * rng.randint(2, 12),
            " ",
        ]
    )
    prefix = rng.choice(["", "", f"{rng.choice(SECTION_NUMBERS)} ", "CONTENTS ", "Contents "])
    page = rng.randint(1, 450)
    if not leader.strip() and page < 10:  # "<title> 1" after a bare space is a footnote marker (a positive)
        page += 10
    return f"{prefix}{title}{leader.rstrip()} {page}"


def ocr_damage(ctx: Ctx, title: str) -> str | None:
    rng, text = ctx.rng, title
    # No footnote-marker residue: a marker glued to a title does not make it wrong (issue 29: real
    # titles carry them; lib/corpus/positives.add_marker adds them to positives).
    damages = [_lose_ligature, _unknown_glyph, _run_together, _split_word]
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
    return text[: m.start()] + rng.choice([" ", "", "?", " "]) + text[m.end() :]


def _unknown_glyph(rng: random.Random, text: str) -> str | None:
    special = [i for i, ch in enumerate(text) if ord(ch) > 127 or ch in "-'\":"]
    if special and rng.random() < 0.7:
        i = rng.choice(special)
        return text[:i] + "?" + text[i + 1 :]
    return rng.choice([f"? {text}", f"{text} ?", text.replace(" ", " ? ", 1)])


def _run_together(rng: random.Random, text: str) -> str | None:
    words = text.split(" ")
    if len(words) < 3:
        return None
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words) - 1)
        words[i : i + 2] = [words[i] + words[i + 1]]
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


def gen_ocr_damage(ctx: Ctx, record: Record) -> str | None:
    return ocr_damage(ctx, ctx.case_title(record.title))


# --------------------------------------------------------------------------- organisation / form / figure


def org_names(record: Record) -> list[str]:
    """Organisation names of a record: affiliation parts naming a unit, and funding agencies."""
    names = []
    for aff in record.affiliations:
        for part in _EMAIL.sub("", aff).rstrip(" .;").split(", "):
            part = part.strip(" .;")
            balanced = part.count("(") == part.count(")") and part.count("[") == part.count("]")
            if 2 <= len(part.split()) <= 10 and ORG_WORDS.search(part) and "@" not in part and balanced:
                names.append(part)
    names += [agency for agency, _ in record.grants if len(agency.split()) >= 2 or agency.isupper()]
    return list(dict.fromkeys(names))


def _acronym(name: str) -> str:
    letters = "".join(w[0] for w in name.split() if w[:1].isupper())
    return letters if len(letters) >= 2 else name.split()[0].upper()[:4]


def _org_casing(ctx: Ctx, text: str) -> str:
    mode = ctx.rng.choices(["upper", "title", "keep"], weights=[40, 35, 25])[0]
    return apply_casing(text, mode)


def gen_org_header(ctx: Ctx, record: Record) -> str | None:
    names = org_names(record)
    if not names:
        return None
    rng, name = ctx.rng, ctx.rng.choice(names)
    style = rng.randrange(6)
    if style == 1 and len(names) > 1:  # two units stacked on a title page, read as one line
        other = rng.choice([n for n in names if n != name])
        text = f"{name} {other}"
    elif style == 2:  # a report series of that organisation
        text = f"{name} {rng.choice(REPORT_SERIES)}"
    elif style == 3:  # acronym header: "NIH Technical Report", "MRC Unit"
        text = f"{_acronym(name)} {rng.choice(REPORT_SERIES)}"
    else:
        text = name
    return _org_casing(ctx, text)


def _report_number(ctx: Ctx, record: Record | None = None) -> str:
    rng = ctx.rng
    year = record.year if record and record.year else str(rng.randint(1975, 2021))
    grant_ids = [gid for _, gid in (record.grants if record else ()) if gid and len(gid) <= 24]
    if grant_ids and rng.random() < 0.4:
        return rng.choice(["Grant No. ", "Grant ", "Contract No. ", "Project "]) + rng.choice(grant_ids)
    acr = "".join(rng.choice("ABCDEFGHILMNPRSTU") for _ in range(rng.randint(2, 4)))
    return rng.choice(
        [
            f"Technical Report {acr}-TR-{year[2:]}-{rng.randint(1, 60):02d}",
            f"Report No. {rng.randint(1, 999)}",
            f"{acr}-{year}-{rng.randint(1, 150)}",
            f"Project No. {rng.randint(100, 99999)}",
            f"Working Paper No. {rng.randint(1, 300)}",
            f"TR {year[2:]}-{rng.randint(1, 40)}",
            f"Contract {acr}{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            f"Memo {rng.randint(1, 500)}",
        ]
    )


def gen_form_field(ctx: Ctx) -> str:
    rng = ctx.rng
    year, month = rng.randint(1975, 2021), rng.choice(MONTHS)
    style = rng.randrange(6)
    if style == 0:  # numbered box of a report documentation page
        text = f"{rng.randint(1, 22)}{rng.choice(['. ', ' ', '.'])}{rng.choice(FORM_FIELDS)}"
    elif style == 1:  # a box with its value
        field_name = rng.choice(FORM_FIELDS).rstrip(".")
        value = rng.choice(
            [
                str(rng.randint(1, 99999)),
                f"{month} {year}",
                "Final",
                "Unclassified",
                f"{rng.randint(1, 60)} months",
                f"{rng.randint(10, 400)}",
                "Open",
                "N/A",
            ]
        )
        text = f"{field_name}{rng.choice([': ', ' '])}{value}"
    elif style == 2:
        text = rng.choice(FORM_STATEMENTS)
    elif style == 3:  # a memo / status line with a number or date
        status = rng.choice(STATUS_LINES)
        tail = rng.choice(
            [
                f" {rng.randint(1, 300)}",
                f" No. {rng.randint(1, 300)}",
                f", {month} {year}",
                f" {year}-{rng.randint(1, 40):02d}",
                f" {month} {rng.randint(1, 28)}, {year}",
                f" (v{rng.randint(0, 3)}.{rng.randint(0, 9)})",
                " — do not cite",
                "",
            ]
        )
        text = f"{status} {rng.randint(1, 300)}" if status.endswith("No.") else status + tail
    elif style == 4:
        report = rng.choice(
            [
                "Progress Report",
                "Annual Report",
                "Interim Report",
                "Quarterly Report",
                "Status Report",
                "Final Report",
                "Quarterly Progress Report",
                "Milestone Report",
            ]
        )
        text = f"{report} {rng.choice(['for Year', 'Year', 'Phase', 'No.', 'Period', 'Q'])} {rng.randint(1, 5)}"
    else:
        text = _report_number(ctx)
    return _upper_or_not(ctx, text.replace("  ", " ").strip(), 0.25)


def _caption_from(ctx: Ctx, record: Record) -> str:
    rng = ctx.rng
    if record.keywords and rng.random() < 0.4:
        chosen = rng.sample(list(record.keywords), min(len(record.keywords), rng.randint(1, 3)))
        lead = rng.choice(["", "Distribution of ", "Effect of ", "Comparison of ", "Overview of "])
        return lead + " and ".join(chosen)
    sentences = re.split(r"(?<=\.)\s", re.sub(r"^\w+: ", "", record.abstract))
    sentence = rng.choice(sentences[:4]) if sentences else record.abstract
    return _clip_words(sentence.rstrip("."), rng.randint(3, 12))


def gen_figure_label(ctx: Ctx, record: Record) -> str | None:
    if len(record.abstract.split()) < 12 and len(record.keywords) < 2:
        return None
    rng = ctx.rng
    number = rng.choice(
        [
            str(rng.randint(1, 12)),
            f"{rng.randint(1, 6)}.{rng.randint(1, 9)}",
            rng.choice(["A1", "S1", "S2", "2a", "3b", "IV"]),
        ]
    )
    style = rng.randrange(5)
    if style == 0:  # bare label
        text = f"{rng.choice(FIGURE_WORDS)} {number}"
    elif style in (1, 2):  # label and the start of its caption
        text = f"{rng.choice(FIGURE_WORDS)} {number}{rng.choice([': ', '. ', ' ', ' – '])}{_caption_from(ctx, record)}"
    elif style == 3:  # axis / variable labels read across a plot
        labels = rng.sample(AXIS_LABELS, rng.randint(1, 3))
        if record.keywords and rng.random() < 0.5:
            labels.insert(rng.randrange(len(labels) + 1), rng.choice(record.keywords))
        text = rng.choice(["  ", " ", " vs. ", " / "]).join(labels)
    else:  # boxes of a block diagram, one word or phrase each
        boxes = rng.sample(AXIS_LABELS[27:], rng.randint(2, 4))
        text = rng.choice([" ", " → ", " -> ", " + "]).join(boxes)
    return ctx.case_other(text)


def gen_trailer_glued(ctx: Ctx, record: Record) -> str | None:
    rng, title = ctx.rng, ctx.case_title(record.title)
    style = rng.randrange(6)
    if style == 0 and record.journal:  # the journal or venue line after the title
        trailer = _journal_name(record)
        if rng.random() < 0.4 and record.year:
            trailer += rng.choice([f" {record.year}", f", {record.volume or rng.randint(1, 60)}", f" ({record.year})"])
    elif style == 1:  # "Paper presented at the ... Meeting of ..."
        topic = _journal_name(record) if record.journal else rng.choice(ORG_FALLBACK)
        year = record.year or str(rng.randint(1975, 2021))
        presented = rng.choice(PRESENTED_AT)  # the draws in this order: the corpus of a seed must not change
        ordinal = rng.choice(["", f"{rng.choice(ORDINALS)} "])
        trailer = f"{presented} {ordinal}{rng.choice(MEETINGS)} of the {topic}"
        if rng.random() < 0.5:
            trailer += f", {rng.choice(MONTHS)} {year}"
    elif style == 2:  # a project / report / grant number
        trailer = _report_number(ctx, record)
    elif style == 3:  # equal-opportunity / employer statement of the issuing body
        names, statement = org_names(record), rng.choice(EEO_STATEMENTS)
        if names and rng.random() < 0.3:  # "<organisation> is an equal opportunity employer"
            statement = (
                f"{rng.choice(names)} is {statement.removeprefix('is ')[0].lower()}{statement.removeprefix('is ')[1:]}"
            )
        trailer = statement
    elif style == 4 and (record.grants or record.affiliations):  # the issuing organisation
        names = org_names(record)
        if not names:
            return None
        trailer = rng.choice(names)
    else:  # a memo / status line
        trailer = rng.choice(STATUS_LINES) + rng.choice(
            ["", f" {rng.randint(1, 99)}", f", {rng.choice(MONTHS)} {record.year or 2000}"]
        )
    trailer = _upper_or_not(ctx, trailer, 0.2)
    return f"{title}{rng.choice([' ', ' ', '. ', ', ', ' - '])}{trailer}"


ORG_FALLBACK = (
    "Association for Computing Machinery",
    "American Statistical Association",
    "Society for Industrial and Applied Mathematics",
    "American Economic Association",
)


# --------------------------------------------------------------------------- generic strings


def gen_heading(ctx: Ctx) -> str:
    return _heading(ctx)


def gen_near_empty(ctx: Ctx) -> str:
    rng = ctx.rng
    pieces = [
        "?",
        "*",
        "†",
        "•",
        "-",
        "–",
        "©",
        "..",
        "|",
        "I",
        "S",
        "a",
        "ii",
        "iv",
        "x",
        "A B",
        "I S",
        "1 2 3",
        "( )",
        "[ ]",
        "#",
        "§",
        "et al",
        "n/a",
        "o",
        "Q",
        "––",
    ]
    return " ".join(rng.choice(pieces) for _ in range(rng.choice([1, 1, 1, 2])))


def gen_number(ctx: Ctx) -> str:
    rng = ctx.rng
    n, m = rng.randint(1, 999), rng.randint(1, 60)
    return rng.choice(
        [
            str(n),
            f"- {m} -",
            f"Page {m}",
            f"page {m} of {m + rng.randint(1, 30)}",
            f"p. {n}",
            f"pp. {n}-{n + m}",
            f"Vol. {m}",
            f"No. {m}",
            str(rng.randint(1950, 2021)),
            f"{m}({rng.randint(1, 12)})",
            f"ISSN {rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
            f"({m})",
            f"[{m}]",
            f"{m}.{rng.randint(1, 9)}",
            f"{m} {rng.randint(1, 99)} {rng.randint(1, 99)}",
            f"S{m}",
            f"{n}–{n + m}",
            f"{rng.randint(1, 12)}/{m}",
        ]
    )


GENERATORS: dict[str, Callable[[Ctx, Record], str | None]] = {
    "affiliation": gen_affiliation,
    "authors": gen_authors,
    "venue": gen_venue,
    "abstract": gen_abstract,
    "copyright": gen_copyright,
    "keywords": gen_keywords,
    "truncated": gen_truncated,
    "heading_glued": gen_heading_glued,
    "header_glued": gen_header_glued,
    "authors_after": gen_authors_after,
    "affiliation_after": gen_affiliation_after,
    "citation": gen_citation,
    "toc_line": gen_toc_line,
    "ocr_damage": gen_ocr_damage,
    "org_header": gen_org_header,
    "figure_label": gen_figure_label,
    "trailer_glued": gen_trailer_glued,
}
GENERIC_GENERATORS: dict[str, Callable[[Ctx], str]] = {
    "heading": gen_heading,
    "near_empty": gen_near_empty,
    "number": gen_number,
    "form_field": gen_form_field,
}


def kind_available(kind: str, records: list[Record]) -> bool:
    """Whether any record can feed ``kind`` (DBLP/ACM has no affiliations, abstracts, ...)."""
    if kind in GENERIC_GENERATORS:
        return True
    needs = {
        "affiliation": lambda r: r.affiliations,
        "affiliation_after": lambda r: r.affiliations,
        "authors": lambda r: r.authors,
        "authors_after": lambda r: r.authors,
        "venue": lambda r: r.journal,
        "abstract": lambda r: len(r.abstract.split()) >= 12,
        "copyright": lambda r: r.copyright,
        "keywords": lambda r: len(r.keywords) >= 2,
        "org_header": lambda r: r.affiliations or r.grants,
        "figure_label": lambda r: len(r.abstract.split()) >= 12 or len(r.keywords) >= 2,
    }.get(kind, lambda r: True)
    return any(needs(r) for r in records)
