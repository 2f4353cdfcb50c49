"""The trained classifier as an MLflow pyfunc model: a DataFrame of titles in, P(correct) and label out.

Logged as a "model from code": MLflow copies this file into the model and executes it on load, so
a loaded model needs mlflow, torch, transformers and pandas, and nothing from this repository
(no pickled classes that point back at ``lib``). Keep this file's imports to those libraries and
the standard library, and keep the ``set_model`` call at the bottom.

    model = mlflow.pyfunc.load_model("models:/titlesweep-best@champion")   # or runs:/<id>/pyfunc_model
    model.predict(pd.DataFrame({"title": ["Sparse Bayesian inference", "Abstract"]}))
    #    probability  label
    model.predict(frame, params={"precision": "bf16", "batch_size": 256})  # bf16 autocast where it is native

``params`` are optional: ``precision`` fp32 (default: the precision the stored threshold was chosen
at) or bf16, and ``batch_size`` (titles per forward pass, sorted by length).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

# A training run's model, in one place (this file may import nothing from lib: see above).
MODEL_ARTIFACT = "model"  # the run artifact holding the HF model folder (predict.py, evaluate.py)
PYFUNC_ARTIFACT = "pyfunc_model"  # the same folder wrapped as this pyfunc model (runs:/<id>/pyfunc_model)
HF_ARTIFACT = "hf_model"  # key of the Hugging Face model folder among the pyfunc's artifacts
SETTINGS_FILE = "titlesweep.json"  # in the HF folder: decision_threshold, max_length
# Folders from elsewhere lack the settings file: 0.5 is the untuned cut-off, 128 the longest
# max_length of any recipe.
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_LENGTH = 128
BATCH_SIZE = 64
PRECISIONS = ("fp32", "bf16")  # no "auto": the CPU-flag rule lives in lib/device, which this file may not import

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "title")]),
    outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]),
    params=ParamSchema([ParamSpec("precision", "string", "fp32"), ParamSpec("batch_size", "long", BATCH_SIZE)]),
)
INPUT_EXAMPLE = pd.DataFrame({"title": ["Sparse Bayesian inference of genome networks", "Abstract"]})


class TitleClassifier(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with a ``title`` column and returns ``probability`` (that the
    title is correctly extracted) and ``label`` (1/0 at the threshold stored with the model).
    Empty titles are not scored: probability NaN, label 0, as in experiments/predict.py."""

    def load_context(self, context) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(context.artifacts[HF_ARTIFACT])
        self.threshold, self.max_length = read_settings(folder)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        self.model = attach_pooling(model).to(self.device).eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        # A CSV read by `mlflow models predict` turns empty cells into NaN: treat them as empty titles.
        titles = frame["title"].fillna("").astype(str).str.strip().tolist()
        precision, batch_size = _read_params(params or {})
        probs = self._probabilities(titles, precision, batch_size)
        labels = np.where(np.isnan(probs), 0, probs >= self.threshold).astype("int64")
        return pd.DataFrame({"probability": probs, "label": labels})

    @torch.inference_mode()
    def _probabilities(self, titles: list[str], precision: str, batch_size: int) -> np.ndarray:
        probs = np.full(len(titles), np.nan)
        keep = [i for i, title in enumerate(titles) if title]
        if not keep:
            return probs
        ids = self.tokenizer([titles[i] for i in keep], truncation=True, max_length=self.max_length)["input_ids"]
        # Batches of similar length, each padded to its own longest: titles vary from 2 to 40 pieces.
        order = sorted(range(len(keep)), key=lambda j: len(ids[j]))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[j] for j in chunk]}, return_tensors="pt")
                batch = batch.to(self.device)
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                probs[[keep[j] for j in chunk]] = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
        return probs


# How the classifier head reads the encoder, stored in the HF config.json under this key so that a
# saved model carries it: "cls" (the architecture's own head on the first token) or "mean" (the
# head reads the mean of all token vectors instead). It lives here because this file may import
# nothing from lib; lib/models and lib/inference call attach_pooling too.
POOLING_KEY = "titlesweep_pooling"
POOLINGS = ("cls", "mean")


def attach_pooling(model, pooling: str | None = None):
    """Apply ``pooling`` (default: what ``model.config`` stores, else "cls") and store it in the config.

    "mean" writes the mean of the encoder's output vectors over the real tokens (padding excluded)
    into the first position, where every supported head reads (BERT's pooler, the RoBERTa, MPNet
    and DeBERTa heads), by hooks: the model's forward call hands its attention mask to the encoder
    hook through ``_CALL_MASKS``, which belongs to the thread (or asyncio task) making the call, so
    calls made at the same time through one model (a served pyfunc model) each pool by their own
    mask. No weights change, so save_pretrained / from_pretrained work as before.
    Sentence-embedding models such as all-MiniLM-L6-v2 were trained with mean pooling."""
    pooling = pooling or getattr(model.config, POOLING_KEY, "cls")
    if pooling not in POOLINGS:
        raise ValueError(f"{POOLING_KEY}={pooling!r}: choose one of {', '.join(POOLINGS)}")
    attached = getattr(model, "_titlesweep_pooling", None)  # hooks must not be attached twice
    if attached not in (None, pooling):
        raise ValueError(f"the model already pools by {attached!r}; build a new one for {pooling!r}")
    setattr(model.config, POOLING_KEY, pooling)
    if pooling == "mean" and attached is None:
        names = list(inspect.signature(model.forward).parameters)
        position = names.index("attention_mask") if "attention_mask" in names else None
        model.register_forward_pre_hook(functools.partial(_enter_call, position), with_kwargs=True)
        # always_call: the call's mask goes when the call ends, also when it raises
        model.register_forward_hook(_leave_call, always_call=True)
        model.base_model.encoder.register_forward_hook(_mean_into_first)
    model._titlesweep_pooling = pooling
    return model


# The attention masks of the mean-pooled forward calls in progress in this context, innermost last.
# A ContextVar is per thread (and per asyncio task): one thread's call never reads another's mask,
# and a call made inside another call (a model inside a model) finds its own.
_CALL_MASKS: contextvars.ContextVar[tuple] = contextvars.ContextVar("titlesweep_call_masks", default=())


def _enter_call(position, module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if mask is None and position is not None and len(args) > position:
        mask = args[position]
    _CALL_MASKS.set((*_CALL_MASKS.get(), mask))


def _leave_call(module, args, output):
    _CALL_MASKS.set(_CALL_MASKS.get()[:-1])


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``hidden`` (batch, tokens, width) over the tokens where ``mask`` is 1 (all when None)."""
    if mask is None:
        return hidden.mean(1)
    if tuple(mask.shape) != tuple(hidden.shape[:2]):
        raise RuntimeError(f"mean pooling: attention mask {tuple(mask.shape)} for hidden states {tuple(hidden.shape)}")
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _mean_into_first(module, args, output):
    hidden = output.last_hidden_state
    masks = _CALL_MASKS.get()
    mean = mean_pool(hidden, masks[-1] if masks else None)  # no call in progress: the encoder was run alone
    output.last_hidden_state = torch.cat([mean.unsqueeze(1), hidden[:, 1:]], dim=1)
    return output


def _read_params(params: dict) -> tuple[str, int]:
    precision, batch_size = str(params.get("precision", "fp32")), int(params.get("batch_size", BATCH_SIZE))
    if precision not in PRECISIONS:
        raise ValueError(f"params precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError(f"params batch_size={batch_size}: must be a positive whole number")
    return precision, batch_size


def save_model_folder(folder: Path, model, tokenizer, threshold: float, max_length: int) -> Path:
    """The model folder a run logs as ``model/`` and wraps as the pyfunc model: HF weights and config,
    tokenizer, and the settings file (decision threshold, max_length) that inference reads."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_settings(folder, threshold, max_length)
    return Path(folder)


def write_settings(folder: Path, threshold: float, max_length: int) -> None:
    (Path(folder) / SETTINGS_FILE).write_text(json.dumps({"decision_threshold": threshold, "max_length": max_length}))


def read_settings(folder: Path) -> tuple[float, int]:
    """(decision threshold, max_length) stored with the model folder, or the defaults above."""
    settings_file = Path(folder) / SETTINGS_FILE
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    return (
        float(settings.get("decision_threshold", DEFAULT_THRESHOLD)),
        int(settings.get("max_length", DEFAULT_MAX_LENGTH)),
    )


def pip_requirements() -> list[str]:
    """Pinned to what trained the model; explicit so MLflow never resolves them over the network."""
    import transformers

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",  # no +cpu local tag
        f"transformers=={transformers.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
    ]


def log_pyfunc_model(model_folder: Path, artifact_path: str = PYFUNC_ARTIFACT):
    """Log ``model_folder`` (HF model + tokenizer + titlesweep.json) as a pyfunc model of the active
    run, named ``artifact_path`` (``runs:/<run id>/pyfunc_model``). Returns MLflow's ModelInfo."""
    with _quiet_input_example():
        return mlflow.pyfunc.log_model(name=artifact_path, **_model_arguments(model_folder))


def save_pyfunc_model(model_folder: Path, path: Path) -> None:
    """The same pyfunc model written to the folder ``path``, outside any run (the benchmark loads it)."""
    with _quiet_input_example():
        mlflow.pyfunc.save_model(str(path), **_model_arguments(model_folder))


def _model_arguments(model_folder: Path) -> dict:
    return {
        "python_model": Path(__file__).resolve(),
        "artifacts": {HF_ARTIFACT: str(model_folder)},
        "signature": SIGNATURE,
        "input_example": INPUT_EXAMPLE,
        "pip_requirements": pip_requirements(),
    }


@contextlib.contextmanager
def _quiet_input_example():
    # MLflow's input-example writer compares columns with a range, which pandas 3 deprecates: not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        yield


# MLflow reads the model object from this call when it executes the copied file.
mlflow.models.set_model(TitleClassifier())
