"""The default corpus: correct vs wrongly extracted titles built offline from real records.

``ensure_corpus(cfg_data, cache_dir)`` returns the folder with train/val/test/cross_source CSVs
(columns text,label,kind,source,group) and manifest.json, building it on first use.
"""

from lib.corpus.build import COLUMNS, FILES, SPLITS, build_corpus, corpus_dir, ensure_corpus
from lib.corpus.spec import CorpusSpec, parse_spec

__all__ = ["COLUMNS", "FILES", "SPLITS", "CorpusSpec", "build_corpus", "corpus_dir", "ensure_corpus", "parse_spec"]
