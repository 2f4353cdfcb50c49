"""Runs -> medians, ratios, target checks; printed as rich tables, written as JSON (+ Markdown)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# (what, numerator, denominator, metric, at least)
TARGETS = [
    ("training vs Trainer", "ours", "hf_trainer", "train_samples_per_s", 1.2),
    ("inference vs Trainer.predict", "ours", "hf_trainer", "infer_titles_per_s", 1.5),
    ("training vs pad-to-max", "ours", "pad_to_max", "train_samples_per_s", 3.0),
    ("inference vs pad-to-max", "ours", "pad_to_max", "infer_titles_per_s", 1.5),
]


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: dict[str, list[dict]]) -> dict:
    """{variant: {metric: {median, min, max}}} over the timed repetitions."""
    keys = (
        "train_samples_per_s",
        "infer_titles_per_s",
        "pyfunc_titles_per_s",
        "accuracy",
        "f1",
        "padded_tokens",
        "real_tokens",
        "peak_rss_mb",
        "rss_growth_mb",
        "gpu_peak_mb",
    )
    return {
        name: {k: spread([r[k] for r in reps]) for k in keys if k in reps[0]} for name, reps in runs.items() if reps
    }


def ratios(summary: dict, base: str = "ours") -> dict:
    """ours / other, on median speeds: above 1 means ours is faster."""
    out = {}
    for name, s in summary.items():
        if name != base and base in summary:
            out[name] = {
                k: summary[base][k]["median"] / s[k]["median"] for k in ("train_samples_per_s", "infer_titles_per_s")
            }
    return out


# The Trainer rows at each precision; "ours" is compared with the fastest of them (its best setting).
TRAINER_ROWS = {"fp32": ("ours", ("hf_trainer", "hf_trainer_grouped")), "bf16": ("ours_alt", ("hf_trainer_bf16",))}


def best_trainer_checks(summary: dict, labels: dict[str, str], least: float = 1.2) -> list[dict]:
    """Training speed of our loop against the fastest Trainer row at the same precision, and
    inference against Trainer.predict (of the plain Trainer row)."""
    checks = []
    for precision, (ours_key, trainer_keys) in TRAINER_ROWS.items():
        ours = labels.get(ours_key)
        rows = [labels[k] for k in trainer_keys if labels.get(k) in summary]
        if ours not in summary or not rows:
            continue
        best = max(rows, key=lambda name: summary[name]["train_samples_per_s"]["median"])
        value = summary[ours]["train_samples_per_s"]["median"] / summary[best]["train_samples_per_s"]["median"]
        checks.append(
            {"target": f"training vs the best {precision} Trainer row ({best}) >= {least}x",
             "measured": round(value, 2), "met": value >= least}
        )  # fmt: skip
    return checks


def accuracy_noise(accuracy: float, titles: int) -> float:
    """Two standard errors of the difference of two accuracies measured on ``titles`` titles."""
    return 2 * math.sqrt(2 * accuracy * (1 - accuracy) / titles)


def check_targets(summary: dict, labels: dict[str, str], titles: int) -> list[dict]:
    """The issue's targets, met or not; ``labels`` maps variant keys to the labels used in ``summary``."""
    checks = []
    for what, num, den, metric, least in TARGETS:
        a, b = labels.get(num), labels.get(den)
        if a in summary and b in summary:
            value = summary[a][metric]["median"] / summary[b][metric]["median"]
            checks.append({"target": f"{what} >= {least}x", "measured": round(value, 2), "met": value >= least})
    checks += best_trainer_checks(summary, labels)
    if "ours" in summary:
        base = summary["ours"]["accuracy"]["median"]
        noise = accuracy_noise(base, titles)
        for name, s in summary.items():
            if name != "ours":
                gap = s["accuracy"]["median"] - base
                checks.append(
                    {
                        "target": f"accuracy {name} - ours within +-{noise:.3f} (2 s.e.)",
                        "measured": round(gap, 4),
                        "met": abs(gap) <= noise,
                    }
                )
    return checks


# --------------------------------------------------------------- printing


def fmt(s: dict, digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def rows(summary: dict, rel: dict) -> list[list[str]]:
    """One row per variant: the cells both the rich table and the Markdown table show."""
    out = []
    for name, s in summary.items():
        r = rel.get(name, {})
        mem = f"{s['peak_rss_mb']['max']:.0f} (+{s['rss_growth_mb']['max']:.0f})"
        if "gpu_peak_mb" in s:
            mem += f", GPU {s['gpu_peak_mb']['max']:.0f}"
        out.append(
            [
                name,
                fmt(s["train_samples_per_s"], 1),
                f"{r['train_samples_per_s']:.2f}x" if r else "-",
                fmt(s["infer_titles_per_s"]),
                f"{r['infer_titles_per_s']:.2f}x" if r else "-",
                fmt(s["pyfunc_titles_per_s"]) if "pyfunc_titles_per_s" in s else "-",
                fmt(s["accuracy"], 3),
                f"{s['padded_tokens']['median']:.1f} / {s['real_tokens']['median']:.1f}",
                mem,
            ]
        )
    return out


HEADERS = [
    "variant",
    "train samples/s",
    "ours ÷ this",
    "infer titles/s",
    "ours ÷ this",
    "pyfunc infer titles/s",
    "val accuracy",
    "tokens/example padded / real",
    "peak RSS MB (+growth)",
]


def print_tables(result: dict, console: Console | None = None) -> None:
    console = console or Console()
    if not result["summary"]:
        return
    table = Table(title=escape(f"{result['settings']['model']}: median [min-max] of {result['settings']['reps']} runs"))
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "variant" else "right")
    for row in rows(result["summary"], result["ratios"]):
        table.add_row(*map(escape, row))
    console.print(table)
    targets = Table(title="targets")
    for header in ("target", "measured", "met"):
        targets.add_column(header)
    for check in result["targets"]:
        targets.add_row(escape(check["target"]), str(check["measured"]), "[green]yes" if check["met"] else "[red]no")
    console.print(targets)


def markdown(result: dict) -> str:
    """The same tables as Markdown, for BENCHMARKS.md."""
    lines = []
    if result["summary"]:
        lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows(result["summary"], result["ratios"])]
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else 'no'} |" for c in result["targets"]]
    if "projection" in result:
        from benchmarks.projection import projection_rows

        lines += [
            "",
            "ESTIMATE (bert-base-sized, CPU): " + result["projection"]["label"],
            "",
            "| " + " | ".join(PROJECTION_HEADERS) + " |",
            "|" + "---|" * len(PROJECTION_HEADERS),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in projection_rows(result["projection"])]
    return "\n".join(lines) + "\n"


PROJECTION_HEADERS = ["approach", "train titles/s", "infer titles/s", "hours per experiment", "hours, all five"]


def write(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    path.with_suffix(".md").write_text(markdown(result))
    return path
