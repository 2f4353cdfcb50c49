"""data.non_english_titles: MEDLINE's non-English articles join the in-source records under the
titles their PDFs print (VernacularTitle), Latin script only; the cross-source titles stay as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from lxml import etree
from omegaconf import OmegaConf

from lib.corpus import ensure_corpus, parse_spec, sources
from lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"size": 2000, "cross_source.size": 400}


def article(language: str, title: str, vernacular: str | None = None) -> etree._Element:
    vernacular_xml = f"<VernacularTitle>{vernacular}</VernacularTitle>" if vernacular else ""
    return etree.fromstring(
        f"""<PubmedArticle><MedlineCitation><PMID>12345</PMID><Article>
        <Journal><Title>Annales de dermatologie</Title><JournalIssue><Volume>3</Volume></JournalIssue></Journal>
        <ArticleTitle>{title}</ArticleTitle><Language>{language}</Language>{vernacular_xml}
        <AuthorList><Author><LastName>Dupont</LastName><ForeName>Marie</ForeName><Initials>M</Initials></Author>
        </AuthorList></Article></MedlineCitation></PubmedArticle>"""
    )


def test_a_non_english_article_is_read_under_its_original_title():
    el = article(
        "fre", "[Clear cell acanthoma in a patient with psoriasis].", "Acanthome à cellules claires chez un patient."
    )
    assert sources._medline_record(el, "medline:x") is None  # the English pass skips it, as before
    record = sources._medline_record(el, "medline_non_english:x", english=False)
    assert record.title == "Acanthome à cellules claires chez un patient"  # MEDLINE's closing period dropped
    assert record.authors == (("Dupont", "Marie", "M"),) and record.journal == "Annales de dermatologie"


@pytest.mark.parametrize(
    ("language", "vernacular"),
    [
        ("eng", None),  # an English article: the non-English pass leaves it to the English one
        ("rus", "Лечение гнойничковых заболеваний кожи сульфаниламидами"),  # not Latin script
        ("fre", None),  # no original title to print
    ],
    ids=["english", "cyrillic", "no-original-title"],
)
def test_the_non_english_pass_skips_what_a_pdf_would_not_show_as_such(language, vernacular):
    el = article(language, "[Treatment of pustular skin diseases with sulfonamides].", vernacular)
    assert sources._medline_record(el, "medline_non_english:x", english=False) is None


def test_the_option_leaves_the_default_corpus_hash_alone_and_is_checked():
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "titles.yaml"))
    legacy = {k: v for k, v in cfg.items() if k != "non_english_titles"}
    assert parse_spec(cfg).key == parse_spec(legacy).key
    assert parse_spec({**cfg, "non_english_titles": 100}).key != parse_spec(cfg).key
    for bad in (-1, "many", 1.5):
        with pytest.raises(ConfigError, match=r"^data\.non_english_titles must be an integer >= 0"):
            parse_spec({**cfg, "non_english_titles": bad})


def small_cfg(**overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "data" / "titles.yaml")
    for key, value in {**SMALL, **overrides}.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


@pytest.mark.slow
def test_a_build_with_non_english_titles_keeps_the_cross_source_set(tmp_path):
    plain = ensure_corpus(small_cfg(), tmp_path, show_progress=False)
    mixed = ensure_corpus(small_cfg(non_english_titles=3000), tmp_path, show_progress=False)
    # The same held-out titles and the same negative kinds; a few negatives are other strings of the
    # same records, where an in-source row took the first choice (no string is in two sets).
    before, after = (pd.read_csv(f / "cross_source.csv", keep_default_na=False) for f in (plain, mixed))
    assert before[before["label"] == 1]["text"].tolist() == after[after["label"] == 1]["text"].tolist()
    assert before["kind"].value_counts().to_dict() == after["kind"].value_counts().to_dict()

    manifest = json.loads((mixed / "manifest.json").read_text())
    (entry,) = [e for e in manifest["sources"] if e["name"] == "medline_non_english"]
    assert entry["records_used"] == 3000 and entry["records_available"] > 3000
    frames = pd.concat([pd.read_csv(mixed / f"{s}.csv", keep_default_na=False) for s in ("train", "val", "test")])
    foreign = frames[frames["source"].str.startswith("medline_non_english:")]
    titles = foreign[foreign["label"] == 1]["text"]
    # ~3000 of ~45,000 in-source records: a few percent of the 1,000 positives, every one in Latin script
    assert 20 <= len(titles) <= 150, len(titles)
    assert all(sources.latin_script(t) for t in titles)
    assert (foreign["label"] == 0).any()  # their authors, venues and broken titles are negatives, as English ones
    assert "held-out" not in " ".join(foreign["source"])
