"""experiments/ui_screenshots.py against a real `mlflow ui` and headless Chromium: the README's
pictures of a sweep, and the sweep run's page listing its jobs (skipped where Chromium is missing)."""

import struct

import pytest

from entry_points import run_entry_point
from services.chromium import why_not_available

pytest.importorskip("playwright", reason="Playwright is not installed (pip install -e '.[dev]')")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(why_not_available() is not None, reason=str(why_not_available())),
]


def _png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


def test_screenshots_show_a_sweep_and_its_jobs(tmp_path, toy_csv):
    outputs = tmp_path / "out"
    sweep = run_entry_point(
        "train.py", "--multirun", f"paths.outputs={outputs}", "data=csv", f"data.train={toy_csv}",
        "+debug=smoke", "trainer.limit_eval=48", "extra_eval=null", "loss=ce,focal", cwd=tmp_path,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    shots = tmp_path / "shots"
    done = run_entry_point("ui_screenshots.py", f"paths.outputs={outputs}", f"out={shots}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the sweep run's page lists 2 of its 2 child runs: loss=ce, loss=focal" in done.stdout
    for name in ("mlflow_sweep_run.png", "mlflow_experiment_runs.png", "mlflow_compare_jobs.png"):
        assert _png_size(shots / name) == (1440, 1000), name
        assert (shots / name).stat().st_size > 30_000, name  # a rendered page, not a blank one


def test_an_unknown_option_is_one_line_naming_the_valid_ones(tmp_path):
    done = run_entry_point("ui_screenshots.py", f"paths.outputs={tmp_path}", "colour=red", timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "unknown option colour" in done.stderr and "sweep" in done.stderr
