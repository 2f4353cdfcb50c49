"""Shared fixtures: configs composed exactly as experiments/train.py composes them, and small
labelled files written per test. Everything runs offline on the CPU."""

import csv
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lib.paths import CONF_DIR, PROJECT_ROOT

TITLE_WORDS = (
    "protein graph network learning analysis yeast market theory kernel genome "
    "bayesian inference optimal control sparse retrieval"
).split()
JUNK_WORDS = (
    "abstract contents introduction references page vol pp proceedings university "
    "department received accepted copyright press"
).split()


# A 2-layer BERT-shaped config for unit tests of the loop and the adversaries: fast, and no dropout,
# so two forward passes of the same batch agree.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    vocab_size=100,
    num_labels=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


# A tiny_bert run that learns the toy CSV (write_toy_csv) in 2 epochs: test accuracy >= 0.9, chance 0.5.
def toy_learning_run(toy_csv: Path, *extra: str) -> list[str]:
    return [
        "model=tiny_bert",
        "data=csv",
        f"data.train={toy_csv}",
        "trainer.epochs=2",
        "schedule.lr=1e-3",
        "schedule.warmup_ratio=0.0",
        "trainer.batch_size=16",
        *extra,
    ]


# The files that take longest (minutes each: services, interrupted-and-resumed runs, sweeps; from
# `--durations` on a 2-core machine, 2026-12-02), collected first: `-n 2 --dist loadfile` (pyproject)
# hands whole files to the two workers in collection order, so they start early and both workers
# finish together, instead of one running the last long file alone.
LONGEST_FIRST = (
    "test_search.py",
    "test_slurm.py",
    "test_sweep.py",
    "test_continue_sweep.py",
    "test_postgres_server.py",
    "test_resume.py",
    "test_cli.py",
    "test_server.py",
    "test_ui_screenshots.py",
    "test_predict.py",
    "test_corpus_sources.py",
    "test_corpus.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def write_toy_csv(path: Path, n_per_class: int = 200, seed: int = 0, header=("text", "label")) -> Path:
    """A clearly separable set: titles from one vocabulary, wrong extractions from another."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_per_class):
        rows.append((" ".join(rng.choice(TITLE_WORDS) for _ in range(rng.randint(4, 9))).capitalize(), 1))
        rows.append((" ".join(rng.choice(JUNK_WORDS) for _ in range(rng.randint(2, 6))) + f" {rng.randint(1, 999)}", 0))
    rng.shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    return write_toy_csv(tmp_path / "toy.csv")


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) with outputs under tmp_path, no model logging and no extra eval sets."""

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                "config",
                overrides=[
                    f"paths.outputs={tmp_path / 'outputs'}",
                    "tracking.log_model=false",
                    "extra_eval=null",
                    *overrides,
                ],
            )

    return make


CITESEER_DEV = PROJECT_ROOT.parent / "shared" / "data" / "citeseer_dev.csv"
