"""Training and inference throughput of our loop, the Hugging Face Trainer and the original
pad-to-max_length approach, side by side in one process, on the same data, model, batch size,
learning rate and precision.

    python benchmarks/throughput.py model=minilm
    python benchmarks/throughput.py model=minilm bench.steps=40 bench.reps=5 bench.out=/tmp/b.json
    python benchmarks/throughput.py model=tiny_bert data=csv data.train=titles.csv bench.steps=5 bench.reps=1
    python benchmarks/throughput.py bench.reps=0 bench.projection.enabled=true   # bert-base-sized CPU projection only

Repetitions are interleaved (ours, Trainer, padded, ours bf16, ours, Trainer, ...) after one
untimed warm-up round, so a load spike on a shared machine hits every variant alike. Each run
starts from the same weights; run i of every variant uses seed trainer.seed + i. Prints a table
of medians and ratios and writes JSON (and the same tables as Markdown beside it).
Settings: benchmarks/conf/throughput.yaml; needs the `bench` extra (accelerate) for the Trainer.
"""

import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from rich.console import Console  # noqa: E402

import lib.paths  # noqa: E402,F401  registers ${project_root:}, used by hydra.searchpath
from benchmarks import machine, report  # noqa: E402
from benchmarks.projection import refuse_off_cpu  # noqa: E402
from benchmarks.variants import Setup, variants  # noqa: E402
from lib.batching import encode  # noqa: E402
from lib.data import load_data  # noqa: E402
from lib.device import resolve_device, resolve_precision  # noqa: E402
from lib.errors import exit_on_user_error  # noqa: E402
from lib.losses import build_loss  # noqa: E402
from lib.models import build_model  # noqa: E402

console = Console(width=170)  # the result table is wide; logs and pipes default to 80 columns


def build_setup(cfg, device: torch.device, precision: str) -> Setup:
    """Load the data, tokenize it once (truncated at bench.max_length for every variant), load the
    starting weights once."""
    splits = load_data(cfg)
    val = splits.val
    if cfg.bench.infer_titles and len(val) > cfg.bench.infer_titles:
        val = val.sample(cfg.bench.infer_titles, random_state=cfg.trainer.seed)
    model, tokenizer = build_model(cfg.model, splits.train["text"].tolist(), Path(cfg.paths.cache))
    max_length = _max_length(cfg.bench.max_length, model)
    tokens = lambda frame: encode(tokenizer, frame["text"].tolist(), max_length)  # noqa: E731
    return Setup(
        cfg,
        device,
        precision,
        model.cpu(),
        tokenizer,
        tokens(splits.train),
        splits.train["label"].tolist(),
        tokens(val),
        val["label"].tolist(),
        val["text"].tolist(),
        build_loss(cfg.loss).to(device),
        max_length,
    )


def _max_length(wanted: int, model) -> int:
    """bench.max_length, or less where the model has fewer positions (the tiny models: model.max_length
    + 4, of which RoBERTa's offset takes 2)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and wanted > positions - 2:
        console.print(
            f"[yellow]bench.max_length={wanted} > this model's {positions - 2} positions; using {positions - 2}"
        )
        return positions - 2
    return wanted


def timed_run(run, seed: int, steps: int, device: torch.device, threads: int) -> dict:
    gc.collect()  # leftovers of the previous variant are not this one's memory or time
    machine.pin_threads(threads)
    with machine.PeakMemory(device) as memory:
        outcome = run(seed, steps)
    return {**outcome.as_dict(), **memory.report(), "seed": seed}


def run_rounds(cfg, runs_by_label: dict, device: torch.device, threads: int) -> dict[str, list[dict]]:
    """One untimed warm-up round, then bench.reps interleaved rounds."""
    bench, seed = cfg.bench, cfg.trainer.seed
    if bench.warmup_steps and bench.reps:
        for label, run in runs_by_label.items():
            console.print(f"[dim]warm-up: {label}")
            timed_run(run, seed, bench.warmup_steps, device, threads)
    results = {label: [] for label in runs_by_label}
    for rep in range(bench.reps):
        for label, run in runs_by_label.items():
            console.print(f"[bold]round {rep + 1}/{bench.reps}: {label}")
            results[label].append(timed_run(run, seed + rep, bench.steps, device, threads))
            r = results[label][-1]
            console.print(
                f"  {r['train_samples_per_s']:.1f} samples/s, {r['infer_titles_per_s']:.0f} titles/s, "
                f"accuracy {r['accuracy']:.4f}"
            )
    return results


def settings(cfg, setup: Setup, threads: int) -> dict:
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "train_titles": len(setup.train_ids),
        "val_titles": len(setup.val_ids),
        "batch_size": setup.batch_size,
        "eval_batch_size": setup.eval_batch_size,
        "lr": float(cfg.schedule.lr),
        "schedule": cfg.schedule.name,
        "precision": setup.precision,
        "threads": threads,
        "steps": cfg.bench.steps,
        "reps": cfg.bench.reps,
        "warmup_steps": cfg.bench.warmup_steps,
        "max_length": setup.max_length,
        "attn_implementation": cfg.model.attn_implementation,
        "compile": cfg.trainer.compile,
    }


def output_path(cfg, info: dict) -> Path:
    if cfg.bench.out:
        return Path(cfg.bench.out)
    kind = "" if cfg.bench.reps else "-projection"  # a projection-only run keeps the side-by-side file
    return ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-{machine.slug(info)}{kind}.json"


def assemble(cfg, setup: Setup, info: dict, runs: dict, labels: dict, started: str, threads: int) -> dict:
    """Everything the JSON holds: command, machine, settings, medians, ratios, targets, every run."""
    summary = report.summarize(runs)
    result = {
        "command": " ".join(["python benchmarks/throughput.py", *sys.argv[1:]]),
        "started": started,
        "machine": info,
        "settings": settings(cfg, setup, threads),
        "summary": summary,
        "ratios": report.ratios(summary),
        "targets": report.check_targets(summary, labels, len(setup.val_ids)),
        "runs": runs,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if cfg.bench.projection.enabled:
        from benchmarks.projection import print_projection, project

        result["projection"] = project(setup, cfg.bench.projection, threads)
        print_projection(result["projection"], console)
    result["finished"] = machine.now()
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["process_peak_rss_mb"] = machine.process_peak_rss_mb()
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="throughput")
def main(cfg) -> None:
    with exit_on_user_error():  # a bad setting (trainer.device, data, bench.*) is one line, as in train.py
        benchmark(cfg)


def benchmark(cfg) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the pyfunc load's bars, per run
    threads = machine.pin_threads(cfg.trainer.num_threads or cfg.bench.threads)
    device = resolve_device(cfg.trainer.device)
    if cfg.bench.projection.enabled:
        refuse_off_cpu(device)
    precision = resolve_precision(cfg.trainer.precision, device)
    info = machine.describe(device, threads)
    console.print(info)
    setup = build_setup(cfg, device, precision)
    chosen = variants(setup, list(cfg.bench.variants), cfg.bench.alt_precision)
    started = machine.now()
    runs = run_rounds(cfg, dict(chosen.values()), device, threads)
    labels = {name: label for name, (label, _) in chosen.items()}
    result = assemble(cfg, setup, info, runs, labels, started, threads)
    report.print_tables(result, console)
    console.print(f"written: {report.write(result, output_path(cfg, info))}")


if __name__ == "__main__":
    main()
