"""Export a training run's model for ONNX Runtime: scoring on a CPU without torch's overhead.

    python experiments/export.py run=<mlflow run id>                          # format=onnx quantize=int8
    python experiments/export.py run=<id> format=onnx quantize=none           # fp32 only
    python experiments/export.py run=<id> out=titles_onnx/                    # also keep a local copy

Logged to the run beside its PyTorch ``model/`` folder, as ``onnx/``: model.onnx (fp32), model.int8.onnx
(quantize=int8: dynamic int8 weights), the tokenizer and titlesweep_onnx.json (source run, quantization,
SHA-256 of each file, the stored decision threshold and max_length). The run also gets a newer
``pyfunc_model`` that carries the export and scores with ONNX Runtime where onnxruntime is installed
(runs:/<id>/pyfunc_model and compare.py register=true take the newest). Then:

    python experiments/predict.py run=<id> input=titles.txt backend=onnx      # int8 when exported
    python experiments/evaluate.py run=<id> input=testSet-1000.xlsx backend=onnx onnx_quantize=none

Needs the onnx extra: pip install -e '.[onnx]'.
"""

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from lib import inference, onnx_export  # noqa: E402
from lib.cli import compose_config, parse_key_values, split_options  # noqa: E402
from lib.errors import ConfigError, exit_on_user_error  # noqa: E402
from lib.progress import quiet_library_bars  # noqa: E402
from lib.pyfunc import ONNX_ARTIFACT, PYFUNC_ARTIFACT, log_pyfunc_model  # noqa: E402
from lib.tracking import tracking_uri  # noqa: E402

USAGE = "export.py run=RUN_ID [format=onnx] [quantize=int8|none] [out=DIR] [tracking.*=... paths.*=...]"
OPTIONS = {
    "run": "MLflow run id of a training run with a logged model (required)",
    "format": "onnx (default; the only format)",
    "quantize": "int8 (default: model.onnx and model.int8.onnx) | none (model.onnx only)",
    "out": "also copy the export folder here (e.g. for predict.py model_dir=DIR backend=onnx)",
    "tracking.*, paths.*": "config overrides, e.g. tracking.uri=http://127.0.0.1:5000",
}
EXPORT_TAG = "onnx_export"  # on the run: the quantization of its latest export


def main(args: list[str]) -> None:
    options, overrides = split_options(parse_key_values(args, USAGE, OPTIONS, __doc__), OPTIONS)
    run_id = options.get("run")
    if not run_id:
        raise ConfigError(f"run=RUN_ID is required; usage: {USAGE}")
    fmt, quantize = options.get("format", "onnx"), options.get("quantize", "int8")
    if fmt not in onnx_export.FORMATS:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(onnx_export.FORMATS)}")
    if quantize not in onnx_export.QUANTIZE:
        raise ConfigError(f"quantize={quantize}: choose one of {', '.join(onnx_export.QUANTIZE)}")
    out = Path(options["out"]) if options.get("out") else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise ConfigError(f"out={out}: exists and is not empty; name a new folder")
    onnx_export.require_packages()
    quiet_library_bars()
    mlflow.set_tracking_uri(tracking_uri(compose_config(overrides)))
    with tempfile.TemporaryDirectory(prefix="titlesweep-export-") as tmp:
        model_folder = inference.download_run_model(run_id, Path(tmp))
        folder = Path(tmp) / ONNX_ARTIFACT
        record = onnx_export.export_onnx(model_folder, folder, run_id, quantize)
        info = log_pyfunc_model(
            model_folder, onnx_folder=folder, run_id=run_id, tags={"titlesweep.onnx_quantize": quantize}
        )
        client = MlflowClient()
        client.log_artifacts(run_id, str(folder), ONNX_ARTIFACT)
        client.set_tag(run_id, EXPORT_TAG, quantize)
        if out is not None:
            shutil.copytree(folder, out, dirs_exist_ok=True)
    gaps = record["check"]["max_abs_probability_difference"]
    print(
        f"run {run_id}: logged {ONNX_ARTIFACT}/ ({', '.join(record['files'])}, tokenizer, titlesweep_onnx.json) "
        f"and a newer {PYFUNC_ARTIFACT} ({info.model_id}) that scores with ONNX Runtime"
    )
    print(
        "  largest probability difference from torch on the check titles: "
        + ", ".join(f"{'int8' if q == 'int8' else 'fp32'} {gap:.1e}" for q, gap in gaps.items())
    )
    if out is not None:
        print(f"  copied to {out}")
    print(f"  python experiments/predict.py run={run_id} input=titles.txt backend=onnx")


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
