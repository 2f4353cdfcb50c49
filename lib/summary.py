"""What a single run prints: at its start the composed recipe as a tree (each config group's choice,
command-line overrides highlighted); at its end the decisive metrics in one table, where the run
is, and the next commands ready to paste (a sweep prints its comparison at its end instead)."""
from __future__ import annotations

import math

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


def end_of_run_table(final: dict[str, float]) -> Table:
    """Best validation, test and every extra set: accuracy / F1 / ROC-AUC (test and extra sets at the
    stored threshold)."""
    sets = ["test", *sorted({k.rsplit("_", 1)[0] for k in final if k.endswith("_accuracy")}
                            - {"test", "best_val"})]
    table = Table(title=f"results at the decision threshold {final.get('decision_threshold', math.nan):.3f}")
    table.add_column("set")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    # validation is scored at 0.5 during training (the threshold is chosen on it afterwards)
    rows = [("validation (best, at 0.5)", "best_val")] + [(name, name) for name in sets]
    for label, prefix in rows:
        values = [final.get(f"{prefix}_{key}", math.nan) for key, _ in COLUMNS]
        table.add_row(label, *["-" if math.isnan(v) else f"{v:.4f}" for v in values])
    return table


def next_commands(run_id: str, uri: str, experiment_id: str) -> list[str]:
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        ui = f"open {shown.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        store = f" tracking.uri={shown}"
    else:
        ui = f"mlflow ui --backend-store-uri {shown} --host 127.0.0.1   # then the run {run_id}"
        store = ""
    return [ui,
            f"python experiments/predict.py run={run_id} input=titles.txt{store}",
            f"python experiments/evaluate.py run={run_id} input=labelled.csv{store}"]


def print_end_of_run(final: dict[str, float], run_id: str, uri: str, experiment_id: str,
                     console: Console | None = None) -> None:
    console = console or Console()
    table = end_of_run_table(final)
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 100))
    console.print(table)
    console.print(f"MLflow run {run_id} in {redact(uri)}; next:", soft_wrap=True, markup=False)
    for line in next_commands(run_id, uri, experiment_id):
        console.print(f"  {line}", soft_wrap=True, markup=False)
