"""Corpus report: the TF-IDF + logistic-regression baseline and the latest tracked MiniLM run on
the default corpus, each scored on the in-source test split, cross_source.csv and every labelled
file of ``extra_eval`` that exists here (the real CiteSeer sample).

    python experiments/train.py              # the default MiniLM run (tracked in MLflow)
    python experiments/corpus_report.py      # baseline + that run, one table
    python experiments/corpus_report.py data.seed=1 extra_eval.citeseer_dev=/path/to/citeseer_dev.csv

Writes corpus_report.md into the Hydra run folder and prints the same table.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from rich.console import Console  # noqa: E402

import lib.paths  # noqa: E402,F401  (registers the ${project_root:} resolver before Hydra composes)
from lib.corpus import ensure_corpus  # noqa: E402
from lib.corpus.baseline import results_markdown, results_table, run_baseline, tracked_results  # noqa: E402
from lib.errors import exit_on_user_error  # noqa: E402
from lib.tracking import tracking_uri  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    console = Console()
    with exit_on_user_error():
        folder = ensure_corpus(cfg.data, Path(cfg.paths.cache))
        extra = OmegaConf.to_container(cfg.get("extra_eval") or {}, resolve=True)
        results, skipped = run_baseline(folder, extra)
    tracked = tracked_results(MlflowClient(tracking_uri(cfg)), cfg.tracking.experiment, cfg.data)
    if not tracked:
        skipped.append("no finished minilm run on this corpus in MLflow: run `python experiments/train.py` first")
    title = f"Corpus {folder.name}: in-source test, cross-source and real CiteSeer"
    for line in skipped:
        console.print(f"[yellow]{line}")
    console.print(results_table(results + tracked, title))
    out = Path(HydraConfig.get().runtime.output_dir) / "corpus_report.md"
    out.write_text(results_markdown(results + tracked, title) + "".join(f"\n{s}\n" for s in skipped))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
