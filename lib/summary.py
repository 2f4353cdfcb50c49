"""What a single run prints: at its start the composed recipe as a tree (each config group's choice,
command-line overrides highlighted); at its end the decisive metrics in one table, where the run
is, and the next commands ready to paste (a sweep prints its comparison at its end instead)."""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from lib.tracking import redact

COLUMNS = (("accuracy", "accuracy"), ("f1", "F1"), ("roc_auc", "ROC-AUC"))
GROUPS = ("model", "data", "loss", "adversarial", "schedule", "trainer")  # the recipe, in reading order


def config_tree(cfg, overrides: list[str], config_file: str) -> Tree:
    """Each group with its chosen option; under it, the values set on the command line (highlighted).
    Everything else is the option's defaults, written in full to ``config_file``."""
    changed: dict[str, list[tuple[str, str]]] = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        group, _, rest = key.partition(".")
        changed.setdefault(group, []).append((rest, value))
    tree = Tree(f"config (command-line overrides in [bold yellow]yellow[/]; all values: {config_file})")
    for group in GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        name = node.get("name", "") if hasattr(node, "get") else ""
        values = changed.pop(group, [])
        set_here = [(k, v) for k, v in values if k]
        picked = len(set_here) < len(values)  # `group=option` itself was on the command line
        label = f"[bold yellow]{group}: {name}[/]" if picked else f"{group}: {name}" if name else group
        branch = tree.add(label)
        for key, value in set_here:
            branch.add(f"[bold yellow]{key} = {value}[/]")
    for group, values in changed.items():  # recipe=..., +experiment=..., extra_eval=..., hydra.*
        for key, value in values:
            tree.add(f"[bold yellow]{group}{'.' + key if key else ''} = {value}[/]")
    return tree


def print_config_tree(cfg, overrides: list[str], config_file: str, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:  # a log file: long paths on one line, not cut at 80 columns
        console = Console(file=console.file, width=max(console.width, 240))
    console.print(config_tree(cfg, overrides, config_file))


def _result_rows(final: dict[str, float]) -> list[tuple[str, str]]:
    """(label, metric prefix) of best validation, test and every extra set."""
    sets = ["test", *sorted({k.rsplit("_", 1)[0] for k in final if k.endswith("_accuracy")} - {"test", "best_val"})]
    # validation is scored at 0.5 during training (the threshold is chosen on it afterwards)
    return [("validation (best, at 0.5)", "best_val")] + [(name, name) for name in sets]


def end_of_run_table(final: dict[str, float]) -> Table:
    """Best validation, test and every extra set: accuracy / F1 / ROC-AUC (test and extra sets at the
    stored threshold)."""
    table = Table(title=f"results at the decision threshold {final.get('decision_threshold', math.nan):.3f}")
    table.add_column("set")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    for label, prefix in _result_rows(final):
        values = [final.get(f"{prefix}_{key}", math.nan) for key, _ in COLUMNS]
        table.add_row(label, *["-" if math.isnan(v) else f"{v:.4f}" for v in values])
    return table


LOG_METRICS = (("accuracy", "accuracy"), ("f1", "F1"), ("roc_auc", "ROC-AUC"), ("precision", "precision"),
               ("recall", "recall"), ("loss", "loss"))  # fmt: skip


def metrics_line(metrics: dict[str, float]) -> str:
    """One split's headline metrics for the log: ``accuracy 0.9253, F1 0.9260, ROC-AUC 0.9701, ...``
    (every metric is in MLflow and in the split's reports folder)."""
    return ", ".join(f"{label} {metrics[key]:.4f}" for key, label in LOG_METRICS if key in metrics)


def data_line(sizes: dict[str, int], dropped: dict[str, int]) -> str:
    """``train 6396, val 801, test 803, cross_source 2000 rows; dropped: none`` (or the non-zero counts)."""
    rows = ", ".join(f"{key.removeprefix('data_').removesuffix('_rows')} {n}" for key, n in sizes.items())
    removed = ", ".join(f"{key} {n}" for key, n in dropped.items() if n) or "none"
    return f"{rows} rows; dropped: {removed}"


class TimeSplit:
    """Wall seconds of each phase of a run (data: corpus build / load and tokenizing; setup: model and
    loss; training, validation included; evaluation of test and extra sets; logging to MLflow)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to ``phase``."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now

    def metrics(self) -> dict[str, float]:
        return {f"time_{phase}_s": round(seconds, 2) for phase, seconds in self.seconds.items()}


def time_line(final: dict[str, float]) -> str:
    """ "time: data 25 s, setup 2 s, training 301 s, evaluation 12 s, logging 9 s (349 s)"."""
    phases = [
        (key[len("time_") : -len("_s")], value)
        for key, value in final.items()
        if key.startswith("time_") and key.endswith("_s")
    ]
    if not phases:
        return ""
    parts = ", ".join(f"{phase} {value:.0f} s" for phase, value in phases)
    return f"time: {parts} ({sum(v for _, v in phases):.0f} s)"


def run_description(cfg, final: dict[str, float], overrides: list[str]) -> str:
    """Markdown for the MLflow run page's description (``mlflow.note.content``): the recipe in one
    line, the command-line overrides, the end-of-run metrics and the time split."""
    recipe = " · ".join(f"{group} {cfg[group].name}" for group in GROUPS if group in cfg and "name" in cfg[group])
    lines = [
        f"**{recipe}**",
        "",
        f"overrides: `{' '.join(overrides)}`" if overrides else "overrides: none (defaults)",
        "",
        f"Results at the decision threshold {final.get('decision_threshold', math.nan):.3f} (validation at 0.5):",
        "",
        "| set | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for label, prefix in _result_rows(final):
        values = [final.get(f"{prefix}_{key}", math.nan) for key, _ in COLUMNS]
        lines.append(f"| {label} | " + " | ".join("-" if math.isnan(v) else f"{v:.4f}" for v in values) + " |")
    if time_line(final):
        lines += ["", time_line(final)]
    return "\n".join(lines) + "\n"


def next_commands(run_id: str, uri: str, experiment_id: str) -> list[str]:
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        ui = f"open {shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        store = f" tracking.uri={shown}"
    else:
        ui = f"mlflow ui --backend-store-uri {shown} --host 127.0.0.1   # then the run {run_id}"
        store = ""
    return [
        ui,
        f"python experiments/predict.py run={run_id} input=titles.txt{store}",
        f"python experiments/evaluate.py run={run_id} input=labelled.csv{store}",
    ]


def print_end_of_run(
    final: dict[str, float], run_id: str, uri: str, experiment_id: str, console: Console | None = None
) -> None:
    console = console or Console()
    table = end_of_run_table(final)
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 100))
    console.print(table)
    if time_line(final):
        console.print(time_line(final), markup=False)
    console.print(f"MLflow run {run_id} in {redact(uri)}; next:", soft_wrap=True, markup=False)
    for line in next_commands(run_id, uri, experiment_id):
        console.print(f"  {line}", soft_wrap=True, markup=False)
