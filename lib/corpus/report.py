"""Human-readable summaries of a built corpus (rich tables on the terminal)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lib.corpus.build import FILES


def load_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def kind_table(manifest: dict) -> Table:
    counts = manifest["counts"]
    table = Table(title=f"corpus {manifest['name']}-{manifest['key']} (seed {manifest['seed']}): rows per kind")
    table.add_column("kind")
    for name in FILES:
        table.add_column(name, justify="right")
    kinds = sorted({k for name in FILES for k in counts[name]["kind"]}, key=lambda k: (k != "title", k))
    for kind in kinds:
        table.add_row(kind, *(str(counts[name]["kind"].get(kind, 0)) for name in FILES))
    table.add_row(
        "[bold]label 1 / label 0",
        *(f"{counts[n]['label'].get('1', 0)} / {counts[n]['label'].get('0', 0)}" for n in FILES),
    )
    return table


def print_manifest(folder: Path, console: Console | None = None) -> None:
    console = console or Console()
    manifest = load_manifest(folder)
    console.print(kind_table(manifest))
    check = manifest["shortcut_check"]
    console.print(
        f"shortcut check (length, casing ratios, trailing punctuation only): logistic regression "
        f"{check['logreg_accuracy']:.3f} (grouped {len(check['logreg_fold_accuracies'])}-fold CV, bound "
        f"{check['bound']}), boosted trees on the test split {check['trees_test_accuracy']:.3f}"
    )
    for field, what in (("positive_noise", "extraction noise"), ("positive_forms", "title forms")):
        for part, counts in (manifest.get(field) or {}).items():  # corpora before corpus_version 4 have none
            total = sum(v for k, v in counts.items() if k != "none") if field == "positive_forms" else None
            shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "none")
            console.print(f"positives' {what} ({part}): {shown or 'none'}" + (f"; {total} in all" if total else ""))
    for part, counts in (manifest.get("negative_noise") or {}).items():  # data.noise_on_negatives only
        if counts:
            shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "none")
            console.print(f"negatives' extraction noise ({part}): {shown or 'none'}")
    for source in manifest["sources"]:
        console.print(f"source {source['name']}: {source['package']} {source['version']} ({source['used_for']})")
    for note in manifest["notes"]:
        console.print(f"note: {note}")
    console.print(f"content hash {manifest['content_hash'][:16]}…  folder {folder}")
