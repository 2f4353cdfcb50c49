"""Use a trained model: load it, score titles from a file, evaluate it on labelled data in MLflow.

A model is the Hugging Face folder that training logs (weights, tokenizer and ``titlesweep.json``
with the decision threshold chosen on validation and the training ``max_length``), found by:

    run=<run id>             the run's ``model/`` artifacts
    model=<name>[@alias]     a registered model (``name/3`` for a version, ``name`` for its latest
                             version) or any MLflow model URI (``models:/...``, ``runs:/<id>/pyfunc_model``):
                             a pyfunc model of lib/pyfunc.py, whose artifacts hold that folder
    model_dir=<folder>       a local copy of that folder

MLflow is read through the current tracking URI (the entry points set it from ``tracking.uri``).
Empty titles are never scored: they keep their row with probability NaN and label 0.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lib import plots  # before pyplot: selects matplotlib's Agg backend
from lib.batching import encode, make_loader
from lib.data import CITESEER_LABEL, CITESEER_TEXT, drop_empty, eval_table, load_data, read_lines, read_table
from lib.errors import ConfigError, DataError, UserError
from lib.loop import autocast, resolve_device, resolve_precision
from lib.metrics import class_report, compute_metrics, confusion
from lib.pyfunc import DEFAULT_MAX_LENGTH, HF_ARTIFACT, SETTINGS_FILE
from lib.sweep import ROLE_TAG
from lib.tracking import redact

import matplotlib.pyplot as plt  # noqa: E402  (after lib.plots chose the backend)

MODEL_ARTIFACT = "model"                 # where lib/run.py logs the HF folder in a training run
TITLE_COLUMNS = ("title", "text", CITESEER_TEXT)  # tried in this order when no text_column is given
TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xls", ".jsonl")
DEFAULT_BATCH_SIZE = 128
THRESHOLD_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1")  # also logged as <name>_at_0.5
TSNE_MIN_POINTS = 50  # t-SNE needs a neighbourhood to work with; below this the map is a PCA


# --------------------------------------------------------------- loading


@dataclass
class Predictor:
    """A loaded classifier: ``predict_titles`` gives P(correct title) per text."""
    model: torch.nn.Module
    tokenizer: object
    threshold: float      # stored with the model; label 1 when probability >= threshold
    max_length: int
    source: str           # how it was named on the command line, for messages and tags
    run_id: str | None    # the training run, when known
    device: torch.device

    def predict_titles(self, texts, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> np.ndarray:
        """P(correct title) of every text, in input order; NaN for empty texts."""
        return self.score(texts, batch_size, progress)[0]

    @torch.inference_mode()
    def score(self, texts, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False,
              embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, with ``embeddings``, the mean-pooled last hidden state of each text
        (NaN rows for empty texts). Batches are sorted by length, so little of each is padding."""
        clean = [str(text).strip() for text in texts]
        keep = [i for i, text in enumerate(clean) if text]
        probs = np.full(len(clean), np.nan)
        vectors = np.full((len(clean), self.model.config.hidden_size), np.nan) if embeddings else None
        if not keep:
            return probs, vectors
        ids = encode(self.tokenizer, [clean[i] for i in keep], self.max_length)
        loader = make_loader(ids, [0] * len(keep), batch_size, shuffle=False, pad_id=self.tokenizer.pad_token_id)
        precision = resolve_precision("auto", self.device)
        logits = torch.zeros((len(keep), 2))
        pooled = torch.zeros((len(keep), self.model.config.hidden_size)) if embeddings else None
        self.model.eval()
        with _progress(progress) as bars:
            task = bars.add_task("predict", total=len(loader))
            for batch in loader:
                mask = batch["attention_mask"].to(self.device)
                with autocast(self.device, precision):
                    out = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask,
                                     output_hidden_states=embeddings)
                logits[batch["index"]] = out.logits.float().cpu()
                if embeddings:
                    pooled[batch["index"]] = _mean_pool(out.hidden_states[-1].float(), mask).cpu()
                bars.advance(task)
        probs[keep] = torch.softmax(logits, dim=-1)[:, 1].numpy()
        if embeddings:
            vectors[keep] = pooled.numpy()
        return probs, vectors


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("batches"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def labels_at(probs: np.ndarray, threshold: float) -> np.ndarray:
    """1 where probability >= threshold; 0 elsewhere, unscored (NaN) rows included."""
    return np.where(np.isnan(probs), 0, probs >= threshold).astype(int)


def load_predictor(*, run: str | None = None, model: str | None = None, model_dir: str | None = None,
                   device: str = "auto") -> Predictor:
    """Exactly one of ``run``, ``model``, ``model_dir`` (see the module docstring)."""
    given = {k: v for k, v in {"run": run, "model": model, "model_dir": model_dir}.items() if v}
    if len(given) != 1:
        raise ConfigError("name the model with exactly one of run=RUN_ID, model=NAME[@ALIAS] or model_dir=FOLDER"
                          + (f" (got {', '.join(given)})" if given else ""))
    (kind, value), = given.items()
    if kind == "model_dir":
        return _from_folder(Path(value), f"model_dir={value}", None, device)
    # Downloads only live until the weights are in memory.
    with tempfile.TemporaryDirectory(prefix="titlesweep-model-", ignore_cleanup_errors=True) as tmp:
        if kind == "run":
            return _from_folder(_download_run_model(value, Path(tmp)), f"run={value}", value, device)
        folder, run_id = _download_pyfunc_model(value, Path(tmp))
        return _from_folder(folder, f"model={value}", run_id, device)


def _download_run_model(run_id: str, dst: Path) -> Path:
    client = MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UserError(f"run={run_id}: no such run in {redact(mlflow.get_tracking_uri())}") from None
    names = {Path(item.path).name for item in client.list_artifacts(run_id, MODEL_ARTIFACT)}
    if "config.json" not in names:
        raise UserError(f"run={run_id}: the run has no logged model (no '{MODEL_ARTIFACT}/' artifacts; "
                        "was it trained with tracking.log_model=false, or did it fail?)")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_ARTIFACT, dst_path=str(dst)))


def model_uri(reference: str) -> str:
    """``name`` -> models:/name/latest, ``name@alias`` / ``name/3`` -> models:/..., URIs unchanged."""
    if ":/" in reference:
        return reference
    return f"models:/{reference}" if "@" in reference or "/" in reference else f"models:/{reference}/latest"


def _download_pyfunc_model(reference: str, dst: Path) -> tuple[Path, str | None]:
    """The HF folder inside a pyfunc model of lib/pyfunc.py, and the run that logged it."""
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
    return local / relative, meta.run_id


def _from_folder(folder: Path, source: str, run_id: str | None, device: str) -> Predictor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise UserError(f"{source}: not a Hugging Face model folder (no config.json in {folder})")
    settings_file = folder / SETTINGS_FILE
    # Folders from elsewhere lack the file: 0.5 is the untuned cut-off, 128 covers every recipe's max_length.
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    try:
        torch_device = resolve_device(device)
    except ConfigError:  # its message names trainer.device; here the option is device=
        raise ConfigError(f"device={device}: no CUDA GPU is visible; use device=cpu or device=auto") from None
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(torch_device).eval()
    return Predictor(model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                     threshold=float(settings.get("decision_threshold", 0.5)),
                     max_length=int(settings.get("max_length", DEFAULT_MAX_LENGTH)),
                     source=source, run_id=run_id, device=torch_device)


# --------------------------------------------------------------- files in and out


def read_titles(path: Path, text_column: str | None = None) -> list[str]:
    """Every row's title, in file order: .txt one per line (blank lines kept), tables by column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_lines(path)
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: cannot read '{suffix or 'no suffix'}' files; use .txt (one title per line), "
                        ".csv, .tsv or .xlsx")
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
    raise DataError(f"{path}: no 'title' or 'text' column (columns: {', '.join(map(str, table.columns))}); "
                    "name the column with text_column=NAME")


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


# --------------------------------------------------------------- evaluation


def labelled_file(path: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every row of a labelled file (CiteSeer test format or text/label columns), empties dropped."""
    columns = [str(c) for c in read_table(Path(path)).columns]
    if CITESEER_LABEL not in columns and not {"text", "label"} <= set(columns):
        raise DataError(f"{path}: a labelled file needs columns '{CITESEER_TEXT}' and '{CITESEER_LABEL}' (CiteSeer "
                        f"test format) or 'text' and 'label' (columns: {', '.join(columns)})")
    stats: dict[str, int] = {}
    frame = drop_empty(eval_table(Path(path)), stats, "eval")
    return frame, stats


def config_test_split(cfg) -> tuple[pd.DataFrame, dict[str, int]]:
    """The test split exactly as training builds it from ``cfg.data`` (see experiments/evaluate.py)."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        splits = load_data(cfg)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key}: required with data={cfg.data.name}") from None
    return splits.test, splits.stats


def evaluation_metrics(labels, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Metrics at the stored threshold, and the threshold-dependent ones again at 0.5."""
    metrics = compute_metrics(labels, probs, threshold)
    at_half = compute_metrics(labels, probs, 0.5)
    metrics.update({f"{name}_at_0.5": at_half[name] for name in THRESHOLD_METRICS})
    return metrics


def evaluate_in_mlflow(predictor: Predictor, frame: pd.DataFrame, data_name: str, stats: dict[str, int],
                       batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> tuple[str, dict[str, float]]:
    """Score ``frame`` (text, label) and log a new run ``eval-<training run name>`` beside the training
    run, tagged ``source_run_id``: metrics, reports, plots, errors.csv. Returns (run id, metrics)."""
    if predictor.run_id is None:
        raise ConfigError(f"{predictor.source}: evaluation is logged beside the training run; name the model "
                          "with run=RUN_ID or model=NAME[@ALIAS]")
    if frame.empty:
        raise DataError(f"{data_name}: no labelled rows to evaluate")
    source = _source_run(predictor.run_id)
    probs, vectors = predictor.score(frame["text"].tolist(), batch_size, progress, embeddings=True)
    labels = frame["label"].to_numpy()
    metrics = {**evaluation_metrics(labels, probs, predictor.threshold), "threshold": predictor.threshold,
               "rows": float(len(frame)), **{f"data_{k}": float(v) for k, v in stats.items()}}
    tags = {"source_run_id": predictor.run_id, ROLE_TAG: "eval", "eval_data": data_name,
            "model_source": predictor.source}
    with mlflow.start_run(experiment_id=source.info.experiment_id, run_name=f"eval-{source.info.run_name}",
                          tags=tags) as run:
        mlflow.log_params({"eval.data": data_name, "eval.rows": len(frame), "eval.threshold": predictor.threshold,
                           "eval.source_run_id": predictor.run_id})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="titlesweep-eval-") as tmp:
            write_evaluation_files(frame, probs, vectors, predictor.threshold, Path(tmp))
            mlflow.log_artifacts(tmp)
    return run.info.run_id, metrics


def _source_run(run_id: str):
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        store = redact(mlflow.get_tracking_uri())
        raise UserError(f"run={run_id}: the model's training run is not in {store}") from None


def write_evaluation_files(frame: pd.DataFrame, probs: np.ndarray, vectors: np.ndarray, threshold: float,
                           folder: Path) -> list[Path]:
    """Report (txt, json), confusion matrix, PR curve, embedding map, predictions.csv, errors.csv."""
    labels, preds = frame["label"].to_numpy(), labels_at(probs, threshold)
    text, as_dict = class_report(labels, preds)
    files = [folder / "classification_report.txt", folder / "classification_report.json"]
    files[0].write_text(f"decision threshold {threshold:.4f}, {len(frame)} rows\n\n{text}")
    files[1].write_text(json.dumps({"threshold": threshold, **as_dict}, indent=2))
    accuracy = float((labels == preds).mean())
    files.append(plots.confusion_png(confusion(labels, preds), folder / "confusion_matrix.png",
                                     f"threshold {threshold:.3f}: accuracy {accuracy:.4f}"))
    files.append(pr_curve_png(labels, probs, threshold, folder / "precision_recall_curve.png"))
    files.append(embedding_map_png(vectors, labels, preds, folder / "embedding_map.png"))
    scored = frame[["text", "label"]].assign(probability=probs, prediction=preds)
    scored.to_csv(folder / "predictions.csv", index=False)
    scored[scored["prediction"] != scored["label"]].to_csv(folder / "errors.csv", index=False)
    return files + [folder / "predictions.csv", folder / "errors.csv"]


def pr_curve_png(labels, probs: np.ndarray, threshold: float, path: Path) -> Path:
    """Precision against recall of the correct-title class, the stored threshold and 0.5 marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 4.2))
    if len(np.unique(labels)) < 2:  # undefined with one class: say so rather than draw a misleading curve
        ax.text(0.5, 0.5, "only one class in the data:\nno precision-recall curve", ha="center", va="center")
    else:
        precision, recall, _ = precision_recall_curve(labels, probs)
        ax.plot(recall, precision, label=f"AP {average_precision_score(labels, probs):.4f}")
        for cut, marker, name in ((threshold, "o", f"stored threshold {threshold:.3f}"), (0.5, "s", "threshold 0.5")):
            m = compute_metrics(labels, probs, cut)
            ax.plot(m["recall"], m["precision"], marker, markersize=8, label=name, alpha=0.8)
        ax.legend(loc="lower left")
    ax.set_xlabel("recall (correct titles)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall curve")
    return _save(fig, path)


def embedding_2d(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the embeddings: t-SNE, or PCA when there are too few points for t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    if n < TSNE_MIN_POINTS:
        coords = PCA(n_components=min(2, n, vectors.shape[1]), random_state=seed).fit_transform(vectors)
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))), "PCA"
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    # One OpenMP thread: beside torch's own OpenMP runtime, sklearn's threads spin against it and
    # t-SNE of 1000 titles took 27 s with 2 threads against 5 s with one (2-core machine).
    with threadpool_limits(1, user_api="openmp"):
        return tsne.fit_transform(vectors), "t-SNE"


def embedding_map_png(vectors: np.ndarray, labels, preds, path: Path) -> Path:
    """Sentence embeddings in 2-D, coloured by true label, misclassified titles ringed in red."""
    coords, method = embedding_2d(vectors)
    labels, wrong = np.asarray(labels), np.asarray(preds) != np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for value, name, colour in ((0, "wrong title (0)", "tab:orange"), (1, "correct title (1)", "tab:blue")):
        here = labels == value
        ax.scatter(coords[here, 0], coords[here, 1], s=12, c=colour, alpha=0.7, label=name)
    ax.scatter(coords[wrong, 0], coords[wrong, 1], s=60, facecolors="none", edgecolors="red", linewidths=1.2,
               label=f"misclassified ({int(wrong.sum())})")
    ax.legend(fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{method} of mean-pooled encoder embeddings ({len(coords)} titles)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------- command-line values


def parse_threshold(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold={value}: must be a probability between 0 and 1")
    return threshold


def parse_batch_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_BATCH_SIZE
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"batch_size={value}: must be a positive whole number")
    return int(value)


def compose_config(overrides: list[str]):
    """The Hydra config as train.py composes it (tracking.uri, paths.*, data.*), errors as one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lib.paths import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot compose the config from {' '.join(overrides)}: {first_line}") from None


def split_options(options: dict[str, str], allowed: tuple[str, ...], usage: str,
                  config_prefixes: tuple[str, ...] = ("tracking.", "paths.")) -> tuple[dict[str, str], list[str]]:
    """(this command's options, Hydra overrides); anything else is refused with the usage line."""
    overrides = [f"{k}={v}" for k, v in options.items() if k.startswith(config_prefixes)]
    own = {k: v for k, v in options.items() if not k.startswith(config_prefixes)}
    unknown = [k for k in own if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; usage: {usage}")
    return own, overrides
