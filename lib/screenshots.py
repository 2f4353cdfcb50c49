"""Screenshots of a sweep in the MLflow UI, for the README: start ``mlflow ui`` on 127.0.0.1, drive
headless Chromium (Playwright, with the system's Chromium) to the sweep run's page (its description
holds the comparison table; below it, the list of its child runs), the experiment's runs table and
the compare page of the sweep's jobs, and save one PNG each."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from mlflow import MlflowClient

from lib import compare
from lib.errors import ConfigError, UserError
from lib.sweep import child_runs

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = {"width": 1440, "height": 1000}
UI_START_SECONDS = 90  # `mlflow ui` imports MLflow and migrates the store before it answers
PAGE_SETTLE_MS = 2500  # the UI keeps fetching after the first paint (charts, child runs)


@dataclass
class Page:
    name: str
    url: str
    png: Path
    ready_text: str  # the page has loaded once this text shows
    text: str = ""  # the rendered page's visible text, for checks


@dataclass
class Shots:
    parent_run_id: str
    experiment_id: str
    children: list[str]  # the child runs' names
    params: list[str]  # the swept config keys, as MLflow params (loss.name, trainer.seed)
    metrics: list[str]  # the decisive metrics: test and every extra set's accuracy
    pages: list[Page] = field(default_factory=list)


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


# MLflow 3's server starts a job runner (a dozen huey worker processes, for GenAI scorers) that
# these pages never use; on 2 cores it slows the UI down for nothing.
NO_JOB_RUNNER = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_ui(store_uri: str, port: int, log_file: Path) -> Iterator[str]:
    """``mlflow ui`` on 127.0.0.1:port for the duration of the block; its output goes to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                store_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=NO_JOB_RUNNER,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(base, server, log_file)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_up(base: str, server: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + UI_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"mlflow ui exited with status {server.returncode}; see {log_file}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise UserError(f"mlflow ui did not answer on {base} within {UI_START_SECONDS} s; see {log_file}")


def sweep_pages(client: MlflowClient, base: str, parent_run_id: str, out_dir: Path) -> Shots:
    """The three pages of one sweep: its run page, its experiment's runs table, its jobs compared."""
    parent = client.get_run(parent_run_id)
    experiment = parent.info.experiment_id
    children = sorted(child_runs(client, parent_run_id), key=lambda run: run.info.run_name)
    if not children:
        raise ConfigError(f"sweep={parent_run_id}: the run has no child runs to show")
    differing = compare.build_comparison(parent, children).overrides  # the swept keys, however they were swept
    params = [key.lstrip("+~") if "." in key else f"{key.lstrip('+~')}.name" for key in differing]
    logged = set().union(*(run.data.metrics for run in children))
    metrics = ["test_accuracy"] + sorted(
        k for k in logged if k.endswith("_accuracy") and not k.startswith(("test_", "val_", "best_val_"))
    )
    shots = Shots(parent_run_id, experiment, [run.info.run_name for run in children], params, metrics)
    ids = quote(json.dumps([run.info.run_id for run in children]))
    shots.pages = [
        Page(
            "sweep run",
            f"{base}/#/experiments/{experiment}/runs/{parent_run_id}",
            out_dir / "mlflow_sweep_run.png",
            "Child runs",
        ),
        Page(
            "experiment runs",
            f"{base}/#/experiments/{experiment}/runs",
            out_dir / "mlflow_experiment_runs.png",
            parent.info.run_name,
        ),
        Page(
            "compare jobs",
            f"{base}/#/compare-runs?runs={ids}&experiments={quote(json.dumps([experiment]))}",
            out_dir / "mlflow_compare_jobs.png",
            "Run details",
        ),
    ]
    return shots


# Written to the browser's localStorage before any page loads (keys of MLflow 3.17's UI): the classic
# "Model training" navigation rather than GenAI's, no assistant panel over the metrics, and in the
# runs table the sweep expanded to its jobs with the decisive metrics as columns.
UI_SETTINGS = {
    "mlflow.workflowType_v1": '"machine_learning"',
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}
RUNS_TABLE_KEY = 'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState'


def _ui_settings(shots: Shots) -> dict[str, str]:
    columns = [f"metrics.`{m}`" for m in shots.metrics] + [f"params.`{p}`" for p in shots.params]
    table = {"selectedColumns": columns, "runsExpanded": {shots.parent_run_id: True}}
    return {**UI_SETTINGS, RUNS_TABLE_KEY.format(experiment=shots.experiment_id): json.dumps(table)}


def capture(shots: Shots, chromium: str, timeout_ms: int = 60_000) -> Shots:
    """Open each page in headless Chromium, wait until it shows the sweep, save the PNG and keep
    the page's visible text."""
    from playwright.sync_api import sync_playwright

    init = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in _ui_settings(shots).items())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(init)
            page = context.new_page()
            for shot in shots.pages:
                page.goto(shot.url, wait_until="load")
                page.get_by_text(shot.ready_text).first.wait_for(timeout=timeout_ms)
                if shot.name == "sweep run":  # its description holds the comparison table
                    page.get_by_role("button", name="Expand description").first.click()
                if shot.name == "compare jobs":
                    _plot_decisive_metrics(page, shots)
                page.wait_for_timeout(PAGE_SETTLE_MS)
                shot.png.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot.png))
                shot.text = page.inner_text("body")
        finally:
            browser.close()
    return shots


def _plot_decisive_metrics(page, shots: Shots) -> None:
    """The compare page's parallel-coordinates plot starts on the first params and metrics by name;
    pick the swept keys and the decisive metrics instead, as a user would in its two selectors."""
    page.get_by_role("button", name="Clear All").click()
    params, metrics = page.get_by_role("combobox").all()[:2]
    for selector, values in ((params, shots.params), (metrics, shots.metrics)):
        for value in values:
            selector.click()
            selector.fill(value)
            page.wait_for_timeout(300)
            page.keyboard.press("Enter")
        page.keyboard.press("Escape")


def children_listed(shots: Shots) -> list[str]:
    """The child runs that the sweep run's page lists under "Child runs" (all of them, when the UI
    shows the sweep as one)."""
    text = next(page.text for page in shots.pages if page.name == "sweep run")
    listed = text.split("Child runs", 1)[-1].split("\n\n", 1)[0] if "Child runs" in text else ""
    names = {name.strip(" ,") for name in listed.replace(",", "\n").splitlines()}
    return [child for child in shots.children if child in names]
