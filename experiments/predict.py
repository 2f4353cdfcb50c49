"""Score titles with a trained model: a CSV of title, probability (of being a correct title), label.

    python experiments/predict.py run=<mlflow run id> input=titles.txt
    python experiments/predict.py model=titlesweep-best@champion input=batch.csv output=scored.csv
    python experiments/predict.py model_dir=outputs/runs/.../model input=test.xlsx text_column=title threshold=0.7

Input: .txt (one title per line), .csv / .tsv / .xlsx with a `title` (else `text`) column or
text_column=NAME. Every input row is written, in input order; empty titles get no probability and
label 0. The threshold defaults to the one stored with the model. Default output: <input>.predictions.csv.
backend=onnx scores with ONNX Runtime from the model's ONNX export (python experiments/export.py run=<id>),
by default its int8 file where it has one (onnx_quantize=none: the fp32 file).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow  # noqa: E402

from lib import inference  # noqa: E402
from lib.cli import compose_config, parse_batch_size, parse_key_values, parse_threshold, split_options  # noqa: E402
from lib.errors import ConfigError, exit_on_user_error  # noqa: E402
from lib.tracking import tracking_uri  # noqa: E402

USAGE = (
    "predict.py (run=RUN_ID | model=NAME[@ALIAS] | model_dir=DIR) input=FILE [output=CSV] [threshold=P] "
    "[text_column=NAME] [batch_size=N] [device=auto|cpu|cuda] [precision=fp32|bf16|auto] [backend=torch|onnx "
    "[onnx_quantize=auto|int8|none]] [tracking.*=... paths.*=...]"
)
OPTIONS = {
    "run": "MLflow run id of a training run: its logged model",
    "model": "registered model, NAME or NAME@ALIAS (e.g. titlesweep-best@champion)",
    "model_dir": "a model folder saved by a run (outputs/runs/<date>/<time>/model)",
    "input": "titles to score: .txt (one per line), .csv / .tsv / .xlsx (required)",
    "output": "CSV to write (default: <input>.predictions.csv)",
    "threshold": "decision threshold in [0, 1] (default: the one stored with the model)",
    "text_column": "column holding the titles (default: title, else text)",
    "batch_size": f"titles per forward pass (default {inference.DEFAULT_BATCH_SIZE})",
    "device": "auto | cpu | cuda | cuda:N (default auto)",
    "precision": "fp32 (default, as the stored threshold was chosen) | bf16 | auto (bf16 where it is native)",
    "backend": "torch (default) | onnx: ONNX Runtime on the CPU, from the run's export (experiments/export.py)",
    "onnx_quantize": "with backend=onnx: auto (default: int8 where the export made it, else fp32) | int8 | none",
    "tracking.*, paths.*": "config overrides, e.g. tracking.uri=http://127.0.0.1:5000",
}


def main(args: list[str]) -> None:
    options, overrides = split_options(parse_key_values(args, USAGE, OPTIONS, __doc__), OPTIONS)
    if "input" not in options:
        raise ConfigError(f"input=FILE is required; usage: {USAGE}")
    source = Path(options["input"])
    output = inference.check_output(source, Path(options.get("output") or inference.default_output(source)))
    threshold = parse_threshold(options.get("threshold"))
    batch_size = parse_batch_size(options.get("batch_size"), inference.DEFAULT_BATCH_SIZE)
    titles = inference.read_titles(source, options.get("text_column"))  # bad input fails before loading a model
    mlflow.set_tracking_uri(tracking_uri(compose_config(overrides)))
    predictor = inference.load_predictor(
        run=options.get("run"),
        model=options.get("model"),
        model_dir=options.get("model_dir"),
        device=options.get("device", "auto"),
        precision=options.get("precision", "fp32"),
        backend=options.get("backend", "torch"),
        onnx_quantize=options.get("onnx_quantize", "auto"),
    )
    threshold = predictor.threshold if threshold is None else threshold
    probs = predictor.predict_titles(titles, batch_size, progress=True)
    frame = inference.predictions_frame(titles, probs, threshold)
    inference.write_csv_atomic(frame, output)
    empty = int(frame["probability"].isna().sum())
    print(
        f"wrote {output}: {len(frame)} rows, {int(frame['label'].sum())} predicted correct at threshold "
        f"{threshold:.4f}"
        + (f" (ONNX Runtime, {predictor.file})" if predictor.backend == "onnx" else "")
        + (f"; {empty} empty titles left unscored (label 0)" if empty else "")
    )


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
