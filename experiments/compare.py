"""Compare the runs of a sweep (or any runs) from MLflow: table, markdown, CSV, plots.

python experiments/compare.py                          # the latest sweep
python experiments/compare.py sweep=sweep-2026-11-25_15-44-11
python experiments/compare.py model=scibert            # every scibert run, across sweeps
python experiments/compare.py sweep=latest loss=focal out=reports/  experiment=titlesweep
python experiments/compare.py tracking.uri=http://127.0.0.1:5000
python experiments/compare.py rank_by=cross_source_accuracy
    # a sweep over trainer.seed (e.g. +experiment=offline_five) is also grouped by recipe: mean +- std
    # per recipe, ranked by mean validation F1 (rank_by=...), and a paired bootstrap 95% interval of
    # the top two recipes' accuracy difference on every extra evaluation set (lib/recipes.py)
python experiments/compare.py sweep=students,sweep-2026-12-03_21-33-08 runs=<run id> pair=1,3
    # two seed sweeps and a run of its own side by side; the interval for rows 1 and 3 of the recipe
    # table, not the top two
python experiments/compare.py register=true [name=titlesweep-best] [alias=champion] [metric=best_val_f1]
    # also register the pyfunc model of the run with the best validation F1 in the MLflow model
    # registry, alias pointed at it; its test F1 is printed beside (chosen on test, it would be biased)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow import MlflowClient  # noqa: E402
from rich.console import Console  # noqa: E402

from lib import compare, recipes, registry  # noqa: E402
from lib.cli import compose_config, parse_key_values  # noqa: E402
from lib.errors import ConfigError, exit_on_user_error  # noqa: E402
from lib.tracking import tracking_uri  # noqa: E402

USAGE = (
    "compare.py [sweep=NAME|ID|latest[,NAME|ID...]] [runs=ID,...] [experiment=NAME] [out=DIR] [rank_by=METRIC] "
    "[pair=ROW,ROW] [register=true [name=MODEL_NAME] [alias=ALIAS] [metric=KEY]] [KEY=VALUE filters] "
    "[tracking.*=... paths.*=...]"
)
OPTIONS = {
    "sweep": "a sweep's run name or id, or latest (default: latest, unless filters are given); "
    "several, comma-separated, are compared together",
    "runs": "run ids, comma-separated, added to the selection (runs trained outside the sweeps)",
    "experiment": "MLflow experiment (default: tracking.experiment, titlesweep)",
    "out": "folder for comparison.md/.csv/.png (default: <sweep folder>/comparison)",
    "rank_by": f"metric ranking recipes in a seed sweep (default {recipes.RANK_DEFAULT})",
    "pair": "two row numbers of the recipe table whose accuracy difference gets the bootstrap (default 1,2)",
    "register": "true: register the best run's model in the MLflow registry",
    "name": f"registered model name (default {registry.REGISTER_DEFAULTS['name']})",
    "alias": f"alias pointed at the new version (default {registry.REGISTER_DEFAULTS['alias']})",
    "metric": f"metric choosing the run to register (default {registry.REGISTER_DEFAULTS['metric']})",
    "KEY=VALUE": "filter on the runs' config: model=scibert (model.name), loss.gamma=2.0",
    "tracking.*, paths.*": "config overrides, e.g. tracking.uri=http://127.0.0.1:5000",
}


def main(args: list[str]) -> None:
    options = parse_key_values(args, USAGE, OPTIONS, __doc__)
    config_overrides = [f"{k}={v}" for k, v in options.items() if k.startswith(("tracking.", "paths."))]
    filters = {k: v for k, v in options.items() if k not in OPTIONS and not k.startswith(("tracking.", "paths."))}
    registration = registry.registration_options(options)
    cfg = compose_config(config_overrides)
    client = MlflowClient(tracking_uri(cfg))
    parent, runs = compare.select_runs(
        client, options.get("experiment", cfg.tracking.experiment), options.get("sweep"), filters, options.get("runs")
    )
    comparison = compare.build_comparison(parent, runs)
    console = Console()
    compare.print_table(comparison, console)  # full width in a log file too
    pair = recipes.parse_pair(options["pair"]) if "pair" in options else None
    summary = compare.recipe_summary(client, comparison, options.get("rank_by", recipes.RANK_DEFAULT), pair)
    if summary is not None:
        compare.print_recipes(summary, console)
    for option in ("rank_by", "pair"):
        if summary is None and option in options:
            raise ConfigError(f"{option}={options[option]}: only used when the compared runs sweep {recipes.SEED_KEY}")
    out_dir = Path(options["out"]) if "out" in options else compare.default_out_dir(comparison, cfg.paths.outputs)
    for path in compare.write_outputs(client, comparison, out_dir, summary):
        console.print(f"wrote {path}", soft_wrap=True)  # a long path on one line, also in a log file
    if registration:
        version, best = registry.register_best(client, comparison, **registration)
        console.print(
            f"registered {version.name} version {version.version} (alias {registration['alias']}: "
            f"models:/{version.name}@{registration['alias']}) from run {best['run']} "
            f"({registration['metric']} = {best[registration['metric']]:.4f}, "
            f"{registry.REPORTED_BESIDE} = {best[registry.REPORTED_BESIDE]:.4f})"
        )


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
