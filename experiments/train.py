"""Train and evaluate one recipe, tracked in MLflow.

    python experiments/train.py model=scibert loss=focal adversarial=fgm schedule=cosine
    python experiments/train.py --multirun model=bert,scibert,roberta,deberta
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

import hydra  # noqa: E402

import lib.paths  # noqa: E402,F401  registers ${project_root:} before Hydra composes
from lib.errors import exit_on_user_error  # noqa: E402
from lib.run import run_training  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> float:
    with exit_on_user_error():
        metrics = run_training(cfg)
    return metrics.get(f"best_val_{cfg.trainer.early_stopping.metric}", float("nan"))  # for HPO sweepers


if __name__ == "__main__":
    main()
