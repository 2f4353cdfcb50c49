"""The documentation's generated parts: the configuration reference read from conf/ (docs/hooks.py), the
--help texts, and the results pages experiments/report.py writes from an MLflow store and the benchmark
JSON. `mkdocs build --strict` itself runs in CI (.ci/run)."""

import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from lib.paths import CONF_DIR, PROJECT_ROOT
from lib.tracking import ROLE_TAG


def _load(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there, as MkDocs registers its hooks
    spec.loader.exec_module(module)
    return module


hooks = _load("docs_hooks", PROJECT_ROOT / "docs" / "hooks.py")
report = _load("entry_report", PROJECT_ROOT / "experiments" / "report.py")


def _yaml_keys(node, prefix="") -> set[str]:
    keys = set()
    for key, value in node.items():
        name = f"{prefix}{key}"
        keys |= _yaml_keys(value, name + ".") if isinstance(value, dict) and value else {name}
    return keys


@pytest.mark.parametrize("path", sorted(CONF_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_the_configuration_page_has_every_key_of_every_option_file(path):
    option = hooks.read_option_file(path)
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    expected = _yaml_keys(data)
    inline = {r.key for r in option.rows if r.value.startswith("{")}  # a flow mapping: one row
    covered = {k for k in expected if k in hooks.leaf_keys(option) or k.rsplit(".", 1)[0] in inline}
    assert covered == expected, sorted(expected - covered)
    assert hooks.leaf_keys(option) - inline <= expected


def test_comments_stay_with_their_keys(tmp_path):
    path = tmp_path / "option.yaml"
    path.write_text(
        "# @package _global_\n# What it is. More about it.\n#   python experiments/train.py +g=option\n"
        "defaults:\n  - override /loss: focal   # why focal\n\n"
        "trainer:\n  tolerance: 0.005   # ties within this\n                     #   win nearest 0.5\n"
        "  # a block above its key\n  patience: 3\n  flow: {a: 1}\n# left commented out\n"
    )
    option = hooks.read_option_file(path)
    assert option.is_global and option.summary == "What it is."
    assert option.header[-1] == "  python experiments/train.py +g=option"
    assert option.defaults == [("override /loss: focal", "why focal")]
    rows = {r.key: r for r in option.rows}
    assert rows["trainer.tolerance"].comment == "ties within this win nearest 0.5"
    assert rows["trainer.patience"].comment == "a block above its key" and rows["trainer.patience"].value == "3"
    assert option.footer == "left commented out"


def test_the_configuration_page_has_a_section_for_every_group_and_option():
    page = hooks.configuration_markdown()
    for folder in (p for p in CONF_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml"))):
        assert f"## {folder.name} {{#{folder.name}}}" in page
        for option in folder.glob("*.yaml"):
            assert f"={option.stem} {{#{hooks._anchor(folder.name, option.stem)}}}" in page, option
    assert "<code>trainer.threshold_tolerance</code> | <code>0.005</code>" in page  # group keys get their prefix
    assert "<code>hydra.launcher.partition</code>" in page  # a _global_ preset's keys are full paths


def test_a_help_marker_becomes_the_commands_help_and_a_failing_command_fails_the_build(tmp_path, monkeypatch):
    (tmp_path / "tool.py").write_text("print('usage: tool.py\\n\\n== Config ==\\nhuge dump')")
    (tmp_path / "broken.py").write_text("raise SystemExit(3)")
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    monkeypatch.setattr(hooks, "_help_cache", {})
    page = hooks.expand("# Tool\n<!-- generated: help tool.py -->\n")
    assert "$ python tool.py --help\nusage: tool.py" in page and "huge dump" not in page
    with pytest.raises(RuntimeError, match="broken.py --help exited 3"):
        hooks.expand("<!-- generated: help broken.py -->")


def test_every_entry_point_has_its_help_on_the_command_line_page():
    page = (PROJECT_ROOT / "docs" / "cli.md").read_text()
    scripts = [*(PROJECT_ROOT / "experiments").glob("*.py"), *(PROJECT_ROOT / "benchmarks").glob("*.py")]
    for script in (s for s in scripts if 'if __name__ == "__main__"' in s.read_text()):
        name = script.relative_to(PROJECT_ROOT)
        assert f"<!-- generated: help {name} -->" in page, f"docs/cli.md has no --help of {name}"


# ------------------------------------------------------------------ experiments/report.py


def test_the_benchmark_page_heads_every_result_with_its_command_machine_and_date():
    page = report.benchmarks_page(PROJECT_ROOT / "benchmarks" / "results")
    files = sorted((PROJECT_ROOT / "benchmarks" / "results").glob("*.json"))
    assert files and all(f"## {f.stem}" in page for f in files)
    sections = page.split("\n## ")[1:]
    assert all("- **command**: `python benchmarks/" in s or "- **raw data**" in s for s in sections)
    assert page.count("- **machine**: ") >= len([s for s in sections if "- **command**" in s])
    assert "| ours | " in page and "| median | 16 | " in page  # the throughput and the pruning renderers


def test_a_result_goes_to_the_renderer_its_command_names_else_its_own_markdown(tmp_path, monkeypatch):
    monkeypatch.setitem(report.RENDERERS, "scoring.py", lambda result, path: [f"scored {result['started']}"])
    scored = tmp_path / "2026-12-04-scoring-x.json"
    scored.write_text(json.dumps({"command": "python benchmarks/scoring.py runs=a:1", "started": "today"}))
    assert report.benchmark_section(scored) == ["## 2026-12-04-scoring-x", "", "scored today"]
    unknown = tmp_path / "2026-12-05-new.json"
    unknown.write_text(json.dumps({"command": "python benchmarks/new.py", "summary": {}}))
    unknown.with_suffix(".md").write_text("| as | written |\n")
    assert report.benchmark_section(unknown)[-1] == "| as | written |\n"


def test_an_empty_store_is_a_page_that_says_so_and_creates_no_store(tmp_path, capsys):
    report.main([f"paths.outputs={tmp_path / 'outputs'}", f"out={tmp_path / 'results'}"])
    page = (tmp_path / "results" / "runs.md").read_text()
    assert "No finished runs in this store yet" in page and "python experiments/report.py" in page
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert "no finished runs in" in capsys.readouterr().out
    assert (tmp_path / "results" / "benchmarks.md").is_file()


def _store_with_a_seed_sweep_and_a_single_run(tmp_path):
    """Two recipes x two seeds under one sweep (with predictions on an extra set, for the bootstrap), and
    one run trained outside a sweep: tags and metrics as lib/run.py and lib/sweep.py log them."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.create_experiment("titlesweep", artifact_location=str(tmp_path / "artifacts"))
    machine = {"host": "elsewhere", "device": "cpu", "precision": "fp32", "torch": "2.13.0+cpu"}
    sweep = client.create_run(
        experiment,
        run_name="sweep-x",
        tags={ROLE_TAG: "sweep", "sweep_command": "train.py --multirun loss=ce,focal trainer.seed=1,2"},
    )
    labels = np.arange(100) % 2
    for loss, rights in (("ce", (70, 74)), ("focal", (90, 88))):
        for seed, right in zip((1, 2), rights):
            overrides = f"loss={loss} trainer.seed={seed}"
            run = client.create_run(
                experiment,
                run_name=overrides.replace(" ", ","),
                tags={
                    ROLE_TAG: "job",
                    "mlflow.parentRunId": sweep.info.run_id,
                    "hydra_overrides": overrides,
                    **machine,
                },
            )
            client.log_param(run.info.run_id, "trainer.num_threads", "None")
            for key in ("test_accuracy", "best_val_f1", "cite_accuracy"):
                client.log_metric(run.info.run_id, key, right / 100)
            predicted = np.where(np.arange(100) < right, labels, 1 - labels)
            frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": labels, "prediction": predicted})
            frame.to_csv(tmp_path / "predictions.csv", index=False)
            client.log_artifact(run.info.run_id, str(tmp_path / "predictions.csv"), "reports/cite")
            client.set_terminated(run.info.run_id)
    client.log_metric(sweep.info.run_id, "jobs_finished", 4)
    client.set_terminated(sweep.info.run_id)
    single = client.create_run(experiment, run_name="single", tags={"hydra_overrides": "+debug=smoke", **machine})
    client.log_metric(single.info.run_id, "test_accuracy", 0.8)
    client.set_terminated(single.info.run_id)


@pytest.mark.slow  # an MLflow store on SQLite takes seconds to create
def test_report_pages_a_sweep_its_recipes_and_a_single_run(tmp_path):
    _store_with_a_seed_sweep_and_a_single_run(tmp_path)
    out = tmp_path / "results"
    report.main([f"paths.outputs={tmp_path / 'outputs'}", f"out={out}"])
    page = (out / "runs.md").read_text()
    sweep, single = page.split("## sweep-x\n")[1].split("## Runs outside a sweep\n")
    assert "- **command**: `python experiments/train.py --multirun loss=ce,focal trainer.seed=1,2`" in sweep
    assert "- **table**: `python experiments/compare.py sweep=sweep-x`" in sweep
    assert "CPU not recorded by the runs; device cpu, precision fp32, torch threads torch default" in sweep
    assert "- **date**: " in sweep and " UTC; status FINISHED, 4 job(s) finished" in sweep
    assert "| loss=focal,trainer.seed=1 | focal | 1 | **0.9000** |" in sweep  # compare.py's table, best in bold
    assert "| loss=focal | 2 | 0.8900 ± 0.0141 |" in sweep  # the recipes across seeds
    assert "cite (100 rows): +0.1700, 95% interval" in sweep  # the top two's paired bootstrap
    assert (out / "figures" / "sweep-x.png").stat().st_size > 0 and "](figures/sweep-x.png)" in sweep
    assert "`python experiments/train.py` with each row's overrides and `+debug=smoke`" in single
    assert "| single | **0.8000** |" in single
    store = tmp_path / "outputs" / "mlflow.db"
    before = store.stat().st_mtime_ns
    report.main([f"paths.outputs={tmp_path / 'outputs'}", f"out={out}"])  # rerun: regenerated, store untouched
    assert store.stat().st_mtime_ns == before


def test_a_gpu_benchmark_names_its_gpu_beside_the_cpu(tmp_path):
    measured = json.loads((PROJECT_ROOT / "benchmarks" / "results" / "2026-12-04-nvidia-h200.json").read_text())
    path = tmp_path / "2026-12-04-nvidia-h200.json"
    path.write_text(json.dumps(measured))
    assert ", device cuda (NVIDIA H200), 2 torch threads" in "\n".join(report.benchmark_section(path))
    del measured["machine"]["gpu"]  # a file written before the machine recorded its GPU
    path.write_text(json.dumps(measured))
    assert ", device cuda, 2 torch threads" in "\n".join(report.benchmark_section(path))
