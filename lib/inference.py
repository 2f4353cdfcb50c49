"""Use a trained model: load it and score titles (read from a file or given as a list).

A model is the Hugging Face folder that training logs (weights, tokenizer and ``titlesweep.json``
with the decision threshold chosen on validation and the training ``max_length``), found by:

    run=<run id>             the run's ``model/`` artifacts
    model=<name>[@alias]     a registered model (``name/3`` for a version, ``name`` for its latest
                             version) or any MLflow model URI (``models:/...``, ``runs:/<id>/pyfunc_model``):
                             a pyfunc model of lib/pyfunc.py, whose artifacts hold that folder
    model_dir=<folder>       a local copy of that folder

``backend="onnx"`` scores with ONNX Runtime instead of torch, from the model's ONNX export
(experiments/export.py, lib/onnx_export.py): the run's ``onnx/`` artifacts, the ``onnx`` artifact of
a pyfunc model that export logged, or for model_dir an export folder (or one in its ``onnx/``).
An export made from another run, or a file that no longer matches its recorded SHA-256, is refused.

MLflow is read through the current tracking URI (the entry points set it from ``tracking.uri``).
Empty titles are never scored: they keep their row with probability NaN and label 0.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lib.batching import encode, make_loader
from lib.data import CITESEER_TEXT, read_lines, read_table
from lib.device import autocast, resolve_device, resolve_precision
from lib.errors import ConfigError, DataError, UserError
from lib.progress import progress, quiet_library_bars
from lib.pyfunc import (
    HF_ARTIFACT,
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    ONNX_EXTRA,
    ONNX_FILES,
    ONNX_MANIFEST,
    OnnxExportError,
    OnnxScorer,
    TextVectors,
    attach_pooling,
    check_onnx_file,
    check_onnx_weights,
    choose_onnx_file,
    onnxruntime_available,
    positive_probability,
    read_onnx_manifest,
    read_settings,
)
from lib.tracking import redact

TITLE_COLUMNS = ("title", "text", CITESEER_TEXT)  # tried in this order when no text_column is given
TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xls", ".jsonl")
DEFAULT_BATCH_SIZE = 128
BACKENDS = ("torch", "onnx")
ONNX_QUANTIZE = ("auto", "int8", "none")  # auto: the int8 file where the export made one, else fp32


# --------------------------------------------------------------- loading


@dataclass
class Predictor:
    """A loaded classifier: ``predict_titles`` gives P(correct title) per text."""

    model: torch.nn.Module
    tokenizer: object
    threshold: float  # stored with the model; label 1 when probability >= threshold
    max_length: int
    source: str  # how it was named on the command line, for messages and tags
    run_id: str | None  # the training run, when known
    device: torch.device
    # fp32 by default: the stored threshold was chosen on fp32 validation probabilities, so labels mean
    # the same on every machine; bf16 (precision=bf16 / auto) is faster where the hardware computes it.
    precision: str = "fp32"
    backend: str = "torch"

    def predict_titles(self, texts, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> np.ndarray:
        """P(correct title) of every text, in input order; NaN for empty texts."""
        return self.score(texts, batch_size, progress)[0]

    @torch.inference_mode()
    def score(
        self,
        texts,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
        embeddings: bool = False,
        pooled_as: str = "mean",
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, with ``embeddings``, a vector of each text (NaN rows for empty texts): the
        last hidden state's mean over the real tokens (``pooled_as="mean"``) or what the model's head
        reads (``"head"``), or every layer's mean (``"layers"``: [texts, layers, width]):
        lib/pyfunc.TextVectors. Batches are sorted by length, so little of each is padding."""
        clean = [str(text).strip() for text in texts]
        keep = [i for i, text in enumerate(clean) if text]
        probs = np.full(len(clean), np.nan)
        config = self.model.config
        shape = (config.hidden_size,) if pooled_as != "layers" else (config.num_hidden_layers, config.hidden_size)
        vectors = np.full((len(clean), *shape), np.nan, dtype=np.float32) if embeddings else None
        if not keep:
            return probs, vectors
        ids = encode(self.tokenizer, [clean[i] for i in keep], self.max_length)
        loader = make_loader(ids, [0] * len(keep), batch_size, shuffle=False, pad_id=self.tokenizer.pad_token_id)
        logits = torch.zeros((len(keep), 2))
        pooled = torch.zeros((len(keep), *shape)) if embeddings else None
        self.model.eval()
        with _progress(progress) as bars, TextVectors(self.model, pooled_as) if embeddings else nullcontext() as text:
            task = bars.add_task("predict", total=len(loader))
            for batch in loader:
                mask = batch["attention_mask"].to(self.device)
                with autocast(self.device, self.precision):
                    out = self.model(
                        input_ids=batch["input_ids"].to(self.device),
                        attention_mask=mask,
                        output_hidden_states=embeddings and text.hidden_states,
                    )
                logits[batch["index"]] = out.logits.float().cpu()
                if embeddings:
                    pooled[batch["index"]] = text.of(out, mask).float().cpu()
                bars.advance(task)
        probs[keep] = torch.softmax(logits, dim=-1)[:, 1].numpy()
        if embeddings:
            vectors[keep] = pooled.numpy()
        return probs, vectors


def _progress(enabled: bool):
    return progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


@dataclass
class OnnxPredictor:
    """A model's ONNX export on ONNX Runtime (CPU), used as a Predictor: ``predict_titles`` and ``score``."""

    scorer: OnnxScorer
    tokenizer: object
    threshold: float  # copied from the model's titlesweep.json by the export
    max_length: int
    source: str
    run_id: str | None
    file: str  # model.onnx or model.int8.onnx
    precision: str  # "fp32" or "int8": what evaluate.py logs as eval.precision
    backend: str = "onnx"

    def predict_titles(self, texts, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> np.ndarray:
        """P(correct title) of every text, in input order; NaN for empty texts."""
        return self.score(texts, batch_size, progress)[0]

    def score(
        self, texts, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False, embeddings: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """As Predictor.score: probabilities and, with ``embeddings``, the mean-pooled last hidden states."""
        clean = [str(text).strip() for text in texts]
        keep = [i for i, text in enumerate(clean) if text]
        probs = np.full(len(clean), np.nan)
        vectors = None
        if keep:
            ids = encode(self.tokenizer, [clean[i] for i in keep], self.max_length)
            with _progress(progress) as bars:
                task = bars.add_task("predict", total=-(-len(keep) // batch_size))
                logits, pooled = self.scorer.run(
                    ids, self.tokenizer.pad_token_id or 0, batch_size, embeddings, lambda: bars.advance(task)
                )
            probs[keep] = positive_probability(logits)
            if embeddings:
                vectors = np.full((len(clean), pooled.shape[1]), np.nan)
                vectors[keep] = pooled
        elif embeddings:
            vectors = np.full((len(clean), 1), np.nan)
        return probs, vectors


def labels_at(probs: np.ndarray, threshold: float) -> np.ndarray:
    """1 where probability >= threshold; 0 elsewhere, unscored (NaN) rows included."""
    return np.where(np.isnan(probs), 0, probs >= threshold).astype(int)


def load_predictor(
    *,
    run: str | None = None,
    model: str | None = None,
    model_dir: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    backend: str = "torch",
    onnx_quantize: str = "auto",
) -> Predictor | OnnxPredictor:
    """Exactly one of ``run``, ``model``, ``model_dir`` (see the module docstring); ``precision`` as
    trainer.precision (fp32, bf16, fp16 on CUDA, or auto). ``backend`` torch or onnx (the model's ONNX
    export on ONNX Runtime; ``onnx_quantize`` auto, int8 or none chooses its file)."""
    quiet_library_bars()
    given = {k: v for k, v in {"run": run, "model": model, "model_dir": model_dir}.items() if v}
    if len(given) != 1:
        raise ConfigError(
            "name the model with exactly one of run=RUN_ID, model=NAME[@ALIAS] or model_dir=FOLDER"
            + (f" (got {', '.join(given)})" if given else "")
        )
    ((kind, value),) = given.items()
    if _check_backend(backend, onnx_quantize, device, precision) == "onnx":
        return _load_onnx(kind, value, onnx_quantize)
    if kind == "model_dir":
        return _from_folder(Path(value), f"model_dir={value}", None, device, precision)
    # Downloads only live until the weights are in memory.
    with tempfile.TemporaryDirectory(prefix="titlesweep-model-", ignore_cleanup_errors=True) as tmp:
        if kind == "run":
            return _from_folder(download_run_model(value, Path(tmp)), f"run={value}", value, device, precision)
        folder, run_id = _download_pyfunc_model(value, Path(tmp))
        return _from_folder(folder, f"model={value}", run_id, device, precision)


def _check_backend(backend: str, quantize: str, device: str, precision: str) -> str:
    """The backend options, checked before anything is downloaded."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend}: choose one of {', '.join(BACKENDS)}")
    if quantize not in ONNX_QUANTIZE:
        raise ConfigError(f"onnx_quantize={quantize}: choose one of {', '.join(ONNX_QUANTIZE)}")
    if backend == "torch":
        if quantize != "auto":
            raise ConfigError(f"onnx_quantize={quantize}: only used with backend=onnx")
        return backend
    if not onnxruntime_available():
        raise ConfigError(f"backend=onnx needs onnxruntime: {ONNX_EXTRA}")
    if precision != "fp32":
        raise ConfigError(
            f"precision={precision}: backend=onnx scores the exported fp32 or int8 file (onnx_quantize=none|int8); "
            "precision is for backend=torch"
        )
    if device not in ("auto", "cpu"):
        raise ConfigError(f"device={device}: backend=onnx runs on the CPU (onnxruntime); use device=cpu or auto")
    return backend


def _export_hint(run_id: str) -> str:
    return f"python experiments/export.py run={run_id} format=onnx quantize=int8"


def _load_onnx(kind: str, value: str, quantize: str) -> OnnxPredictor:
    """The ONNX export of the model named by ``kind=value`` (run, model or model_dir), checked."""
    with tempfile.TemporaryDirectory(prefix="titlesweep-onnx-", ignore_cleanup_errors=True) as tmp:
        if kind == "run":
            folder, run_id, weights = download_run_onnx(value, Path(tmp)), value, None
        elif kind == "model":
            model_folder, run_id, folder = _download_pyfunc_model(value, Path(tmp), onnx=True)
            weights = (model_folder, f"the {HF_ARTIFACT} of model={value}")
        else:
            folder, run_id, weights = _onnx_folder(Path(value)), None, None
            if folder != Path(value) and (Path(value) / "config.json").is_file():
                weights = (Path(value), f"the model in model_dir={value}")
        source = f"{kind}={value}"
        try:
            manifest = read_onnx_manifest(folder)
            if run_id is not None and manifest["source_run_id"] != run_id:
                raise OnnxExportError(
                    f"{source}: its ONNX export was made from run {manifest['source_run_id']}, not from run "
                    f"{run_id}; export this run's model: {_export_hint(run_id)}"
                )
            if weights is not None:
                check_onnx_weights(manifest, *weights)
            name = choose_onnx_file(manifest, quantize)
            scorer = OnnxScorer(check_onnx_file(folder, manifest, name))
        except OnnxExportError as err:
            raise UserError(str(err) if str(err).startswith(source) else f"{source}: {err}") from None
        from transformers import AutoTokenizer

        return OnnxPredictor(
            scorer=scorer,
            tokenizer=AutoTokenizer.from_pretrained(folder),
            threshold=float(manifest["decision_threshold"]),
            max_length=int(manifest["max_length"]),
            source=source,
            run_id=run_id,
            file=name,
            precision="int8" if name == ONNX_FILES["int8"] else "fp32",
        )


def artifact_names(run_id: str, folder: str) -> set[str]:
    """The file names a run logged under ``folder``; a one-line error when there is no such run."""
    client = MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UserError(f"run={run_id}: no such run in {redact(mlflow.get_tracking_uri())}") from None
    return {Path(item.path).name for item in client.list_artifacts(run_id, folder)}


def download_run_onnx(run_id: str, dst: Path) -> Path:
    if ONNX_MANIFEST not in artifact_names(run_id, ONNX_ARTIFACT):
        raise UserError(f"run {run_id} has no ONNX export: {_export_hint(run_id)}")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ONNX_ARTIFACT, dst_path=str(dst)))


def _onnx_folder(folder: Path) -> Path:
    """model_dir with backend=onnx: an export folder, or a model folder with the export in ``onnx/``."""
    for candidate in (folder, folder / ONNX_ARTIFACT):
        if (candidate / ONNX_MANIFEST).is_file():
            return candidate
    raise UserError(
        f"model_dir={folder}: no ONNX export in it (no {ONNX_MANIFEST} there or in {ONNX_ARTIFACT}/): "
        f"python experiments/export.py run=<run id> format=onnx quantize=int8 out={folder}"
    )


def download_run_model(run_id: str, dst: Path) -> Path:
    """The HF model folder a training run logged as ``model/``, downloaded into ``dst``."""
    if "config.json" not in artifact_names(run_id, MODEL_ARTIFACT):
        raise UserError(
            f"run={run_id}: the run has no logged model (no '{MODEL_ARTIFACT}/' artifacts; "
            "was it trained with tracking.log_model=false, or did it fail?)"
        )
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_ARTIFACT, dst_path=str(dst)))


def model_uri(reference: str) -> str:
    """``name`` -> models:/name/latest, ``name@alias`` / ``name/3`` -> models:/..., URIs unchanged."""
    if ":/" in reference:
        return reference
    return f"models:/{reference}" if "@" in reference or "/" in reference else f"models:/{reference}/latest"


def _download_pyfunc_model(reference: str, dst: Path, onnx: bool = False):
    """The HF folder inside a pyfunc model of lib/pyfunc.py, and the run that logged it; with ``onnx``,
    also the ONNX export folder it carries (refused when it carries none)."""
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri(reference), dst_path=str(dst)))
    except (MlflowException, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        store = redact(mlflow.get_tracking_uri())
        raise UserError(f"model={reference}: cannot load it from {store} ({first_line})") from None
    try:
        meta = mlflow.models.Model.load(str(local))
        relative = meta.flavors["python_function"]["artifacts"][HF_ARTIFACT]["path"]
    except (MlflowException, OSError, KeyError, TypeError):
        raise UserError(f"model={reference}: not a TitleSweep pyfunc model (no '{HF_ARTIFACT}' artifact)") from None
    if not onnx:
        return local / relative, meta.run_id
    onnx_artifact = meta.flavors["python_function"]["artifacts"].get(ONNX_ARTIFACT)
    if not onnx_artifact:
        raise UserError(
            f"model={reference}: run {meta.run_id} has no ONNX export in this model: {_export_hint(meta.run_id)}, "
            "then register the run again (compare.py register=true)"
        )
    return local / relative, meta.run_id, local / onnx_artifact["path"]


def _from_folder(folder: Path, source: str, run_id: str | None, device: str, precision: str) -> Predictor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise UserError(f"{source}: not a Hugging Face model folder (no config.json in {folder})")
    threshold, max_length = read_settings(folder)
    try:
        torch_device = resolve_device(device)
    except ConfigError:  # its message names trainer.device; here the option is device=
        raise ConfigError(f"device={device}: no CUDA GPU is visible; use device=cpu or device=auto") from None
    try:
        chosen = resolve_precision(precision, torch_device)
    except ConfigError as err:  # its message names trainer.precision; here the option is precision=
        raise ConfigError(str(err).replace("trainer.precision", "precision")) from None
    model = attach_pooling(AutoModelForSequenceClassification.from_pretrained(folder)).to(torch_device).eval()
    return Predictor(
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(folder),
        threshold=threshold,
        max_length=max_length,
        source=source,
        run_id=run_id,
        device=torch_device,
        precision=chosen,
    )


# --------------------------------------------------------------- files in and out


def read_titles(path: Path, text_column: str | None = None) -> list[str]:
    """Every row's title, in file order: .txt one per line (blank lines kept), tables by column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_lines(path)
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"{path}: cannot read '{suffix or 'no suffix'}' files; use .txt (one title per line), .csv, .tsv or .xlsx"
        )
    table = read_table(path)
    return table[_title_column(table, path, text_column)].astype(str).tolist()


def _title_column(table: pd.DataFrame, path: Path, text_column: str | None) -> str:
    if text_column:
        if text_column in table.columns:
            return text_column
        raise DataError(f"{path}: no column '{text_column}' (columns: {', '.join(map(str, table.columns))})")
    for name in TITLE_COLUMNS:
        if name in table.columns:
            return name
    raise DataError(
        f"{path}: no 'title' or 'text' column (columns: {', '.join(map(str, table.columns))}); "
        "name the column with text_column=NAME"
    )


def default_output(input_path: Path) -> Path:
    return Path(input_path).with_name(f"{Path(input_path).stem}.predictions.csv")


def check_output(input_path: Path, output: Path) -> Path:
    """Refuse to overwrite the input; checked before any model is loaded."""
    if output.resolve() == Path(input_path).resolve():
        raise ConfigError(f"output={output}: is the input file; choose another output")
    if output.suffix.lower() != ".csv":
        raise ConfigError(f"output={output}: predictions are written as CSV; give a .csv file")
    return output


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write to a temporary file beside ``path``, then rename: readers never see half a CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def predictions_frame(titles: list[str], probs: np.ndarray, threshold: float) -> pd.DataFrame:
    return pd.DataFrame({"title": titles, "probability": probs, "label": labels_at(probs, threshold)})
