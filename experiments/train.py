"""Train and evaluate one recipe, tracked in MLflow.

python experiments/train.py model=scibert loss=focal adversarial=fgm schedule=cosine
python experiments/train.py --multirun model=bert,scibert,roberta,deberta
"""

import os
import sys
from pathlib import Path

# Run from a clone without installing; PYTHONPATH too, for launchers whose jobs are new processes.
ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))

import hydra  # noqa: E402

from lib.cli import preflight  # noqa: E402
from lib.errors import exit_on_user_error  # noqa: E402
from lib.paths import CONF_DIR, PROJECT_ROOT  # noqa: E402  (importing lib.paths registers ${project_root:})
from lib.run import run_job  # noqa: E402
from lib.tracking import credentials_to_environment, redact_log_records  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> float:
    return run_job(cfg)


if __name__ == "__main__":
    # A password in tracking.uri moves into MLflow's own variables before Hydra sees (and writes) it.
    sys.argv[1:] = credentials_to_environment(sys.argv[1:])
    redact_log_records()
    with exit_on_user_error():
        preflight(sys.argv[1:], CONF_DIR, PROJECT_ROOT / "outputs")
    main()
