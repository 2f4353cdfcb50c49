"""Evaluate a logged model on labelled data, as a new MLflow run beside its training run.

    python experiments/evaluate.py run=<id> input=testSet-1000.xlsx        # every row of one labelled file
    python experiments/evaluate.py run=<id> data=citeseer data.dir=/path/to/citeseer
    python experiments/evaluate.py model=titlesweep-best@champion data=csv data.train=all.csv [data.test=test.csv]

Labelled data, one of:
  input=FILE  every row of the file: CiteSeer test format (`title given by manchine`, `Y/N`) or
              `text` / `label` columns; with a `kind` column too (what each row is: title,
              affiliation, email, ...) accuracy per kind is printed and logged (per_kind.csv,
              kind_<kind>_accuracy, other_accuracy, balanced_accuracy).
  data=...    the test split exactly as train.py builds it from the same options: data=citeseer's
              test file; data=csv's data.test when given, else the seeded data.test_fraction that
              training carved out of data.train (same file and data.seed: the same rows). The
              options are compared with the training run's logged data.* params first: any that
              differs (another data.seed, size, split fraction or file) is refused in one line
              naming it, as its test split may hold rows the model trained on;
              allow_data_mismatch=true scores it anyway, tagged allow_data_mismatch and data_mismatch.
The run, named eval-<training run name> and tagged source_run_id, goes in the training run's
experiment; it holds metrics at the stored threshold and at 0.5 (`f1`, `f1_at_0.5`, ...), the
best recall any cut-off gives while 95/97/99% of label-0 rows stay below it
(`recall_at_specificity_0.97`, ...: how well the rows are ranked, read off the rows themselves),
the classification report, confusion matrix, precision-recall curve, an embedding map,
predictions.csv and errors.csv.
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow  # noqa: E402

from lib import evaluation, inference  # noqa: E402
from lib.cli import compose_config, parse_batch_size, parse_key_values, split_options  # noqa: E402
from lib.errors import ConfigError, exit_on_user_error  # noqa: E402
from lib.inference import DEFAULT_BATCH_SIZE  # noqa: E402
from lib.metrics import SPECIFICITY_FLOORS, THRESHOLD_METRICS  # noqa: E402
from lib.registry import FLAGS  # noqa: E402
from lib.tracking import tracking_uri  # noqa: E402

USAGE = (
    "evaluate.py (run=RUN_ID | model=NAME[@ALIAS]) (input=LABELLED_FILE | data=csv data.train=FILE "
    "[data.test=FILE] | data=citeseer data.dir=DIR) [allow_data_mismatch=true] [batch_size=N] [device=auto|cpu|cuda] "
    "[precision=fp32|bf16|auto] [backend=torch|onnx [onnx_quantize=auto|int8|none]] [tracking.*=... paths.*=...]"
)
OPTIONS = {
    "run": "MLflow run id of a training run: its logged model",
    "model": "registered model, NAME or NAME@ALIAS",
    "input": "a labelled file (CiteSeer test format, or text / label columns)",
    "data=..., data.*": "instead of input: the test split as train.py builds it from these options",
    "batch_size": f"titles per forward pass (default {DEFAULT_BATCH_SIZE})",
    "device": "auto | cpu | cuda | cuda:N (default auto)",
    "precision": "fp32 (default, as the stored threshold was chosen) | bf16 | auto (bf16 where it is native)",
    "allow_data_mismatch": "true: score data=... options that differ from the training run's (default false; "
    "recorded as a tag)",
    "backend": "torch (default) | onnx: ONNX Runtime on the CPU, from the run's export (experiments/export.py)",
    "onnx_quantize": "with backend=onnx: auto (default: int8 where the export made it, else fp32) | int8 | none",
    "tracking.*, paths.*": "config overrides, e.g. tracking.uri=http://127.0.0.1:5000",
}
CONFIG_PREFIXES = ("tracking.", "paths.", "data")  # "data" covers data= and data.*


def main(args: list[str]) -> None:
    options, overrides = split_options(parse_key_values(args, USAGE, OPTIONS, __doc__), OPTIONS, CONFIG_PREFIXES)
    data_options = [o for o in overrides if o.startswith("data")]
    if ("input" in options) == bool(data_options):
        raise ConfigError(
            f"give the labelled data as input=FILE or as data=... options, not both or neither; usage: {USAGE}"
        )
    if data_options and not any(o.startswith("data=") for o in data_options):
        raise ConfigError("data.* options need data=csv or data=citeseer (or data=titles) to say which reader")
    batch_size = parse_batch_size(options.get("batch_size"), DEFAULT_BATCH_SIZE)
    allow_mismatch = _flag(options, evaluation.ALLOW_MISMATCH)
    if allow_mismatch and "input" in options:
        raise ConfigError(f"{evaluation.ALLOW_MISMATCH}: only used with data=... (input=FILE is scored as given)")
    cfg = compose_config([*overrides, "extra_eval=null"])
    if "input" in options:
        frame, stats = evaluation.labelled_file(Path(options["input"]))
        data_name = options["input"]
    else:
        evaluation.require_data_options(cfg)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    predictor = inference.load_predictor(
        run=options.get("run"),
        model=options.get("model"),
        device=options.get("device", "auto"),
        precision=options.get("precision", "fp32"),
        backend=options.get("backend", "torch"),
        onnx_quantize=options.get("onnx_quantize", "auto"),
    )
    tags = {"backend": predictor.backend, **({"onnx_file": predictor.file} if predictor.backend == "onnx" else {})}
    if "input" not in options:
        # Before the split is built: other options would build another split, perhaps of training rows.
        tags.update(evaluation.check_training_data(cfg, predictor, allow_mismatch))
        frame, stats = evaluation.config_test_split(cfg)
        data_name = f"data={cfg.data.name} test split ({' '.join(data_options)})"
    run_id, metrics, per_kind = evaluation.evaluate_in_mlflow(
        predictor, frame, data_name, stats, batch_size, progress=True, tags=tags
    )
    print(f"evaluation run {run_id} ({len(frame)} rows, source run {predictor.run_id})")
    for name in THRESHOLD_METRICS:
        print(
            f"  {name:<10} {metrics[name]:.4f} at threshold {predictor.threshold:.4f}   "
            f"{metrics[f'{name}_at_0.5']:.4f} at 0.5"
        )
    print(f"  roc_auc    {metrics['roc_auc']:.4f}   average_precision {metrics['average_precision']:.4f}")
    recalls = [metrics[f"recall_at_specificity_{floor}"] for floor in SPECIFICITY_FLOORS]
    if not any(map(math.isnan, recalls)):  # both labels present
        floors = " / ".join(map(str, SPECIFICITY_FLOORS))
        print(
            f"  best recall with label-0 accuracy >= {floors}: {' / '.join(f'{r:.4f}' for r in recalls)} "
            "(any cut-off, read off these rows: how well they are ranked, not a threshold to use)"
        )
    if per_kind is not None:  # the file has a kind column (e.g. a GROBID header sample: what each segment is)
        if "balanced_accuracy" in metrics:
            balanced, other = metrics["balanced_accuracy"], metrics["other_accuracy"]
            print(f"  balanced_accuracy {balanced:.4f}   other_accuracy (label 0) {other:.4f}")
        print(f"accuracy per kind at threshold {predictor.threshold:.4f} (per_kind.csv):")
        print(evaluation.format_kind_report(per_kind))


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.get(name, "false").strip().lower()
    if value not in FLAGS:
        raise ConfigError(f"{name}={options[name]}: choose true or false")
    return FLAGS[value]


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
