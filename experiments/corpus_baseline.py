"""TF-IDF + logistic-regression baseline on the default corpus: accuracy and F1 on the in-source
test split, cross_source.csv and every labelled file of ``extra_eval`` that exists here.

    python experiments/corpus_baseline.py
    python experiments/corpus_baseline.py data.seed=1 extra_eval.citeseer_dev=/path/to/citeseer_dev.csv

Writes corpus_baseline.md into the Hydra run folder and prints the same table.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from rich.console import Console  # noqa: E402

import lib.paths  # noqa: E402,F401  (registers the ${project_root:} resolver before Hydra composes)
from lib.corpus import ensure_corpus  # noqa: E402
from lib.corpus.baseline import results_markdown, results_table, run_baseline  # noqa: E402
from lib.errors import UserError  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    console = Console()
    try:
        folder = ensure_corpus(cfg.data, Path(cfg.paths.cache))
        extra = OmegaConf.to_container(cfg.get("extra_eval") or {}, resolve=True)
        results, skipped = run_baseline(folder, extra)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    title = f"Baseline on corpus {folder.name}"
    for line in skipped:
        console.print(f"[yellow]{line}")
    console.print(results_table(results, title))
    out = Path(HydraConfig.get().runtime.output_dir) / "corpus_baseline.md"
    out.write_text(results_markdown(results, title) + "".join(f"\n{s}\n" for s in skipped))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
