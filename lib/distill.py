"""Knowledge distillation, the ``distill`` config group (conf/distill/*.yaml):

    python experiments/train.py +experiment=distill teacher=<run id | models:/name@alias>

The student (the run's ``model``, MiniLM by default) learns from a trained teacher's probabilities,
softened by a temperature, as well as from the labels (Hinton et al., 2015, "Distilling the Knowledge
in a Neural Network"):

    loss = (1 - kd_weight) * hard loss (the ``loss`` group's)  +  kd_weight * T^2 * KL(teacher_T || student_T)

Its training set is the *transfer set*: the run's training rows plus ``transfer_rows`` more rows of
the default corpus built with another seed (labels come with them; the teacher's view of them is
what the student mostly learns from), with ``transfer_data``'s ``data.*`` settings if any: e.g.
titles of fields the student's own corpus lacks, which the teacher labels without changing the
student's training, validation or test rows. Rows whose source record (``group``) lies in the run's
validation, test or cross-source split, or whose text occurs in any evaluation set, are dropped, so
the held-out figures stay held out. The teacher scores the transfer set once: its logits are cached
under ``${paths.cache}/distill/`` keyed by the teacher's run id, the transfer texts and the
precision, so a sweep over student recipes does not pay for the teacher again.

``relation_weight`` > 0 adds what the teacher knows beyond one probability per title: how alike it
finds the titles of a batch. With two classes a teacher's soft label is a single number, so the usual
term passes on little besides the label's confidence; the cosine similarities between the vectors the
teacher's head reads for a batch's titles (lib/pyfunc.TextVectors: the first token's, or the mean under
mean pooling) are B x B numbers, and the student is asked to reproduce them with the vectors its own
head reads (similarity-preserving distillation, Tung & Mori, 2019). Comparing similarities, not the
vectors themselves, needs no projection between the two models' widths (384 and 768), hence no
parameter outside the student. The teacher's vectors are cached beside its logits. Measured for
4-layer MiniLM students of MPNet, it made every held-out figure worse (docs/decisions.md): 0 by default.

``feature_weight`` > 0 asks for more than the similarities when the student is as wide as its teacher
(MPNet cut to fewer layers, taught by MPNet): that the vector its head reads point the way the teacher's
does, ``feature_weight * (1 - cosine)`` per title (DistilBERT's cosine loss, Sanh et al., 2019). The
vectors are the same cached ones; a student of another width, or an ensemble (whose members' vectors lie
in unrelated spaces), is refused in one line. Measured at 1.0 for a 6-layer MPNet student of MPNet, it
cost a point on cross-source and did not move CiteSeer (docs/decisions.md): 0 by default.

``layer_weight`` > 0 teaches the student's inner layers as well, across widths (TinyBERT's layer
mapping, Jiao et al., 2020, with whole-title vectors): each student layer's output, averaged over the
title's tokens and mapped by a linear map of its own into the teacher's width, is asked to point where
the evenly paired teacher layer's average points (a 4-layer student of a 12-layer teacher: layers 3,
6, 9 and 12), ``layer_weight * (1 - cosine)`` averaged over layers and titles. Whole-title vectors, not
token by token, because the two models split titles into different tokens. The maps train with the
student (at the head's learning rate) and are dropped with the loss: the saved student is unchanged.
The teacher's layer averages are cached beside its logits (float16, unit length: 0.4 GB for 21,000
rows of a 12-layer, 768-wide teacher). Measured at 1.0 and 0.3 for 4-layer MiniLM students of MPNet, it
moved neither CiteSeer nor its ranking beyond noise and cost cross-source accuracy (docs/decisions.md): 0
by default.

``teacher=[a,b,c]`` distils an ensemble: each run scores the transfer set (cached per run, as above)
and the student learns from their mean probability (for three MPNet seeds it taught 4-layer students
no better than the best seed alone: docs/decisions.md).

Validation, early stopping, the threshold and every held-out metric are the ordinary run's (the
hard loss alone): a student is an ordinary run, compared, predicted with and registered as any other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue
from torch import nn

from lib.corpus.spec import MIN_SIZE as MIN_CORPUS_SIZE
from lib.data import Splits, remove_overlap
from lib.device import resolve_device, resolve_precision
from lib.errors import ConfigError, UserError
from lib.tracking import RUN_ID, redact

log = logging.getLogger(__name__)

USAGE = "python experiments/train.py +experiment=distill teacher=<run id | models:/name@alias>"
# The transfer corpus is the run's corpus built with this offset added to data.seed: other records,
# other casings and other errors, from the same recipe.
TRANSFER_SEED_OFFSET = 1_000
# Teacher probabilities of exactly 0 or 1 (float32 softmax) have no finite logit: clipped here first.
PROB_EPS = 1e-6


@dataclass
class TransferSet:
    """The student's training rows and the teacher's logit (log P(correct) - log P(wrong)) for each."""

    frame: pd.DataFrame  # text, label
    teacher_logits: torch.Tensor  # float32 [rows]; an ensemble's: its teachers' mean probability as a logit
    teacher_run_ids: list[str]  # one, or the ensemble's runs
    cache_hit: bool
    # float32 [rows, width], unit length, with distill.relation_weight or feature_weight > 0 (else None): the rows'
    # teacher embeddings; an ensemble's are its teachers' side by side, each scaled by 1/sqrt(teachers), so that
    # the dot product of two rows is the teachers' mean cosine similarity
    teacher_embeddings: torch.Tensor | None = None
    # float16 [rows, teacher layers, width], unit length, with distill.layer_weight > 0 (else None): each of the
    # teacher's layers averaged over the row's tokens
    teacher_layers: torch.Tensor | None = None

    def per_row(self) -> dict[str, torch.Tensor]:
        """What each training batch carries for the loss (lib/batching.Collator), by its argument name."""
        rows = {"teacher_logits": self.teacher_logits}
        if self.teacher_embeddings is not None:
            rows["teacher_embeddings"] = self.teacher_embeddings
        if self.teacher_layers is not None:
            rows["teacher_layers"] = self.teacher_layers
        return rows


# --------------------------------------------------------------- the loss


class DistillationLoss(nn.Module):
    """``(1 - weight) * hard(logits, labels) + weight * T^2 * KL(teacher_T || student_T)``
    ``+ relation_weight * similarity_loss(student_embeddings, teacher_embeddings)``
    ``+ feature_weight * direction_loss(student_embeddings, teacher_embeddings)``
    ``+ layer_weight * layers(student_layers, teacher_layers)`` (a LayerMatch, with its maps).

    ``teacher_logits`` is the teacher's logit difference (correct minus wrong) per example; without it
    (validation, test) the loss is the hard loss alone, so validation losses compare across runs. The
    T^2 factor keeps the soft term's gradients the size of the hard term's whatever the temperature.
    The relation and feature terms need both models' embeddings of the batch, the layer term both
    models' layer averages (the training loop passes the student's when the batch carries the teacher's).
    """

    def __init__(
        self,
        hard: nn.Module,
        weight: float,
        temperature: float,
        relation_weight: float = 0.0,
        feature_weight: float = 0.0,
        layer_weight: float = 0.0,
        layers: LayerMatch | None = None,
    ) -> None:
        super().__init__()
        self.hard, self.weight, self.temperature = hard, weight, temperature
        self.relation_weight, self.feature_weight = relation_weight, feature_weight
        self.layer_weight, self.layers = layer_weight, layers

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        student_embeddings: torch.Tensor | None = None,
        teacher_embeddings: torch.Tensor | None = None,
        student_layers: torch.Tensor | None = None,
        teacher_layers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hard = self.hard(logits, labels)
        loss = hard
        if teacher_logits is not None and self.weight > 0:
            t = self.temperature
            z = teacher_logits.to(logits.dtype) / t
            teacher = torch.stack([torch.sigmoid(-z), torch.sigmoid(z)], dim=-1)  # a 2-class softmax of [0, z]
            soft = F.kl_div(F.log_softmax(logits / t, dim=-1), teacher, reduction="batchmean") * t * t
            loss = (1 - self.weight) * hard + self.weight * soft
        if student_embeddings is not None and teacher_embeddings is not None:
            if self.relation_weight > 0:
                loss = loss + self.relation_weight * similarity_loss(student_embeddings, teacher_embeddings)
            if self.feature_weight > 0:
                loss = loss + self.feature_weight * direction_loss(student_embeddings, teacher_embeddings)
        if student_layers is not None and teacher_layers is not None and self.layers is not None:
            loss = loss + self.layer_weight * self.layers(student_layers, teacher_layers)
        return loss

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, temperature={self.temperature}, relation_weight={self.relation_weight}, "
            f"feature_weight={self.feature_weight}, layer_weight={self.layer_weight}"
        )


class LayerMatch(nn.Module):
    """The layer term: student layer i's title vector, through its own linear map into the teacher's
    width, against teacher layer ``pairs[i]``'s; the mean of ``1 - cosine`` over layers and titles."""

    def __init__(self, student_layers: int, student_width: int, teacher_layers: int, teacher_width: int) -> None:
        super().__init__()
        self.pairs = layer_pairs(student_layers, teacher_layers)
        self.maps = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in range(student_layers))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape[1] != len(self.maps):  # a model other than the one the maps were made for
            raise RuntimeError(f"layer term: {student.shape[1]} student layers, maps for {len(self.maps)}")
        terms = [
            direction_loss(linear(student[:, i].float()), teacher[:, j])
            for i, (linear, j) in enumerate(zip(self.maps, self.pairs))
        ]
        return torch.stack(terms).mean()

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}"


def layer_pairs(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (0-based) each student layer learns from: spread evenly, the last paired with
    the last (TinyBERT's g(m) = m * N / M): a 4-layer student of a 12-layer teacher -> [2, 5, 8, 11]."""
    return [max(1, round((i + 1) * teacher_layers / student_layers)) - 1 for i in range(student_layers)]


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the two models' matrices of cosine similarities between the
    batch's examples ([rows, width] each; the widths may differ): 0 when the student finds every pair of
    titles exactly as alike as the teacher does."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    return (s @ s.T - t @ t.T).pow(2).mean()


def direction_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - the cosine between each example's student and teacher vectors ([rows, width] each, the
    same width): 0 when every student vector points the teacher's way, whatever its length."""
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def wrap_loss(cfg_distill, hard: nn.Module, student_config=None, transfer: TransferSet | None = None) -> nn.Module:
    """The run's loss: ``hard`` itself without a teacher, else the distillation loss around it; with
    ``layer_weight`` > 0 its layer maps are shaped from the student's config (layers, hidden size) and the
    transfer set's teacher layers."""
    if not enabled(cfg_distill):
        return hard
    weight, temperature = cfg_distill.kd_weight, cfg_distill.temperature
    if not (isinstance(weight, (int, float)) and 0 <= weight <= 1):
        raise ConfigError(f"distill.kd_weight must be a number in [0, 1], got {weight!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ConfigError(f"distill.temperature must be a number > 0, got {temperature!r}")
    layers = None
    if layer_weight(cfg_distill) > 0:
        teacher_layers, teacher_width = transfer.teacher_layers.shape[1:]  # asked for whenever layer_weight > 0
        layers = LayerMatch(student_config.num_hidden_layers, student_config.hidden_size, teacher_layers, teacher_width)
    return DistillationLoss(
        hard,
        float(weight),
        float(temperature),
        relation_weight(cfg_distill),
        feature_weight(cfg_distill),
        layer_weight(cfg_distill),
        layers,
    )


def relation_weight(cfg_distill) -> float:
    """``distill.relation_weight`` (0 when the config predates it), checked: a number >= 0."""
    return _term_weight(cfg_distill, "relation_weight")


def feature_weight(cfg_distill) -> float:
    """``distill.feature_weight`` (0 when the config predates it), checked: a number >= 0."""
    return _term_weight(cfg_distill, "feature_weight")


def layer_weight(cfg_distill) -> float:
    """``distill.layer_weight`` (0 when the config predates it), checked: a number >= 0."""
    return _term_weight(cfg_distill, "layer_weight")


def _term_weight(cfg_distill, key: str) -> float:
    weight = cfg_distill.get(key, 0.0)
    if isinstance(weight, bool) or not (isinstance(weight, (int, float)) and weight >= 0):
        raise ConfigError(f"distill.{key} must be a number >= 0, got {weight!r}")
    return float(weight)


def check_student_width(cfg_distill, transfer: TransferSet, width: int) -> None:
    """With ``feature_weight`` > 0 the student's vectors are compared with the teacher's one by one, so
    the two must be equally wide (``width``: the student's hidden size); refused in one line otherwise,
    before any training step (the teacher's scores stay cached)."""
    weight = feature_weight(cfg_distill)
    if weight == 0:
        return
    teacher_width = transfer.teacher_embeddings.shape[1]  # asked for whenever feature_weight > 0
    if teacher_width != width:
        raise ConfigError(
            f"distill.feature_weight={weight:g} compares the student's vectors with the teacher's, but the student "
            f"is {width} wide and the teacher {teacher_width}: take a student of the teacher's kind (an MPNet "
            "teacher: model=mpnet model.keep_layers=6) or distill.relation_weight, which works across widths"
        )


# --------------------------------------------------------------- the transfer set


def enabled(cfg_distill) -> bool:
    """True when the run has a teacher; a missing one (``teacher: ???``) is a one-line error."""
    if cfg_distill is None:
        return False
    try:
        teacher = cfg_distill.teacher
    except (MissingMandatoryValue, InterpolationToMissingValueError):
        raise ConfigError(f"distill: name the teacher: {USAGE}") from None
    return teacher is not None


def transfer_set(cfg, splits: Splits) -> TransferSet:
    """The run's training rows plus ``distill.transfer_rows`` generated ones, with the teacher's logits
    (from the cache when this teacher has scored these texts before). Logs what it used."""
    cfg_distill = cfg.distill
    extra = _extra_rows(cfg, splits)
    frame = pd.concat([splits.train[["text", "label"]], extra], ignore_index=True)
    names = teacher_names(cfg_distill)
    run_ids = [_teacher_run_id(name) for name in names]
    twice = sorted({run_id for run_id in run_ids if run_ids.count(run_id) > 1})
    if twice:  # averaging a run with itself would only weigh it more: a mistake in the list, not a recipe
        raise ConfigError(f"teacher={_listed(names)}: run {twice[0]} is named twice; an ensemble needs distinct runs")
    for key in ("feature_weight", "layer_weight"):  # each member's vectors lie in a space of its own
        if len(names) > 1 and _term_weight(cfg_distill, key) > 0:
            raise ConfigError(
                f"distill.{key} compares the student's vectors with one teacher's; teacher={_listed(names)} is an "
                "ensemble: name one teacher, or use distill.relation_weight (similarities average across teachers)"
            )
    precision = resolve_precision(cfg_distill.teacher_precision, resolve_device(cfg.trainer.device))
    kinds = [kind for kind, wanted in _VECTOR_KINDS.items() if wanted(cfg_distill)]
    start = time.perf_counter()
    texts, digest = frame["text"], _texts_digest(frame["text"], precision)  # hashed once for every teacher
    cache = Path(cfg.paths.cache)
    scored = [
        _teacher_scores(cfg, name, _cache_path(cache, run_id, digest), texts, precision, kinds)
        for name, run_id in zip(names, run_ids)
    ]
    logits = ensemble_logits([scores.logits for scores in scored])
    embeddings = ensemble_embeddings([scores.vectors["head"] for scores in scored]) if "head" in kinds else None
    layers = torch.from_numpy(scored[0].vectors["layers"]) if "layers" in kinds else None  # one teacher (above)
    hit = all(scores.cached for scores in scored)
    teacher_labels = (logits >= 0).astype(int)
    mlflow.log_params(
        {
            "distill.teacher_run": ",".join(run_ids),
            "distill.teachers": len(run_ids),
            "distill.transfer_rows_used": len(frame),
            "distill.generated_rows_used": len(extra),
        }
    )
    mlflow.set_tag("distill.teacher_cache", "hit" if hit else "computed")
    mlflow.log_metrics(
        {
            "distill_teacher_seconds": time.perf_counter() - start,
            # how far the soft targets are from the labels: the teacher's accuracy on the transfer set at 0.5
            "distill_teacher_label_agreement": float((teacher_labels == frame["label"].to_numpy()).mean()),
        }
    )
    return TransferSet(frame, torch.tensor(logits, dtype=torch.float32), run_ids, hit, embeddings, layers)


# The teacher's vectors a term needs, by TextVectors kind: "head" (what its head reads: the relation and
# feature terms) and "layers" (every layer's title vector: the layer term)
_VECTOR_KINDS = {
    "head": lambda cfg_distill: relation_weight(cfg_distill) > 0 or feature_weight(cfg_distill) > 0,
    "layers": lambda cfg_distill: layer_weight(cfg_distill) > 0,
}


def teacher_names(cfg_distill) -> list[str]:
    """``distill.teacher`` as a list: one teacher, or the runs of an ensemble (``teacher=[a,b,c]``)."""
    teacher = cfg_distill.teacher
    names = [str(name) for name in teacher] if OmegaConf.is_list(teacher) else [str(teacher)]
    if not names:
        raise ConfigError(f"teacher=[]: name at least one teacher: {USAGE}")
    return names


def ensemble_logits(per_teacher: list[np.ndarray]) -> np.ndarray:
    """One teacher's logits as they are; several teachers' probabilities averaged (the usual ensemble,
    as in Hinton et al.) and turned back into a logit. Averaging probabilities rather than logits keeps
    one over-confident teacher from outvoting the others."""
    if len(per_teacher) == 1:
        return per_teacher[0]
    probs = np.mean([1 / (1 + np.exp(-logits.astype(np.float64))) for logits in per_teacher], axis=0)
    return _logits(probs)


def ensemble_embeddings(per_teacher: list[np.ndarray]) -> torch.Tensor:
    """The teachers' embeddings, each row made unit length, side by side, each scaled by 1/sqrt(n): a
    dot product of two such rows is the teachers' mean cosine similarity of the two titles."""
    scale = 1 / np.sqrt(len(per_teacher))
    unit = [vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12) * scale for vectors in per_teacher]
    return torch.tensor(np.concatenate(unit, axis=1), dtype=torch.float32)


@dataclass
class TeacherScores:
    logits: np.ndarray  # [rows]
    # by kind, when asked for: "head" [rows, the teacher's width] float32, "layers" [rows, layers, width] float16
    vectors: dict[str, np.ndarray]
    cached: bool  # everything asked for came from the cache


def _teacher_scores(cfg, name: str, path: Path, texts: pd.Series, precision: str, kinds: list[str]) -> TeacherScores:
    """One teacher's logits (and the vectors of ``kinds``) of ``texts``, from its cache files ``path``
    and ``_vectors_path(path, kind)`` (then its weights are not even downloaded) or computed and cached
    there; the files are per teacher run, so ensembles share them."""
    paths = {kind: _vectors_path(path, kind) for kind in kinds}
    if path.is_file() and all(p.is_file() for p in paths.values()):
        log.info("distill: teacher %s: scores of %d rows from %s", name, len(texts), path)
        return TeacherScores(np.load(path), {kind: np.load(p) for kind, p in paths.items()}, True)
    log.info("distill: the teacher (%s) scores %d transfer rows once; cached in %s", name, len(texts), path)
    logits, vectors = _score(cfg, name, texts.tolist(), precision, kinds)
    for kind, values in vectors.items():
        _save_atomic(paths[kind], values)
    _save_atomic(path, logits)
    return TeacherScores(logits, vectors, False)


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"[{','.join(names)}]"


def _teacher_run_id(teacher: str) -> str:
    """The training run of ``teacher`` (a run id, or a registered model read from its metadata alone)."""
    if RUN_ID.fullmatch(teacher):
        return teacher
    from lib.inference import model_uri

    try:
        return mlflow.models.get_model_info(model_uri(teacher)).run_id
    except (MlflowException, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"teacher={teacher}: cannot find that model in {redact(mlflow.get_tracking_uri())} ({first_line})"
        ) from None


def _score(
    cfg, teacher: str, texts: list[str], precision: str, kinds: list[str] = ()
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The teacher's logit (log P(correct) - log P(wrong)) of every text, and its vectors of every text
    by kind: "head" (what its head reads, float32) and "layers" (each layer's mean, unit length, float16:
    half the memory, and the layer term reads directions only); one pass over the texts per kind."""
    from lib.inference import load_predictor  # inference imports the pyfunc model: only when distilling

    named_by = "run" if RUN_ID.fullmatch(teacher) else "model"
    try:
        predictor = load_predictor(**{named_by: teacher}, device=cfg.trainer.device, precision=precision)
    except UserError as err:
        raise ConfigError(f"teacher={teacher}: {err}") from None
    batch_size, vectors = cfg.distill.teacher_batch_size, {}
    for kind in kinds or [None]:
        probs, values = predictor.score(
            texts, batch_size=batch_size, progress=True, embeddings=kind is not None, pooled_as=kind or "head"
        )
        if kind == "head":
            vectors[kind] = values.astype(np.float32)
        elif kind == "layers":
            vectors[kind] = _unit_float16(values)
    return _logits(probs), vectors


def _unit_float16(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to unit length along the last axis, as float16 (unit vectors fit it well)."""
    norms = np.linalg.norm(values, axis=-1, keepdims=True).clip(min=1e-12)
    return (values / norms).astype(np.float16)


def _extra_rows(cfg, splits: Splits) -> pd.DataFrame:
    """``transfer_rows`` rows of the run's corpus built with another seed, none from a held-out record
    or equal to a held-out text; (empty) when transfer_rows is 0."""
    rows = cfg.distill.transfer_rows
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise ConfigError(f"distill.transfer_rows must be a whole number >= 0, got {rows!r}")
    if rows == 0:
        if cfg.distill.get("transfer_data"):  # settings for rows that are never generated: say so, not ignore them
            raise ConfigError(
                "distill.transfer_data sets up generated transfer rows, but distill.transfer_rows=0 generates "
                "none; set distill.transfer_rows > 0 or drop distill.transfer_data"
            )
        return pd.DataFrame({"text": [], "label": []})
    if cfg.data.name != "titles":
        raise ConfigError(
            f"distill.transfer_rows={rows} generates rows of the default corpus (data=titles), not data="
            f"{cfg.data.name}; set distill.transfer_rows=0 to distil on the training rows alone"
        )
    held_out = pd.concat([_corpus_file(corpus_dir_of(cfg), name) for name in ("val", "test", "cross_source")])
    generated = generated_corpus(cfg, rows)
    generated = generated[~generated["group"].isin(set(held_out["group"]))][["text", "label"]]
    for frame in [splits.train, splits.val, splits.test, *splits.extra.values()]:
        generated, _ = remove_overlap(generated, frame)  # the training rows too: no row twice
    log.info("distill: %d generated transfer rows (of %d) outside every held-out record and text", len(generated), rows)
    return generated.reset_index(drop=True)


def corpus_dir_of(cfg) -> Path:
    """The folder of the run's own corpus (data=titles)."""
    from lib.corpus import corpus_dir

    return corpus_dir(OmegaConf.to_container(cfg.data, resolve=True), Path(cfg.paths.cache))


def generated_corpus(cfg, rows: int) -> pd.DataFrame:
    """``rows`` rows (train, val and test splits together) of the run's corpus recipe with another seed;
    built once and cached like any corpus. Its own cross-source split is not used: the smallest is built."""
    from lib.corpus import SPLITS, ensure_corpus

    data = transfer_data_settings(cfg)
    spec = {**data, "seed": data["seed"] + TRANSFER_SEED_OFFSET, "size": rows}
    spec["cross_source"] = {**data["cross_source"], "size": MIN_CORPUS_SIZE}
    folder = ensure_corpus(spec, Path(cfg.paths.cache))
    return pd.concat([_corpus_file(folder, name) for name in SPLITS], ignore_index=True)


def transfer_data_settings(cfg) -> dict:
    """The run's ``data`` settings with ``distill.transfer_data`` merged in: the transfer corpus's recipe
    (before its seed and size). A key that is no ``data.*`` setting is refused in one line."""
    changes = cfg.distill.get("transfer_data") or {}
    if not OmegaConf.is_dict(changes) and not isinstance(changes, dict):
        raise ConfigError(f"distill.transfer_data must map data.* settings to values, got {changes!r}")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    changes = OmegaConf.to_container(OmegaConf.create(changes), resolve=True)
    unknown = sorted(set(changes) - set(data) - {"name"})
    if unknown or changes.get("name", data["name"]) != data["name"]:
        raise ConfigError(
            f"distill.transfer_data: {', '.join(unknown) or 'name'} is no setting of data={data['name']} that "
            "a transfer corpus can change (e.g. +distill.transfer_data.extra_sources=[hepcrawl])"
        )
    return OmegaConf.to_container(OmegaConf.merge(data, changes), resolve=True)


def _corpus_file(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv", keep_default_na=False)


def _logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), PROB_EPS, 1 - PROB_EPS)
    if np.isnan(p).any():
        raise UserError("distill: the teacher left some transfer rows unscored (empty texts)")
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _texts_digest(texts: pd.Series, precision: str) -> str:
    return hashlib.sha256("\n".join([precision, *texts]).encode()).hexdigest()[:16]


def _cache_path(cache: Path, run_id: str, digest: str) -> Path:
    """Keyed by the teacher run and ``_texts_digest`` of the transfer texts and the precision."""
    return cache / "distill" / f"{run_id}-{digest}.npy"


def _vectors_path(logits_path: Path, kind: str) -> Path:
    """The teacher's vectors of the same texts beside its logits: what its head reads ("head") or its
    layers' title vectors ("layers")."""
    suffix = {"head": "head-embeddings", "layers": "layer-means"}[kind]
    return logits_path.with_name(f"{logits_path.stem}-{suffix}.npy")


def _save_atomic(path: Path, values: np.ndarray) -> None:
    """Written under another name and renamed: an interrupted run leaves no half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, values)
    os.replace(tmp, path)
