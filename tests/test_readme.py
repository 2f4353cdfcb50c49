"""The front door cannot rot: every command the README and the getting-started page show is run, in its
smoke form, by a named test (or by CI itself), and its options are valid for today's entry points and
config. A command added to either page without an entry in RUNS_IT fails here, naming it."""

import ast
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from lib.paths import CONF_DIR, PROJECT_ROOT

PAGES = ("README.md", "docs/getting-started.md")
CI = PROJECT_ROOT / ".ci" / "run"

SWEEP = "tests/test_sweep.py::test_sequential_sweep_makes_one_parent_and_a_child_per_job"  # +debug=smoke, compare.py
WINNER = "tests/test_predict.py::test_compare_registers_the_best_run_and_predict_loads_it_by_alias"
# command as shown -> what runs it: "tests/<file>::<test>" (its smoke form) or "ci: <a line of .ci/run>"
RUNS_IT = {
    "pip install torch==2.13.0": "ci: python -m pip install --quiet torch==2.13.0",
    "pip install -e '.[dev,bench,team,onnx]'": "ci: python -m pip install --quiet -e '.[dev,bench,team,onnx,docs]'",
    "pip install -e '.[docs]'": "ci: python -m pip install --quiet -e '.[dev,bench,team,onnx,docs]'",
    "mkdocs serve": "ci: mkdocs build --strict",
    "python -m pytest -q": "ci: python -m pytest -q",
    'python -m pytest -q -m "not slow"': "ci: python -m pytest -q",  # the fast lane is a subset
    "bash tests/services/install.sh": "ci: bash tests/services/install.sh",
    "python experiments/train.py": "tests/test_training.py::test_default_minilm_run_is_completely_tracked_in_mlflow",
    "python experiments/train.py +debug=smoke": SWEEP,
    "python experiments/train.py model=scibert loss=focal adversarial=fgm schedule=cosine": (
        "tests/test_cli.py::test_issue_recipe_runs_from_the_command_line_and_is_tracked"  # with model=tiny_roberta
    ),
    "mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port 5000": (
        "tests/test_ui_screenshots.py::test_screenshots_show_a_sweep_and_its_jobs"
    ),
    "python experiments/train.py --multirun +debug=smoke loss=ce,focal trainer.seed=1,2": SWEEP,
    "python experiments/compare.py": "tests/test_recipes.py::test_compare_command_prints_and_writes_the_recipe_view",
    "python experiments/compare.py register=true": WINNER,
    "python experiments/predict.py model=titlesweep-best@champion input=titles.txt": WINNER,
    "python experiments/evaluate.py run=<run id> input=labelled.csv": (
        "tests/test_predict.py::test_evaluate_logs_a_linked_run_with_every_artifact"
    ),
    "python experiments/report.py": "tests/test_docs.py::test_report_pages_a_sweep_its_recipes_and_a_single_run",
    "mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri postgresql+psycopg2://mlflow@db-host/mlflow "
    "--artifacts-destination /shared/mlflow-artifacts": (
        "tests/test_postgres_server.py::test_four_parallel_jobs_log_every_run_metric_and_artifact"
    ),
    "python experiments/train.py tracking.uri=http://127.0.0.1:5000": (
        "tests/test_server.py::test_four_parallel_jobs_against_a_server_lose_nothing"
    ),
    "python experiments/train.py --multirun launcher=slurm hydra.launcher.partition=gpu loss=ce,focal": (
        "tests/test_slurm.py::test_a_slurm_sweep_goes_through_sbatch_and_mlflow_holds_every_job"
    ),
}
FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def commands(text: str) -> list[str]:
    """The commands of a page's bash blocks: continuations joined, `&&` chains split, comments dropped."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found += [" ".join(part.split()) for part in line.split(" && ")]
    return found


def shown() -> list[str]:
    return sorted({c for page in PAGES for c in commands((PROJECT_ROOT / page).read_text())})


def test_the_extractor_reads_blocks_as_a_shell_would():
    text = "```bash\npython a.py x=1   # note\n# alone\npip x && mkdocs serve\npython b.py \\\n  y=2\n```\n"
    assert commands(text) == ["python a.py x=1", "pip x", "mkdocs serve", "python b.py y=2"]


def test_every_command_on_the_front_pages_is_run_by_a_test_or_ci():
    missing = [c for c in shown() if c not in RUNS_IT]
    assert not missing, f"add these to RUNS_IT with the test that runs them (smoke form): {missing}"


def test_every_test_and_ci_line_named_exists():
    ci_lines = {line.split("#")[0].strip() for line in CI.read_text().splitlines()}
    for command, runner in RUNS_IT.items():
        if runner.startswith("ci: "):
            assert runner[4:] in ci_lines, (command, runner)
            continue
        path, name = runner.split("::")
        tree = ast.parse((PROJECT_ROOT / path).read_text())
        assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, runner


def test_no_entry_in_the_table_is_stale():
    assert set(RUNS_IT) <= set(shown()), sorted(set(RUNS_IT) - set(shown()))


def _options(script: str) -> set[str]:
    """The option names an entry point's OPTIONS dict declares, read from its source (no import)."""
    tree = ast.parse((PROJECT_ROOT / "experiments" / script).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "OPTIONS" for t in node.targets):
            return {k.value.split(",")[0] for k in node.value.keys}
    raise AssertionError(f"{script} declares no OPTIONS")


@pytest.mark.parametrize("command", [c for c in RUNS_IT if c.startswith("python experiments/")])
def test_each_command_is_valid_for_todays_code(command):
    script, *args = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", command.removeprefix("python experiments/")))
    if script == "train.py":  # composes as Hydra would, with every swept value
        overrides = OverridesParser.create().parse_overrides([a for a in args if a != "--multirun"])
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for pick in (0, -1):
                chosen = [
                    f"{o.input_line.split('=', 1)[0]}={list(o.sweep_string_iterator())[pick]}"
                    if o.is_sweep_override()
                    else o.input_line
                    for o in overrides
                ]
                compose("config", overrides=chosen, return_hydra_config=True)
        return
    keys = {a.split("=", 1)[0] for a in args}
    allowed = _options(script)
    assert keys <= allowed | {"KEY=VALUE"}, (command, sorted(keys - allowed))


def test_the_readme_is_a_front_door():
    text = (PROJECT_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    # No measurement narrative: measured figures live on the documentation site, beside their command.
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a dated measurement belongs in docs/decisions.md"
    assert "python -m pytest -q" in text and "bash tests/services/install.sh" in text  # CI's command, the installer
