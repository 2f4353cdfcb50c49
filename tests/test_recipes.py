"""Recipes across seeds (lib/recipes.py): mean +- std per recipe and a paired bootstrap interval for
the top two, on runs logged to a real MLflow store the way train.py logs them."""

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from entry_points import run_entry_point
from lib import compare, recipes
from lib.errors import ConfigError
from lib.recipes import paired_bootstrap
from lib.tracking import ROLE_TAG


def test_identical_recipes_differ_by_nothing_beyond_their_seeds():
    rng = np.random.default_rng(0)
    same_every_seed = np.repeat((rng.random((1, 300)) < 0.85).astype(float), 3, axis=0)
    assert paired_bootstrap(same_every_seed, same_every_seed.copy(), reps=2000) == (0.0, 0.0, 0.0)
    seeds_differ = (rng.random((3, 300)) < 0.85).astype(float)
    diff, low, high = paired_bootstrap(seeds_differ, seeds_differ.copy(), reps=2000)
    assert diff == 0.0 and low < 0 < high  # each recipe's seeds are redrawn on their own


def test_pairing_sees_a_small_consistent_gain_that_unpaired_noise_would_hide():
    # 1000 titles, both recipes right on the same 850; the first is also right on 15 more.
    second = np.zeros((1, 1000))
    second[0, :850] = 1
    first = second.copy()
    first[0, 850:865] = 1
    diff, low, high = paired_bootstrap(first, second, reps=4000)
    assert diff == pytest.approx(0.015)
    assert 0.005 < low < diff < high < 0.03  # excludes 0; two unpaired accuracies of 0.85 vary by +-0.022 each


def test_same_rate_recipes_give_an_interval_around_zero_of_the_expected_width():
    rng = np.random.default_rng(1)
    first, second = ((rng.random((3, 312)) < 0.86).astype(float) for _ in range(2))
    diff, low, high = paired_bootstrap(first, second, reps=4000, seed=3)
    assert low < 0 < high
    # independent errors: sd of the difference ~ sqrt(2 * .86 * .14 / 312) ~ 0.028 -> 95% width ~ 0.11
    assert 0.06 < high - low < 0.16


def test_seeds_that_disagree_widen_the_interval():
    steady = np.repeat((np.arange(500) < 430)[None, :].astype(float), 3, axis=0)  # 0.86 on every seed
    shaky = np.stack([(np.arange(500) < n) for n in (400, 430, 460)]).astype(float)  # 0.80 / 0.86 / 0.92
    _, low_steady, high_steady = paired_bootstrap(steady, steady.copy(), reps=2000)
    _, low_shaky, high_shaky = paired_bootstrap(shaky, steady, reps=2000)
    assert high_steady - low_steady == 0.0
    assert low_shaky < 0 < high_shaky and high_shaky - low_shaky > 0.05


def test_run_and_sweep_names_do_not_make_another_recipe():
    table = pd.DataFrame(
        {
            "trainer.seed": ["1", "2", "3", "1"],
            "model.keep_layers": ["4", "4", "4", ""],
            "tracking.run_name": ["student-seed1", "", "", ""],
            "tracking.sweep_name": ["", "students", "students", ""],
        }
    )
    names = recipes.recipe_names(table, list(table.columns))
    assert names.tolist() == ["model.keep_layers=4"] * 3 + ["(defaults)"]  # a named label, not an empty cell


@pytest.mark.parametrize("value", ["1", "1,1", "1, 1", "0,2", "1,2,3", "a,b", "-1,2", ""])
def test_a_pair_that_is_not_two_rows_is_refused_in_one_line(value):
    with pytest.raises(ConfigError, match=f"^pair={value}: expected two different row numbers"):
        recipes.parse_pair(value)


def test_a_pair_is_taken_best_row_first():
    assert recipes.parse_pair("3,1") == (1, 3)


# ------------------------------------------------------------------- on an MLflow store

TITLES = [f"title {i}" for i in range(200)]
LABELS = np.array([i % 2 for i in range(200)])


def _log_job(client, experiment_id, parent_id, recipe, seed, val_f1, right_on, titles=TITLES):
    overrides = f"loss={recipe} trainer.seed={seed}"
    run = client.create_run(
        experiment_id,
        run_name=overrides.replace(" ", ","),
        tags={ROLE_TAG: "job", "mlflow.parentRunId": parent_id, "hydra_overrides": overrides},
    )
    run_id = run.info.run_id
    correct = np.arange(200) < right_on
    preds = np.where(correct, LABELS, 1 - LABELS)
    for key, value in {
        "best_val_f1": val_f1,
        "test_accuracy": right_on / 200 - 0.01,
        "test_f1": 0.8,
        "citeseer_dev_accuracy": right_on / 200,
        "citeseer_dev_roc_auc": 0.9,
    }.items():
        client.log_metric(run_id, key, value)
    frame = pd.DataFrame({"text": titles, "label": LABELS, "probability": preds * 0.9, "prediction": preds})
    return run_id, frame


CE_AND_FOCAL = (("ce", (0.90, 0.91, 0.89), (160, 170, 150)), ("focal", (0.93, 0.92, 0.94), (180, 176, 184)))


def _make_sweep(tmp_path, focal_titles=TITLES):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment_id = client.create_experiment("titlesweep", artifact_location=str(tmp_path / "artifacts"))
    _add_sweep(client, experiment_id, tmp_path, "sweep-x", CE_AND_FOCAL, focal_titles)
    return store, client, tmp_path


def _add_sweep(client, experiment_id, tmp_path, name, recipe_scores, focal_titles=TITLES):
    """A sweep parent with 3 seeds of each (recipe, validation F1s, titles right of 200) in ``recipe_scores``."""
    parent = client.create_run(experiment_id, run_name=name, tags={ROLE_TAG: "sweep"})
    for recipe, val_f1s, rights in recipe_scores:
        for seed, (val_f1, right) in enumerate(zip(val_f1s, rights), start=1):
            titles = focal_titles if recipe == "focal" else TITLES
            run_id, frame = _log_job(client, experiment_id, parent.info.run_id, recipe, seed, val_f1, right, titles)
            folder = tmp_path / run_id
            folder.mkdir()
            frame.to_csv(folder / "predictions.csv", index=False)
            client.log_artifact(run_id, str(folder / "predictions.csv"), "reports/citeseer_dev")
            client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")


@pytest.fixture
def seed_sweep(tmp_path):
    """A sweep parent and 2 recipes x 3 seeds: focal right on 180/176/184 of 200 titles, ce on 160/170/150."""
    return _make_sweep(tmp_path)


@pytest.mark.slow
def test_runs_are_grouped_by_recipe_with_mean_std_and_the_top_two_compared(seed_sweep):
    store, client, _ = seed_sweep
    parent, runs = compare.select_runs(client, "titlesweep", None, {})
    comparison = compare.build_comparison(parent, runs)
    summary = compare.recipe_summary(client, comparison)
    assert summary.ranked == ["loss=focal", "loss=ce"]  # by mean validation F1
    focal = summary.table.set_index("recipe").loc["loss=focal"]
    assert focal["runs"] == 3
    assert focal["citeseer_dev_accuracy_mean"] == pytest.approx(np.mean([0.90, 0.88, 0.92]))
    assert focal["citeseer_dev_accuracy_std"] == pytest.approx(np.std([0.90, 0.88, 0.92], ddof=1))
    assert focal["citeseer_dev_roc_auc_mean"] == pytest.approx(0.9)
    (interval,) = summary.intervals
    assert (interval.data, interval.first, interval.second, interval.rows) == (
        "citeseer_dev",
        "loss=focal",
        "loss=ce",
        200,
    )
    assert interval.difference == pytest.approx(0.90 - 0.80)
    assert 0 < interval.low < 0.1 < interval.high and interval.verdict == "loss=focal is better"


@pytest.mark.slow
def test_recipes_scored_on_other_rows_of_the_same_size_are_not_paired(tmp_path):
    # e.g. a data.size sweep: every cross_source set has 2,000 rows, but not the same ones
    store, client, _ = _make_sweep(tmp_path, focal_titles=[f"another title {i}" for i in range(200)])
    parent, runs = compare.select_runs(client, "titlesweep", None, {})
    summary = compare.recipe_summary(client, compare.build_comparison(parent, runs))
    assert summary.ranked == ["loss=focal", "loss=ce"] and summary.intervals == []
    assert summary.unpaired == ["citeseer_dev"]
    assert summary.table.set_index("recipe").loc["loss=focal", "citeseer_dev_accuracy_mean"] == pytest.approx(0.90)
    (note,) = [line for line in recipes.interval_lines(summary) if "citeseer_dev" in line]
    assert "different rows" in note and "no paired interval" in note


@pytest.mark.slow
def test_a_store_that_fails_to_serve_predictions_is_an_error_not_a_missing_set(seed_sweep, monkeypatch):
    store, client, _ = seed_sweep
    parent, runs = compare.select_runs(client, "titlesweep", None, {})
    comparison = compare.build_comparison(parent, runs)
    run_ids = comparison.table["run_id"].tolist()
    # A set no run logged is simply absent: no interval, no error.
    assert recipes.correctness(client, run_ids, "no_such_set") is None

    def refused(self, run_id, path, dst_path=None):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(MlflowClient, "download_artifacts", refused)
    with pytest.raises(PermissionError, match="Permission denied"):
        compare.recipe_summary(client, comparison)


@pytest.mark.slow
def test_ranking_by_a_loss_puts_the_lowest_first(seed_sweep):
    store, client, _ = seed_sweep
    parent, runs = compare.select_runs(client, "titlesweep", None, {})
    for run in runs:  # ce has the lower validation loss
        client.log_metric(run.info.run_id, "best_val_loss", 0.2 if "ce" in run.info.run_name.split(",")[0] else 0.3)
    summary = compare.recipe_summary(client, compare.build_comparison(parent, runs), rank_by="best_val_loss")
    assert summary.ranked == ["loss=ce", "loss=focal"] and summary.intervals[0].difference == pytest.approx(-0.10)


@pytest.mark.slow
def test_compare_command_prints_and_writes_the_recipe_view(seed_sweep):
    store, client, tmp_path = seed_sweep
    out = tmp_path / "report"
    done = run_entry_point(
        "compare.py", f"tracking.uri={store}", f"paths.outputs={tmp_path}", f"out={out}", timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recipes across seeds" in done.stdout and "0.9000 ± 0.0200" in done.stdout  # focal's citeseer acc
    assert "citeseer_dev (200 rows): +0.1000, 95% interval [+0.0" in done.stdout
    assert "Downloading artifacts" not in done.stdout + done.stderr  # one bar per run's predictions otherwise
    markdown = (out / "recipes.md").read_text()
    assert "| loss=focal | 3 |" in markdown and "loss=focal is better" in markdown
    assert (out / "recipes.png").stat().st_size > 5000
    assert set(pd.read_csv(out / "recipes.csv")["recipe"]) == {"loss=ce", "loss=focal"}


@pytest.mark.slow
def test_rank_by_a_metric_no_run_has_is_refused_in_one_line(seed_sweep):
    store, _, tmp_path = seed_sweep
    done = run_entry_point(
        "compare.py", f"tracking.uri={store}", f"paths.outputs={tmp_path}", "rank_by=val_nonsense", timeout=300
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith("rank_by=val_nonsense: no finished run has this metric")


@pytest.mark.slow
def test_two_sweeps_compared_together_and_a_chosen_pair_bootstrapped(seed_sweep):
    # A second sweep, e.g. students beside the default runs: weighted_ce ranks between focal and ce.
    store, client, tmp_path = seed_sweep
    experiment_id = client.get_experiment_by_name("titlesweep").experiment_id
    _add_sweep(client, experiment_id, tmp_path, "sweep-y", [("weighted_ce", (0.92, 0.92, 0.92), (150, 150, 150))])
    parent, runs = compare.select_runs(client, "titlesweep", "sweep-x,sweep-y", {})
    assert parent is None and len(runs) == 9  # no one parent to log the comparison to
    comparison = compare.build_comparison(parent, runs)
    summary = compare.recipe_summary(client, comparison, pair=(1, 3))
    assert summary.ranked == ["loss=focal", "loss=weighted_ce", "loss=ce"]
    (interval,) = summary.intervals
    assert (interval.first, interval.second) == ("loss=focal", "loss=ce")  # rows 1 and 3, not the top two
    assert interval.difference == pytest.approx(0.90 - 0.80)
    with pytest.raises(ConfigError, match="^pair=2,4: the recipe table has 3 rows; name two of rows 1-3$"):
        compare.recipe_summary(client, comparison, pair=(2, 4))
    # runs= adds runs by id (e.g. a seed trained on its own); a run both found and named counts once
    ce_ids = [r.info.run_id for r in runs if r.info.run_name.startswith("loss=ce,")]
    parent, picked = compare.select_runs(client, "titlesweep", "sweep-y", {}, runs=",".join([*ce_ids, ce_ids[0]]))
    assert (
        parent is None
        and sorted(r.info.run_name.split(",")[0] for r in picked) == ["loss=ce"] * 3 + ["loss=weighted_ce"] * 3
    )
    with pytest.raises(ConfigError, match="^runs=nope: no such run in the tracking store"):
        compare.select_runs(client, "titlesweep", None, {}, runs="nope")
    out = tmp_path / "two-sweeps"
    done = run_entry_point(
        "compare.py", f"tracking.uri={store}", f"paths.outputs={tmp_path}", f"out={out}",
        "sweep=sweep-x,sweep-y", "pair=3,2", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Rows 2 and 3 (pair=2,3; ranked by mean best_val_f1): loss=weighted_ce vs loss=ce" in done.stdout
    assert "citeseer_dev (200 rows): -0.0500, 95% interval" in done.stdout  # 150 right of 200 vs 160/170/150
    assert "| 3 | loss=ce | 3 |" in (out / "recipes.md").read_text()


@pytest.mark.slow
def test_offline_five_sweeps_five_recipes_over_three_seeds(make_cfg):
    from hydra import compose, initialize_config_dir

    from lib.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=offline_five"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    recipes, seeds = params["recipe"].split(","), params["trainer.seed"].split(",")
    assert len(recipes) == 5 and len(seeds) == 3
    expected = {
        "ce": ("ce", "none", "linear", 1.0),
        "weighted_ce": ("weighted_ce", "none", "linear", 1.0),
        "focal": ("focal", "none", "linear", 1.0),
        "focal_fgm": ("focal", "fgm", "linear", 1.0),
        "focal_fgm_llrd": ("focal", "fgm", "cosine", 0.95),
    }
    assert set(recipes) == set(expected)
    for recipe in recipes:
        job = make_cfg(f"recipe={recipe}")
        assert (job.loss.name, job.adversarial.name, job.schedule.name, job.schedule.layer_decay) == expected[recipe]
        assert job.model.name == "minilm" and job.trainer.epochs == 3  # only the recipe differs from the default run


def test_the_recipe_plot_numbers_and_wraps_long_recipe_names(tmp_path):
    # Recipe names are whole override strings; unwrapped, matplotlib could not lay the legend out
    # ("Tight layout not applied") and the names ran off the figure.
    import warnings

    from lib import plots

    long = " ".join(f"data.positive_noise.rate_{i}=0" for i in range(12))
    label = plots.recipe_legend_label(3, long, 2, width=60, max_lines=3)
    lines = label.split("\n")
    assert lines[0].startswith("#3 data.positive_noise.rate_0=0") and len(lines) == 3
    assert all(len(line) <= 60 for line in lines) and lines[-1].endswith("… (n=2)")  # the count survives
    assert plots.recipe_legend_label(1, "loss=focal", 3) == "#1 loss=focal (n=3)"

    table = pd.DataFrame(
        {
            "recipe": [long, "loss=focal"],
            "runs": [3, 3],
            "test_accuracy_mean": [0.9, 0.88],
            "test_accuracy_std": [0.01, 0.0],
            "cross_source_accuracy_mean": [0.91, 0.9],
            "cross_source_accuracy_std": [0.002, 0.003],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plots.recipe_bars_png(
            table, [("test_accuracy", "test acc"), ("cross_source_accuracy", "cross_source acc")], tmp_path / "r.png"
        )
    assert path.stat().st_size > 5000


def test_runs_of_the_same_name_from_two_sweeps_get_told_apart():
    # one label per run for the terminal table, comparison.md and the score plot
    table = pd.DataFrame(
        {
            "run": ["trainer.seed=2", "trainer.seed=2", "focal"],
            "run_id": ["a" * 32, "b" * 32, "c" * 32],
            "pruned_at_step": ["", "", "40"],
        }
    )
    assert compare.run_labels(table) == [
        "trainer.seed=2 (aaaaaaaa)",
        "trainer.seed=2 (bbbbbbbb)",
        "focal (pruned at step 40)",
    ]
