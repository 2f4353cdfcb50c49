"""What pruning saves: the same tiny-model Optuna search run with pruner=none and with pruner=median.

    python benchmarks/search_pruning.py                      # 16 trials each, sampler seed 0
    python benchmarks/search_pruning.py trials=4 out=/tmp/pruning pruners=none,median,hyperband

Each search is one `experiments/train.py --multirun search=tiny_lr` command
(conf/search/tiny_lr.yaml: tiny_bert on 3,200 rows of the default corpus, two
epochs, validation every 40 steps, only schedule.lr searched over 1e-5..3e-1), in its own outputs
folder and study, one after the other on the same machine. Reported per pruner: the optimiser steps
all trials did (the run metric train_steps: a machine-independent cost), the trials pruned, the
best validation F1 found, the command's wall time and the summed training time. Writes JSON and
Markdown to benchmarks/results/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlflow import MlflowClient  # noqa: E402

from benchmarks.machine import cpu_flags, cpu_model  # noqa: E402
from lib.cli import parse_key_values  # noqa: E402
from lib.tracking import PRUNED_TAG, ROLE_TAG  # noqa: E402

OPTIONS = {
    "trials": "trials per search (default 16)",
    "pruners": "comma-separated pruners to compare (default none,median)",
    "out": "folder for the searches' outputs and studies (default outputs/bench/search_pruning)",
}


def run_search(pruner: str, trials: int, out: Path) -> dict:
    folder = out / pruner
    command = [
        sys.executable,
        str(ROOT / "experiments" / "train.py"),
        "--multirun",
        "search=tiny_lr",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.study_name=pruning-bench-{pruner}",
        f"paths.outputs={folder}",
        f"paths.cache={ROOT / 'outputs' / 'cache'}",  # the default corpus, built once for every search
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: the {pruner} search failed (exit {done.returncode}): {done.stderr[-1500:]}")
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("titlesweep").experiment_id], max_results=10_000)
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    trials_runs = [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]
    return {
        "pruner": pruner,
        "trials": len(trials_runs),
        "trials_pruned": sum(r.data.tags.get(PRUNED_TAG) == "true" for r in trials_runs),
        "train_steps": int(sum(r.data.metrics.get("train_steps", 0) for r in trials_runs)),
        "planned_steps": int(sum(int(r.data.params["train.total_steps"]) for r in trials_runs)),
        "train_seconds": round(sum(r.data.metrics.get("train_seconds", 0) for r in trials_runs), 1),
        "wall_seconds": round(wall, 1),
        "best_value": parent.data.metrics.get("best_value"),
        "best_lr": parent.data.params.get("best.schedule.lr"),
        "sweep_run": parent.info.run_id,
    }


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| pruner | trials | pruned | optimiser steps done (planned) | training s | wall s | best val F1 | best lr |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        best = "-" if r["best_value"] is None else f"{r['best_value']:.4f}"
        lr = "-" if r["best_lr"] is None else f"{float(r['best_lr']):.2e}"
        lines.append(
            f"| {r['pruner']} | {r['trials']} | {r['trials_pruned']} | {r['train_steps']} ({r['planned_steps']}) | "
            f"{r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | {best} | {lr} |"
        )
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> None:
    options = parse_key_values(args, "python benchmarks/search_pruning.py [key=value ...]", OPTIONS, __doc__)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SystemExit(f"error: unknown option(s) {', '.join(unknown)}; choose from {', '.join(OPTIONS)}")
    trials = int(options.get("trials", 16))
    out = Path(options.get("out", ROOT / "outputs" / "bench" / "search_pruning")).resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: out={out} is not empty; the searches would continue earlier studies there")
    rows = []
    for pruner in options.get("pruners", "none,median").split(","):
        print(f"search with pruner={pruner}, {trials} trials ...", flush=True)
        rows.append(run_search(pruner, trials, out))
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{cpu_model()} ({', '.join(cpu_flags()) or 'no AVX2/AVX-512 flags'}), 2 cores"
    header = (
        f"`python benchmarks/search_pruning.py trials={trials}` on {date.today()}, {machine}: the same "
        "search (conf/search/tiny_lr.yaml), one pruner after the other"
    )
    text = markdown(rows, header)
    print(text)
    results = ROOT / "benchmarks" / "results"
    stem = f"{date.today()}-search-pruning-{cpu_model().lower().replace(' ', '-')[:40]}"
    (results / f"{stem}.json").write_text(json.dumps({"machine": machine, "trials": trials, "rows": rows}, indent=1))
    (results / f"{stem}.md").write_text(text)
    print(f"written: benchmarks/results/{stem}.json and .md")


if __name__ == "__main__":
    main(sys.argv[1:])
