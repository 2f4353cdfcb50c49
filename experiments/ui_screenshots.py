"""Screenshots of a sweep in the MLflow UI (the README's pictures): starts `mlflow ui` on 127.0.0.1,
drives headless Chromium to the sweep run's page, the experiment's runs table and the compare page
of the sweep's jobs, and saves one PNG each. Needs Chromium (Debian: apt-get install -y chromium)
and Playwright (pip install -e '.[dev]').

    python experiments/ui_screenshots.py                      # the latest sweep, PNGs into docs/
    python experiments/ui_screenshots.py sweep=<run id or name> out=/tmp/shots
    python experiments/ui_screenshots.py paths.outputs=/elsewhere/outputs
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow import MlflowClient  # noqa: E402

from lib import compare, screenshots  # noqa: E402
from lib.cli import compose_config, parse_key_values  # noqa: E402
from lib.errors import ConfigError, UserError, exit_on_user_error  # noqa: E402
from lib.paths import PROJECT_ROOT  # noqa: E402
from lib.tracking import redact, tracking_uri  # noqa: E402

USAGE = "ui_screenshots.py [sweep=NAME|ID|latest] [experiment=NAME] [out=DIR] [port=N] [tracking.*=... paths.*=...]"
OPTIONS = {
    "sweep": "the sweep's run name or id, or latest (default: latest)",
    "experiment": "MLflow experiment (default: tracking.experiment, titlesweep)",
    "out": "folder for the PNGs (default: docs/)",
    "port": "port of the temporary `mlflow ui` on 127.0.0.1 (default: a free one)",
    "tracking.*, paths.*": "config overrides naming the store, e.g. paths.outputs=/elsewhere/outputs",
}


def main(args: list[str]) -> None:
    options = parse_key_values(args, USAGE, OPTIONS, __doc__)
    unknown = [k for k in options if k not in OPTIONS and not k.startswith(("tracking.", "paths."))]
    if unknown:
        raise ConfigError(f"unknown option {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    chromium = screenshots.find_chromium()
    if chromium is None:
        raise ConfigError(
            "no Chromium found (looked for "
            + ", ".join(screenshots.CHROMIUM_NAMES)
            + "); install it: apt-get install -y chromium"
        )
    cfg = compose_config([f"{k}={v}" for k, v in options.items() if k.startswith(("tracking.", "paths."))])
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        raise ConfigError("tracking.uri names a server: open it in a browser; this command shows a local store")
    client = MlflowClient(uri)
    parent, _ = compare.select_runs(
        client, options.get("experiment", cfg.tracking.experiment), options.get("sweep", "latest"), {}
    )
    out_dir = Path(options.get("out", PROJECT_ROOT / "docs"))
    port = int(options.get("port", screenshots.free_port()))
    with screenshots.mlflow_ui(uri, port, Path(cfg.paths.outputs) / "mlflow_ui.log") as base:
        print(f"mlflow ui on {base} for {redact(uri)}")
        shots = screenshots.capture(screenshots.sweep_pages(client, base, parent.info.run_id, out_dir), chromium)
    for page in shots.pages:
        print(f"{page.name}: {page.png}")
    listed = screenshots.children_listed(shots)
    print(f"the sweep run's page lists {len(listed)} of its {len(shots.children)} child runs: {', '.join(listed)}")
    if len(listed) != len(shots.children):
        raise UserError(
            f"the sweep run's page does not list child run(s) "
            f"{', '.join(sorted(set(shots.children) - set(listed)))}; see {shots.pages[0].png}"
        )


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
