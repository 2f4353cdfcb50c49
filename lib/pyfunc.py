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

A model that experiments/export.py logged (a newer ``pyfunc_model`` of the same run) also carries the
run's ONNX export (artifact ``onnx``: model.onnx, model.int8.onnx when quantized, titlesweep_onnx.json)
and scores with ONNX Runtime when ``onnxruntime`` is importable (params ``backend`` auto | torch | onnx,
``onnx_quantize`` auto | int8 | none: auto takes the int8 file when the export made one), else with
torch as before. The export's JSON records the SHA-256 of each .onnx file and of the weights it was
exported from: a file that does not match is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import threading
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

# The ONNX export of a run's model (experiments/export.py, lib/onnx_export.py): a folder logged as the
# run's "onnx/" artifacts and, in the pyfunc model that export logs, as its artifact of the same name.
ONNX_ARTIFACT = "onnx"
ONNX_MANIFEST = "titlesweep_onnx.json"  # source run, weights, file SHA-256s, threshold, max_length
ONNX_FILES = {"none": "model.onnx", "int8": "model.int8.onnx"}  # by quantization
ONNX_INPUTS = ("input_ids", "attention_mask")
ONNX_OUTPUTS = ("logits", "mean_hidden")  # mean_hidden: mean of the last hidden states over real tokens
BACKENDS = ("auto", "torch", "onnx")  # auto: onnx where the model carries an export and onnxruntime imports
ONNX_QUANTIZE = ("auto", "int8", "none")  # auto: the int8 file where the export made one, else fp32
ONNX_EXTRA = "pip install -e '.[onnx]'"  # in this repository; elsewhere pip install onnxruntime

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "title")]),
    outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]),
    params=ParamSchema(
        [
            ParamSpec("precision", "string", "fp32"),
            ParamSpec("batch_size", "long", BATCH_SIZE),
            ParamSpec("backend", "string", "auto"),
            ParamSpec("onnx_quantize", "string", "auto"),
        ]
    ),
)
_log = logging.getLogger(__name__)
INPUT_EXAMPLE = pd.DataFrame({"title": ["Sparse Bayesian inference of genome networks", "Abstract"]})


class TitleClassifier(mlflow.pyfunc.PythonModel):
    """``predict`` takes a DataFrame with a ``title`` column and returns ``probability`` (that the
    title is correctly extracted) and ``label`` (1/0 at the threshold stored with the model).
    Empty titles are not scored: probability NaN, label 0, as in experiments/predict.py."""

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer

        folder = Path(context.artifacts[HF_ARTIFACT])
        self.folder = folder
        self.threshold, self.max_length = read_settings(folder)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self._lock = threading.Lock()  # a served model loads what a request asks for once
        self.model = None
        self._sessions: dict[str, OnnxScorer] = {}
        self.onnx_folder, self.onnx_manifest = None, None
        if context.artifacts.get(ONNX_ARTIFACT):
            self.onnx_folder = Path(context.artifacts[ONNX_ARTIFACT])
            self.onnx_manifest = read_onnx_manifest(self.onnx_folder)
            check_onnx_weights(self.onnx_manifest, folder, "this model's " + HF_ARTIFACT)
            if not onnxruntime_available():
                _log.warning("onnxruntime is not installed: this model scores with torch (pip install onnxruntime)")
        # What a call without params uses is loaded now, so the first request (a served model) pays nothing.
        if self._backend("auto", "fp32") == "onnx":
            self._session("auto")
        else:
            self._torch_model()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        # A CSV read by `mlflow models predict` turns empty cells into NaN: treat them as empty titles.
        titles = frame["title"].fillna("").astype(str).str.strip().tolist()
        precision, batch_size, backend, quantize = _read_params(params or {})
        if self._backend(backend, precision) == "onnx":
            probs = self._onnx_probabilities(titles, quantize, batch_size)
        else:
            probs = self._probabilities(titles, precision, batch_size)
        labels = np.where(np.isnan(probs), 0, probs >= self.threshold).astype("int64")
        return pd.DataFrame({"probability": probs, "label": labels})

    def _backend(self, backend: str, precision: str) -> str:
        """torch or onnx for these params (auto: onnx where there is an export, onnxruntime and fp32)."""
        if backend == "auto":
            usable = self.onnx_manifest is not None and onnxruntime_available()
            return "onnx" if usable and precision == "fp32" else "torch"
        if backend == "onnx":
            if self.onnx_manifest is None:
                raise ValueError(
                    "params backend='onnx': this model carries no ONNX export; export its run with python "
                    "experiments/export.py run=<run id> format=onnx quantize=int8 and load its newer pyfunc_model"
                )
            if not onnxruntime_available():
                raise ValueError(f"params backend='onnx' needs onnxruntime: {ONNX_EXTRA} (or pip install onnxruntime)")
            if precision != "fp32":
                raise ValueError(
                    f"params precision={precision!r} is for backend='torch'; the ONNX files are fp32 and int8 "
                    "(params onnx_quantize)"
                )
        return backend

    def _torch_model(self):
        with self._lock:
            if self.model is None:
                from transformers import AutoModelForSequenceClassification

                model = AutoModelForSequenceClassification.from_pretrained(self.folder)
                self.model = attach_pooling(model).to(self.device).eval()
        return self.model

    def _session(self, quantize: str) -> OnnxScorer:
        name = choose_onnx_file(self.onnx_manifest, quantize)
        with self._lock:
            if name not in self._sessions:
                self._sessions[name] = OnnxScorer(check_onnx_file(self.onnx_folder, self.onnx_manifest, name))
        return self._sessions[name]

    def _onnx_probabilities(self, titles: list[str], quantize: str, batch_size: int) -> np.ndarray:
        probs = np.full(len(titles), np.nan)
        keep = [i for i, title in enumerate(titles) if title]
        if keep:
            ids = self.tokenizer([titles[i] for i in keep], truncation=True, max_length=self.max_length)["input_ids"]
            logits, _ = self._session(quantize).run(ids, self.tokenizer.pad_token_id or 0, batch_size)
            probs[keep] = positive_probability(logits)
        return probs

    @torch.inference_mode()
    def _probabilities(self, titles: list[str], precision: str, batch_size: int) -> np.ndarray:
        probs = np.full(len(titles), np.nan)
        keep = [i for i, title in enumerate(titles) if title]
        if not keep:
            return probs
        model = self._torch_model()
        ids = self.tokenizer([titles[i] for i in keep], truncation=True, max_length=self.max_length)["input_ids"]
        # Batches of similar length, each padded to its own longest: titles vary from 2 to 40 pieces.
        order = sorted(range(len(keep)), key=lambda j: len(ids[j]))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[j] for j in chunk]}, return_tensors="pt")
                batch = batch.to(self.device)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                probs[[keep[j] for j in chunk]] = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()
        return probs


# --------------------------------------------------------------- ONNX Runtime (optional)


class OnnxExportError(ValueError):
    """An ONNX export folder that cannot be used as it is; the message is one line."""


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of each weights file of a Hugging Face model folder (what an export was made from)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    return {p.name: file_sha256(p) for p in files}


def read_onnx_manifest(folder: Path) -> dict:
    path = Path(folder) / ONNX_MANIFEST
    if not path.is_file():
        raise OnnxExportError(f"{folder}: not an ONNX export (no {ONNX_MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["source_run_id"]  # noqa: B018  required keys
    except (ValueError, KeyError, TypeError):
        raise OnnxExportError(f"{path}: not a TitleSweep ONNX export record") from None
    return manifest


def choose_onnx_file(manifest: dict, quantize: str) -> str:
    """The file of the export for ``quantize`` (auto: int8 where the export made one, else fp32)."""
    files = manifest["files"]
    if quantize == "auto":
        quantize = "int8" if ONNX_FILES["int8"] in files else "none"
    name = ONNX_FILES[quantize]
    if name not in files:
        raise OnnxExportError(
            f"the ONNX export of run {manifest['source_run_id']} has no {name} (it was exported with "
            f"quantize={manifest.get('quantize')}): python experiments/export.py run={manifest['source_run_id']} "
            f"format=onnx quantize={quantize}"
        )
    return name


def check_onnx_file(folder: Path, manifest: dict, name: str) -> Path:
    """``folder/name`` when its SHA-256 is the one the export recorded."""
    path = Path(folder) / name
    if not path.is_file() or file_sha256(path) != manifest["files"][name]:
        state = "is missing" if not path.is_file() else "does not match the SHA-256 its export recorded"
        raise OnnxExportError(
            f"{path} {state} (changed or partly copied); export again: python experiments/export.py "
            f"run={manifest['source_run_id']} format=onnx quantize={manifest.get('quantize', 'int8')}"
        )
    return path


def check_onnx_weights(manifest: dict, model_folder: Path, what: str) -> None:
    """Refuse an export made from other weights than those of ``model_folder`` (another run's)."""
    recorded, here = manifest.get("weights_sha256"), weights_digest(model_folder)
    if recorded is not None and here and recorded != here:
        raise OnnxExportError(
            f"the ONNX export (of run {manifest['source_run_id']}) was made from other weights than {what}; "
            "export this model's run again: python experiments/export.py run=<run id> format=onnx quantize=int8"
        )


def positive_probability(logits: np.ndarray) -> np.ndarray:
    """P(class 1) of two-class logits: softmax in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))


class OnnxScorer:
    """An ONNX Runtime session on one exported file (CPU): logits and mean hidden states of token ids."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(
        self, ids: list[list[int]], pad_id: int, batch_size: int, embeddings: bool = False, progress=None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (n, 2), mean hidden states (n, width) with ``embeddings``) in the order of ``ids``.
        Batches of similar length, each padded to its own longest; ``progress()`` is called per batch."""
        outputs = list(ONNX_OUTPUTS if embeddings else ONNX_OUTPUTS[:1])
        logits, vectors = np.zeros((len(ids), 2), np.float32), None
        order = sorted(range(len(ids)), key=lambda j: len(ids[j]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(ids[j]) for j in chunk)
            input_ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, j in enumerate(chunk):
                input_ids[row, : len(ids[j])] = ids[j]
                mask[row, : len(ids[j])] = 1
            result = self.session.run(outputs, {ONNX_INPUTS[0]: input_ids, ONNX_INPUTS[1]: mask})
            logits[chunk] = result[0]
            if embeddings:
                if vectors is None:
                    vectors = np.zeros((len(ids), result[1].shape[-1]), np.float32)
                vectors[chunk] = result[1]
            if progress is not None:
                progress()
        return logits, vectors


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


class TextVectors:
    """One vector per text from the model's forward calls made inside the block::

        with TextVectors(model, "mean") as vectors:
            out = model(input_ids=..., attention_mask=mask, output_hidden_states=vectors.hidden_states)
        vectors.of(out, mask)  # [batch, width], of the last call

    "mean": the last hidden states' mean over the real tokens; "head": the vector the classification
    head read (BERT's pooler and the RoBERTa, MPNet and DeBERTa heads all read the encoder output's
    first position, where mean pooling's hook puts the mean). Under mean pooling the two are the same,
    and both are read where the head reads them, by a hook on the encoder registered after the pooling
    hook: ``hidden_states[-1]`` holds the hook's mean in place of the first token's vector in
    transformers 5 (not in 4), so averaging it again would be wrong. The encoder is hooked only then
    (mean pooling needs an ``encoder`` module anyway); "head" under cls pooling is the last hidden
    states' first position, which every architecture returns (DistilBERT has no ``encoder``).
    "layers": every encoder layer's output averaged over the real tokens, [batch, layers, width]
    (the last layer's as "mean"; what layer-to-layer distillation compares, lib/distill.py)."""

    KINDS = ("mean", "head", "layers")

    def __init__(self, model, kind: str = "mean") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"text vectors: choose one of {', '.join(self.KINDS)}, got {kind!r}")
        mean_pooled = getattr(model.config, POOLING_KEY, "cls") == "mean"
        self.kind = kind
        self.encoder = model.base_model.encoder if mean_pooled else None
        # what the forward call must return for ``of``
        self.hidden_states = kind == "layers" or not mean_pooled
        self.head_vector: torch.Tensor | None = None

    def __enter__(self) -> TextVectors:
        if self.encoder is not None:
            self.handle = self.encoder.register_forward_hook(self._keep)
        return self

    def _keep(self, module, args, output) -> None:
        self.head_vector = output.last_hidden_state[:, 0]

    def __exit__(self, *exc) -> None:
        if self.encoder is not None:
            self.handle.remove()

    def of(self, out, mask: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "layers":
            # hidden_states[0] is the embedding output; the layers below the last are not touched by the hook
            below = [mean_pool(hidden, mask) for hidden in out.hidden_states[1:-1]]
            return torch.stack([*below, self._last_layer(out, mask, "mean")], dim=1)
        return self._last_layer(out, mask, self.kind)

    def _last_layer(self, out, mask: torch.Tensor | None, kind: str) -> torch.Tensor:
        """The last layer's vector of ``kind`` ("mean" or "head")."""
        if self.encoder is not None:
            return self.head_vector
        last = out.hidden_states[-1]
        return last[:, 0] if kind == "head" else mean_pool(last, mask)


def _mean_into_first(module, args, output):
    hidden = output.last_hidden_state
    masks = _CALL_MASKS.get()
    mean = mean_pool(hidden, masks[-1] if masks else None)  # no call in progress: the encoder was run alone
    output.last_hidden_state = torch.cat([mean.unsqueeze(1), hidden[:, 1:]], dim=1)
    return output


def _read_params(params: dict) -> tuple[str, int, str, str]:
    precision, batch_size = str(params.get("precision", "fp32")), int(params.get("batch_size", BATCH_SIZE))
    backend, quantize = str(params.get("backend", "auto")), str(params.get("onnx_quantize", "auto"))
    if precision not in PRECISIONS:
        raise ValueError(f"params precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError(f"params batch_size={batch_size}: must be a positive whole number")
    if backend not in BACKENDS:
        raise ValueError(f"params backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if quantize not in ONNX_QUANTIZE:
        raise ValueError(f"params onnx_quantize={quantize!r}: choose one of {', '.join(ONNX_QUANTIZE)}")
    return precision, batch_size, backend, quantize


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


def pip_requirements(onnx: bool = False) -> list[str]:
    """Pinned to what trained the model; explicit so MLflow never resolves them over the network.
    ``onnx``: the model carries an ONNX export, scored with onnxruntime (pinned to the exporting version)."""
    import transformers

    pins = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",  # no +cpu local tag
        f"transformers=={transformers.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
    ]
    if onnx:
        import onnxruntime

        pins.append(f"onnxruntime=={onnxruntime.__version__}")
    return pins


def log_pyfunc_model(
    model_folder: Path,
    artifact_path: str = PYFUNC_ARTIFACT,
    onnx_folder: Path | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
):
    """Log ``model_folder`` (HF model + tokenizer + titlesweep.json) as a pyfunc model of the active
    run, named ``artifact_path`` (``runs:/<run id>/pyfunc_model``). Returns MLflow's ModelInfo.
    ``onnx_folder``: the run's ONNX export, carried as the ``onnx`` artifact (experiments/export.py);
    ``run_id``: log it to that run without reopening it (its status and end time stay as they are)."""
    arguments = _model_arguments(model_folder, onnx_folder)
    with _quiet_input_example():
        if run_id is None:
            return mlflow.pyfunc.log_model(name=artifact_path, tags=tags, **arguments)
        # In the run's experiment (Model.log alone would create it in the current one), with its params.
        run = mlflow.MlflowClient().get_run(run_id)
        logged = mlflow.initialize_logged_model(
            name=artifact_path,
            source_run_id=run_id,
            tags=tags,
            params=run.data.params,
            experiment_id=run.info.experiment_id,
        )
        return mlflow.models.Model.log(
            artifact_path=None,
            name=artifact_path,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            **arguments,
        )


def save_pyfunc_model(model_folder: Path, path: Path, onnx_folder: Path | None = None) -> None:
    """The same pyfunc model written to the folder ``path``, outside any run (the benchmark loads it)."""
    with _quiet_input_example():
        mlflow.pyfunc.save_model(str(path), **_model_arguments(model_folder, onnx_folder))


def _model_arguments(model_folder: Path, onnx_folder: Path | None = None) -> dict:
    artifacts = {HF_ARTIFACT: str(model_folder)}
    if onnx_folder is not None:
        artifacts[ONNX_ARTIFACT] = str(onnx_folder)
    return {
        "python_model": Path(__file__).resolve(),
        "artifacts": artifacts,
        "signature": SIGNATURE,
        "input_example": INPUT_EXAMPLE,
        "pip_requirements": pip_requirements(onnx=onnx_folder is not None),
    }


@contextlib.contextmanager
def _quiet_input_example():
    # MLflow's input-example writer compares columns with a range, which pandas 3 deprecates: not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        yield


# MLflow reads the model object from this call when it executes the copied file.
mlflow.models.set_model(TitleClassifier())
