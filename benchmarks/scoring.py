"""Scoring speed and accuracy of trained models side by side, in one process (issue 28 item 4).

    python benchmarks/scoring.py runs=mpnet:<run id>,minilm:<run id>,distilled:<run id> onnx=distilled
    python benchmarks/scoring.py runs=a:<run id>,b:<run id> onnx=b titles=500 reps=5 threads=2 out=/tmp/s.json

Variants: every named run's logged PyTorch model in fp32 and, for the runs named in onnx=, its ONNX
export (python experiments/export.py run=<id>) on ONNX Runtime in fp32 and int8. For each variant:
throughput (titles/s scoring `titles` titles at `batch_size`, tokenization included, drawn from the
texts of the first run's evaluation sets), latency (ms per title scoring `latency_titles` titles one
at a time: median and 90th percentile) and accuracy at the model's stored decision threshold on every
evaluation set the first run logged (its reports/<set>/predictions.csv: test, cross_source,
citeseer_dev, grobid_dev): every variant scores the same rows. Per set also the accuracy on each true
label (on grobid_dev: title recall, and accuracy on the other header segments).

After one untimed warm-up, the timed repetitions are interleaved (v1, v2, ..., v1, v2, ...) and the
median is reported, so a load spike on a shared machine hits every variant alike; torch and ONNX
Runtime get the same thread count. Target check (issue 28): the target run's int8 variant scores at
least 400 titles/s at batch 64 with CiteSeer-sample (citeseer_dev) accuracy at least 0.88. Prints
the table and writes JSON and Markdown to benchmarks/results/<date>-scoring-<machine>.json / .md.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks.report import fmt, spread  # noqa: E402
from lib import inference  # noqa: E402
from lib.cli import compose_config, parse_key_values, split_options  # noqa: E402
from lib.errors import ConfigError, UserError, exit_on_user_error  # noqa: E402
from lib.progress import quiet_library_bars  # noqa: E402
from lib.pyfunc import (  # noqa: E402
    MODEL_ARTIFACT,
    ONNX_EXTRA,
    OnnxExportError,
    OnnxScorer,
    choose_onnx_file,
    onnxruntime_available,
    read_onnx_manifest,
)
from lib.recipes import PREDICTIONS  # noqa: E402
from lib.tracking import redact, tracking_uri  # noqa: E402

USAGE = (
    "python benchmarks/scoring.py runs=NAME:RUN_ID[,NAME:RUN_ID...] [onnx=NAME[,NAME...]] [target=NAME] "
    "[titles=2000] [batch_size=64] [latency_titles=200] [reps=3] [threads=N] [out=FILE.json] "
    "[tracking.*=... paths.*=...]"
)
OPTIONS = {
    "runs": "NAME:RUN_ID pairs, comma-separated, in table order (required); the first run's evaluation sets are scored",
    "onnx": "NAMEs of runs also scored on ONNX Runtime fp32 and int8 (export: python experiments/export.py run=<id>)",
    "target": "the run whose int8 variant the target check judges (default: the last name in onnx=)",
    "titles": "titles per throughput measurement (default 2000)",
    "batch_size": "titles per forward pass, for throughput and accuracy (default 64)",
    "latency_titles": "titles scored one at a time per latency measurement (default 200)",
    "reps": "timed repetitions per variant, interleaved across variants (default 3)",
    "threads": "threads for torch and for ONNX Runtime alike (default: os.cpu_count())",
    "out": "JSON file to write, the Markdown beside it (default benchmarks/results/<date>-scoring-<machine>.json)",
    "tracking.*, paths.*": "config overrides, e.g. tracking.uri=http://127.0.0.1:5000",
}
SET_ORDER = ("test", "cross_source", "citeseer_dev", "grobid_dev")  # issue 28's order; other sets follow
TARGET_SPEED, TARGET_ACCURACY, TARGET_SET = 400.0, 0.88, "citeseer_dev"
LABEL_SCORES = {1: "label1_accuracy", 0: "label0_accuracy"}  # grobid_dev: title recall, other segments
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

console = Console(width=200)  # the table is wide; logs and pipes default to 80 columns


# --------------------------------------------------------------- options


@dataclass
class Settings:
    runs: dict[str, str]  # name -> run id, in table order
    onnx: list[str]
    target: str | None
    titles: int
    batch_size: int
    latency_titles: int
    reps: int
    threads: int
    out: Path | None


def parse_settings(options: dict[str, str]) -> Settings:
    """The benchmark's own options, every one checked before any model or store is touched."""
    runs = parse_runs(options.get("runs"))
    onnx = [name for name in options.get("onnx", "").split(",") if name]
    unknown = [name for name in onnx if name not in runs]
    if unknown:
        raise ConfigError(f"onnx={options['onnx']}: {', '.join(unknown)} not named in runs= ({', '.join(runs)})")
    if onnx and not onnxruntime_available():
        raise ConfigError(f"onnx={options['onnx']}: ONNX Runtime is not installed: {ONNX_EXTRA}")
    target = options.get("target") or (onnx[-1] if onnx else None)
    if target is not None and target not in onnx:
        raise ConfigError(f"target={target}: the target check judges an int8 variant; name a run of onnx= instead")
    out = Path(options["out"]) if options.get("out") else None
    if out is not None and out.suffix != ".json":
        raise ConfigError(f"out={out}: name a .json file (the Markdown is written beside it as .md)")
    return Settings(
        runs,
        onnx,
        target,
        _count(options, "titles", 2000),
        _count(options, "batch_size", 64),
        _count(options, "latency_titles", 200),
        _count(options, "reps", 3),
        _count(options, "threads", os.cpu_count() or 1),
        out,
    )


def parse_runs(value: str | None) -> dict[str, str]:
    """runs=a:<id>,b:<id> -> {"a": "<id>", "b": "<id>"}, each name once."""
    example = "e.g. runs=mpnet:<run id>,distilled:<run id>"
    if not value:
        raise ConfigError(f"runs=NAME:RUN_ID[,NAME:RUN_ID...] is required, {example}")
    pairs = [item.split(":", 1) for item in value.split(",")]
    if any(len(p) != 2 or not NAME.match(p[0]) or not p[1].strip() for p in pairs):
        raise ConfigError(f"runs={value}: give NAME:RUN_ID pairs separated by commas, {example}")
    runs = {name: run_id.strip() for name, run_id in pairs}
    if len(runs) != len(pairs):
        raise ConfigError(f"runs={value}: each name once")
    return runs


def _count(options: dict[str, str], key: str, default: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{key}={value}: must be a positive whole number")
    return int(value)


# --------------------------------------------------------------- runs, exports, evaluation sets


def check_runs(runs: dict[str, str]) -> None:
    """Every run exists: one line now rather than after minutes of loading the ones before it."""
    for run_id in runs.values():
        inference.artifact_names(run_id, MODEL_ARTIFACT)  # raises "run=<id>: no such run in <store>"


def download_export(name: str, run_id: str, workdir: Path) -> Path:
    """The run's ONNX export (both files), downloaded once and kept for the whole benchmark: the
    variants' sessions are opened from it with the benchmark's thread count."""
    folder = inference.download_run_onnx(run_id, workdir / name)  # one line naming export.py when missing
    try:
        manifest = read_onnx_manifest(folder)
        for quantize in ("none", "int8"):
            choose_onnx_file(manifest, quantize)  # its message names the export command
    except OnnxExportError as err:
        raise UserError(f"{name} (run {run_id}): {err}") from None
    if manifest["source_run_id"] != run_id:
        raise UserError(
            f"{name} (run {run_id}): its ONNX export was made from run {manifest['source_run_id']}; "
            f"export this run's model: python experiments/export.py run={run_id}"
        )
    return folder


def evaluation_sets(run_id: str, workdir: Path) -> dict[str, pd.DataFrame]:
    """text, label (and kind) of every evaluation set the run logged (reports/<set>/predictions.csv)."""
    logged = inference.artifact_names(run_id, "reports")
    names = [n for n in SET_ORDER if n in logged] + sorted(logged - set(SET_ORDER))
    client, sets = MlflowClient(), {}
    workdir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if "predictions.csv" in inference.artifact_names(run_id, f"reports/{name}"):
            path = client.download_artifacts(run_id, PREDICTIONS.format(name=name), str(workdir))
            # keep_default_na=False: a title such as "NA" or "null" stays text
            frame = pd.read_csv(path, keep_default_na=False, dtype={"text": str})
            sets[name] = frame.assign(label=frame["label"].astype(int)).drop(columns=["probability", "prediction"])
    if not sets:
        raise UserError(
            f"run {run_id} logged no evaluation sets (no reports/<set>/predictions.csv); name another run first"
        )
    return sets


def sample_titles(sets: dict[str, pd.DataFrame], count: int, seed: int = 0) -> list[str]:
    """``count`` texts drawn from all sets (cycled where they hold fewer): one fixed draw, so every
    variant and repetition scores the same titles."""
    texts = [text for frame in sets.values() for text in frame["text"]]
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in np.resize(order, count)]


# --------------------------------------------------------------- variants


@dataclass
class Variant:
    label: str  # "<name> <backend> <precision>", e.g. "distilled onnx int8"
    name: str
    run_id: str
    predictor: object  # inference.Predictor or inference.OnnxPredictor


def load_variants(settings: Settings, exports: dict[str, Path]) -> list[Variant]:
    variants = []
    for name, run_id in settings.runs.items():
        console.print(f"loading {name}: run {run_id}, torch fp32")
        predictor = inference.load_predictor(run=run_id, device="cpu", precision="fp32")
        variants.append(Variant(f"{name} torch fp32", name, run_id, predictor))
        for quantize in ("none", "int8") if name in exports else ():
            predictor = onnx_predictor(exports[name], quantize, settings.threads)
            console.print(f"loading {name}: ONNX Runtime {predictor.precision} ({predictor.file})")
            variants.append(Variant(f"{name} onnx {predictor.precision}", name, run_id, predictor))
    return variants


def onnx_predictor(folder: Path, quantize: str, threads: int):
    predictor = inference.load_predictor(model_dir=str(folder), backend="onnx", onnx_quantize=quantize)
    # load_predictor opens the file with ONNX Runtime's default threads (one per physical core);
    # the comparison needs torch's count, so the same checked file is opened again with it.
    predictor.scorer = OnnxScorer(predictor.scorer.path, threads=threads)
    return predictor


# --------------------------------------------------------------- measuring


def set_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    right = truth == predicted
    scores = {"rows": len(truth), "correct": int(right.sum()), "accuracy": float(right.mean())}
    for label, key in LABEL_SCORES.items():
        if (truth == label).any():
            scores[key] = float(right[truth == label].mean())
    return scores


def score_sets(variant: Variant, sets: dict[str, pd.DataFrame], batch_size: int) -> tuple[dict, np.ndarray]:
    """Scores per set at the stored threshold, and the predicted labels of all rows (for agreement)."""
    scores, labels = {}, []
    for name, frame in sets.items():
        console.print(f"accuracy: {variant.label} on {name} ({len(frame)} rows)")
        probs = variant.predictor.predict_titles(frame["text"].tolist(), batch_size, progress=True)
        labels.append(inference.labels_at(probs, variant.predictor.threshold))
        scores[name] = set_scores(frame["label"].to_numpy(), labels[-1])
    return scores, np.concatenate(labels)


def agreement(variants: list[Variant], labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Share of rows on which each variant's labels equal those of each other variant of its run."""
    shares = {v.label: {} for v in variants}
    for v in variants:
        for other in variants:
            if other.name == v.name and other is not v:
                shares[v.label][other.label] = float((labels[v.label] == labels[other.label]).mean())
    return shares


def throughput(variant: Variant, titles: list[str], batch_size: int) -> float:
    gc.collect()  # the previous variant's garbage is not this one's time
    start = time.perf_counter()
    variant.predictor.predict_titles(titles, batch_size)
    return len(titles) / (time.perf_counter() - start)


def latency(variant: Variant, titles: list[str]) -> dict[str, float]:
    gc.collect()
    times = []
    for title in titles:
        start = time.perf_counter()
        variant.predictor.predict_titles([title], 1)
        times.append((time.perf_counter() - start) * 1000)
    return {"latency_median_ms": float(np.median(times)), "latency_p90_ms": float(np.percentile(times, 90))}


def measure(variant: Variant, titles: list[str], settings: Settings) -> dict[str, float]:
    machine.pin_threads(settings.threads)  # library calls may change torch's count
    speed = throughput(variant, titles[: settings.titles], settings.batch_size)
    return {"titles_per_s": speed, **latency(variant, titles[: settings.latency_titles])}


def run_rounds(variants: list[Variant], titles: list[str], settings: Settings) -> dict[str, list[dict]]:
    """One untimed warm-up per variant, then ``reps`` rounds, each timing every variant in turn."""
    warmup = titles[: 2 * settings.batch_size]
    for variant in variants:
        console.print(f"[dim]warm-up: {variant.label}")
        variant.predictor.predict_titles(warmup, settings.batch_size)
        latency(variant, warmup[:5])
    results = {v.label: [] for v in variants}
    for rep in range(settings.reps):
        for variant in variants:
            console.print(f"round {rep + 1}/{settings.reps}: {variant.label} ...")
            results[variant.label].append(measure(variant, titles, settings))
            r = results[variant.label][-1]
            console.print(
                f"  {r['titles_per_s']:.1f} titles/s at batch {settings.batch_size}; batch 1: "
                f"{r['latency_median_ms']:.1f} ms median, {r['latency_p90_ms']:.1f} ms p90"
            )
    return results


# --------------------------------------------------------------- results


def summarize(variants: list[Variant], runs: dict, scores: dict, agree: dict) -> dict:
    timed = ("titles_per_s", "latency_median_ms", "latency_p90_ms")
    return {
        v.label: {
            "run": v.name,
            "run_id": v.run_id,
            "backend": v.predictor.backend,
            "precision": v.predictor.precision,
            "threshold": float(v.predictor.threshold),
            "threads": threads_of(v.predictor),
            **{key: spread([r[key] for r in runs[v.label]]) for key in timed},
            "sets": scores[v.label],
            "label_agreement": agree[v.label],
        }
        for v in variants
    }


def threads_of(predictor) -> int:
    """The thread count the variant really ran with (ONNX Runtime's as its session holds it)."""
    scorer = getattr(predictor, "scorer", None)
    if scorer is None:
        return torch.get_num_threads()
    return scorer.session.get_session_options().intra_op_num_threads


def target_checks(summary: dict, settings: Settings) -> list[dict]:
    """The issue's target for the target run's int8 variant, met or not, with the measured figures."""
    if settings.target is None:
        return []
    label = f"{settings.target} onnx int8"
    speed = summary[label]["titles_per_s"]
    checks = [
        {
            "target": f"{label}: titles/s at batch {settings.batch_size} >= {TARGET_SPEED:.0f}",
            "measured": speed["median"],
            "shown": f"{speed['median']:.1f} (median of {settings.reps}; {speed['min']:.1f}-{speed['max']:.1f})",
            "met": speed["median"] >= TARGET_SPEED,
        }
    ]
    found = summary[label]["sets"].get(TARGET_SET)
    checks.append(
        {
            "target": f"{label}: CiteSeer sample ({TARGET_SET}) accuracy >= {TARGET_ACCURACY}",
            "measured": found and found["accuracy"],
            "shown": f"{found['accuracy']:.4f} ({found['correct']}/{found['rows']})" if found else "not logged",
            "met": bool(found) and found["accuracy"] >= TARGET_ACCURACY,
        }
    )
    return checks


def set_names(result: dict) -> list[str]:
    return list(result["settings"]["evaluation_sets"])


def headers(result: dict) -> list[str]:
    batch = result["settings"]["batch_size"]
    names = set_names(result)
    grobid = ["grobid_dev title recall", "grobid_dev other acc."] if "grobid_dev" in names else []
    return [
        "variant",
        f"titles/s, batch {batch}",
        "ms/title, batch 1",
        "p90 ms",
        *[f"{n} acc." for n in names],
        *grobid,
    ]


def rows(result: dict) -> list[list[str]]:
    """One row per variant: the cells both the rich table and the Markdown table show."""
    names, out = set_names(result), []
    for label, s in result["summary"].items():
        sets = s["sets"]
        grobid = sets.get("grobid_dev", {})
        extra = [_score(grobid, key) for key in LABEL_SCORES.values()] if "grobid_dev" in names else []
        out.append(
            [
                label,
                fmt(s["titles_per_s"], 1),
                fmt(s["latency_median_ms"], 1),
                fmt(s["latency_p90_ms"], 1),
                *[_score(sets[name], "accuracy") for name in names],
                *extra,
            ]
        )
    return out


def _score(scores: dict, key: str) -> str:
    return f"{scores[key]:.4f}" if key in scores else "-"


def print_tables(result: dict) -> None:
    settings = result["settings"]
    title = (
        f"scoring: median [min-max] of {settings['reps']} interleaved runs, threads: {settings['threads']}; "
        "accuracy at each model's stored threshold"
    )
    table = Table(title=escape(title))
    for header in headers(result):
        table.add_column(header, justify="left" if header == "variant" else "right")
    for row in rows(result):
        table.add_row(*map(escape, row))
    console.print(table)
    if result["targets"]:
        targets = Table(title="target (issue 28)")
        for header in ("target", "measured", "met"):
            targets.add_column(header)
        for check in result["targets"]:
            met = "[green]yes" if check["met"] else "[red]no"
            targets.add_row(escape(check["target"]), escape(check["shown"]), met)
        console.print(targets)


def markdown(result: dict) -> str:
    """The table with what it was measured on, for BENCHMARKS.md."""
    settings, info, names = result["settings"], result["machine"], headers(result)
    sets = ", ".join(f"{name} ({rows} rows)" for name, rows in settings["evaluation_sets"].items())
    lines = [
        f"`{result['command']}`",
        "",
        f"- date: {result['started']} to {result['finished']}",
        f"- machine: {info['cpu']} ({', '.join(info['cpu_flags']) or 'no AVX2/AVX-512 flags'}), "
        f"{info['logical_cores']} logical / {info['physical_cores']} physical cores, {info['memory_gb']} GB; "
        f"load average {info['load_average_start']} at the start, {info['load_average_end']} at the end",
        f"- threads: {settings['threads']} for torch {info['torch']} and for ONNX Runtime {info['onnxruntime']}",
        "- precision: torch fp32; ONNX Runtime fp32 (model.onnx) and int8 (model.int8.onnx, dynamic int8 weights)",
        f"- runs: {', '.join(f'{name} = {run_id}' for name, run_id in settings['runs'].items())}",
        f"- throughput: {settings['titles']} titles at batch {settings['batch_size']}, tokenization included; "
        f"latency: {settings['latency_titles']} titles one at a time; median [min-max] of {settings['reps']} "
        "repetitions, interleaved across variants after one warm-up",
        f"- accuracy at each model's stored threshold on the evaluation sets of run {settings['evaluation_run']}: "
        f"{sets}",
        "",
        "| " + " | ".join(names) + " |",
        "|---|" + "---:|" * (len(names) - 1),
        *["| " + " | ".join(row) + " |" for row in rows(result)],
    ]
    if result["targets"]:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {c['target']} | {c['shown']} | {'yes' if c['met'] else 'no'} |" for c in result["targets"]]
    return "\n".join(lines) + "\n"


def write(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown(result))
    return path


def output_path(settings: Settings, info: dict) -> Path:
    if settings.out is not None:
        return settings.out
    return ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-scoring-{machine.slug(info)}.json"


# --------------------------------------------------------------- main


def describe_machine(threads: int) -> dict:
    info = machine.describe(torch.device("cpu"), threads)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def measure_all(settings: Settings, workdir: Path) -> tuple[dict, dict, dict[str, list[dict]]]:
    """(evaluation set sizes, summary, timed repetitions) of every variant."""
    check_runs(settings.runs)
    exports = {name: download_export(name, settings.runs[name], workdir) for name in settings.onnx}
    sets = evaluation_sets(next(iter(settings.runs.values())), workdir / "sets")
    variants = load_variants(settings, exports)
    machine.pin_threads(settings.threads)
    scores, labels = {}, {}
    for variant in variants:
        scores[variant.label], labels[variant.label] = score_sets(variant, sets, settings.batch_size)
    titles = sample_titles(sets, max(settings.titles, settings.latency_titles))
    # The loaded models and libraries are never garbage: frozen out of the collector's reach, the
    # collection before each timing takes milliseconds instead of most of a second.
    gc.collect()
    gc.freeze()
    try:
        runs = run_rounds(variants, titles, settings)
    finally:
        gc.unfreeze()  # a caller in the same process (a test) collects as before
    summary = summarize(variants, runs, scores, agreement(variants, labels))
    return {name: len(frame) for name, frame in sets.items()}, summary, runs


def main(args: list[str]) -> dict:
    options, overrides = split_options(parse_key_values(args, USAGE, OPTIONS, __doc__), OPTIONS)
    settings = parse_settings(options)
    mlflow.set_tracking_uri(tracking_uri(compose_config(overrides)))
    quiet_library_bars()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded file
    info = describe_machine(machine.pin_threads(settings.threads))
    started = machine.now()
    with tempfile.TemporaryDirectory(prefix="titlesweep-scoring-", ignore_cleanup_errors=True) as tmp:
        set_sizes, summary, runs = measure_all(settings, Path(tmp))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["process_peak_rss_mb"] = machine.process_peak_rss_mb()
    result = {
        "command": redact(shlex.join(["python", "benchmarks/scoring.py", *args])),
        "started": started,
        "finished": machine.now(),
        "machine": info,
        "settings": {
            **{k: v for k, v in vars(settings).items() if k != "out"},
            "evaluation_run": next(iter(settings.runs.values())),
            "evaluation_sets": set_sizes,
        },
        "summary": summary,
        "targets": target_checks(summary, settings),
        "runs": runs,
    }
    print_tables(result)
    console.print(f"written: {write(result, output_path(settings, info))} and its .md")
    return result


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
