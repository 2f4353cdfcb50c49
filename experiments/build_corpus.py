"""Build (or find in the cache) the default corpus and print where it is and what it holds.

python experiments/build_corpus.py                  # default: conf/data/titles.yaml
python experiments/build_corpus.py data.size=20000 data.seed=1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import lib.paths  # noqa: E402,F401  (registers the ${project_root:} resolver before Hydra composes)
from lib.corpus import ensure_corpus  # noqa: E402
from lib.corpus.report import print_manifest  # noqa: E402
from lib.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        folder = ensure_corpus(cfg.data, Path(cfg.paths.cache))
    print_manifest(folder)


if __name__ == "__main__":
    main()
