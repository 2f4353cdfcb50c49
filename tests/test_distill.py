"""Knowledge distillation (lib/distill.py, conf/distill, +experiment=distill teacher=...): the loss, the
settings' checks, a student that learns from its teacher alone, the teacher's cached scores, and a
transfer set that keeps every held-out record and text out."""

import csv
import random

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from conftest import toy_learning_run, write_toy_csv
from entry_points import run_entry_point
from lib import distill
from lib.data import Splits, normalised
from lib.errors import ConfigError
from lib.run import run_training


def test_the_loss_is_the_hard_loss_plus_the_temperature_scaled_kl():
    torch.manual_seed(0)
    logits, labels, teacher = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0]), torch.randn(6) * 3
    hard = nn.CrossEntropyLoss()
    loss = distill.DistillationLoss(hard, weight=0.3, temperature=2.0)

    teacher_probs = torch.softmax(torch.stack([torch.zeros(6), teacher], -1) / 2.0, -1)
    kl = (teacher_probs * (teacher_probs.log() - F.log_softmax(logits / 2.0, -1))).sum(-1).mean()
    expected = 0.7 * hard(logits, labels) + 0.3 * 4.0 * kl
    torch.testing.assert_close(loss(logits, labels, teacher), expected)
    # validation and test batches carry no teacher: the hard loss alone, comparable across runs
    torch.testing.assert_close(loss(logits, labels), hard(logits, labels))
    # a student that already says what the teacher says has nothing left to learn from it
    same = torch.stack([torch.zeros(6), teacher], -1)
    only_soft = distill.DistillationLoss(hard, weight=1.0, temperature=2.0)
    torch.testing.assert_close(only_soft(same, labels, teacher), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_the_relation_term_asks_the_student_for_the_teachers_similarities_in_its_own_width():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    teacher_logits, teacher = torch.randn(4), torch.randn(4, 8)  # the teacher 8 wide, the student 3
    student = torch.randn(4, 3, requires_grad=True)
    hard = nn.CrossEntropyLoss()
    loss = distill.DistillationLoss(hard, weight=0.5, temperature=2.0, relation_weight=3.0)
    without = distill.DistillationLoss(hard, weight=0.5, temperature=2.0)(logits, labels, teacher_logits)

    cos = lambda x: F.cosine_similarity(x.unsqueeze(1), x.unsqueeze(0), dim=-1)  # noqa: E731
    expected = ((cos(student) - cos(teacher)) ** 2).mean()
    got = loss(logits, labels, teacher_logits, student_embeddings=student, teacher_embeddings=teacher)
    torch.testing.assert_close(got, without + 3.0 * expected)
    got.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0  # it trains the student's embeddings
    # a student that finds every pair as alike as the teacher does (any scale, any width) owes nothing
    same = torch.cat([teacher, torch.zeros(4, 2)], dim=1) * 5
    assert distill.similarity_loss(same, teacher).item() == pytest.approx(0.0, abs=1e-6)
    # validation batches carry no embeddings: the hard loss alone, as before
    torch.testing.assert_close(loss(logits, labels), hard(logits, labels))


def test_the_feature_term_asks_the_student_to_point_each_title_where_the_teacher_does():
    torch.manual_seed(0)
    logits, labels, teacher_logits = torch.randn(4, 2), torch.tensor([0, 1, 1, 0]), torch.randn(4)
    teacher = torch.randn(4, 6)
    student = torch.randn(4, 6, requires_grad=True)
    hard = nn.CrossEntropyLoss()
    loss = distill.DistillationLoss(hard, weight=0.5, temperature=2.0, feature_weight=2.0)
    without = distill.DistillationLoss(hard, weight=0.5, temperature=2.0)(logits, labels, teacher_logits)

    expected = sum(1 - torch.dot(s, t) / (s.norm() * t.norm()) for s, t in zip(student, teacher)) / 4
    got = loss(logits, labels, teacher_logits, student_embeddings=student, teacher_embeddings=teacher)
    torch.testing.assert_close(got, without + 2.0 * expected)
    got.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0  # it trains the student's vectors
    # pointing the teacher's way is all it asks (any length); the opposite way costs the most, 2 per title
    assert distill.direction_loss(teacher * 3, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert distill.direction_loss(-teacher, teacher).item() == pytest.approx(2.0, abs=1e-6)
    # the similarities alone (relation_weight) do not see a rotation that the directions do
    rotation = torch.linalg.qr(torch.randn(6, 6))[0]
    assert distill.similarity_loss(teacher @ rotation, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert distill.direction_loss(teacher @ rotation, teacher).item() > 0.1


def test_student_layers_learn_from_evenly_paired_teacher_layers_the_last_from_the_last():
    assert distill.layer_pairs(4, 12) == [2, 5, 8, 11]  # the 4-layer MiniLM student of MPNet: layers 3, 6, 9, 12
    assert distill.layer_pairs(6, 12) == [1, 3, 5, 7, 9, 11]
    assert distill.layer_pairs(3, 12) == [3, 7, 11]
    assert distill.layer_pairs(2, 2) == [0, 1]
    assert distill.layer_pairs(4, 2) == [0, 0, 1, 1]  # a deeper student shares teacher layers, none is skipped


def test_the_layer_term_maps_each_student_layer_into_the_teachers_width_and_trains_the_maps():
    torch.manual_seed(0)
    logits, labels, teacher_logits = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1]), torch.randn(5)
    student = torch.randn(5, 2, 3, requires_grad=True)  # 2 layers, 3 wide
    teacher = torch.randn(5, 4, 8)  # 4 layers, 8 wide
    match = distill.LayerMatch(student_layers=2, student_width=3, teacher_layers=4, teacher_width=8)
    assert match.pairs == [1, 3]
    hard = nn.CrossEntropyLoss()
    loss = distill.DistillationLoss(hard, weight=0.5, temperature=2.0, layer_weight=2.0, layers=match)
    without = distill.DistillationLoss(hard, weight=0.5, temperature=2.0)(logits, labels, teacher_logits)

    expected = (
        sum(
            distill.direction_loss(linear(student[:, i]), teacher[:, j])
            for i, (linear, j) in enumerate(zip(match.maps, [1, 3]))
        )
        / 2
    )
    got = loss(logits, labels, teacher_logits, student_layers=student, teacher_layers=teacher)
    torch.testing.assert_close(got, without + 2.0 * expected)
    got.backward()
    assert student.grad.abs().sum() > 0  # it trains the student's layers
    assert all(linear.weight.grad.abs().sum() > 0 for linear in match.maps)  # and the maps
    # a student layer whose map sends each title where the paired teacher layer points owes nothing
    fitted = distill.LayerMatch(1, 8, 1, 8)
    with torch.no_grad():
        fitted.maps[0].weight.copy_(torch.eye(8) * 3)
        fitted.maps[0].bias.zero_()
    assert fitted(teacher[:, 3:], teacher[:, 3:]).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="3 student layers, maps for 2"):
        match(torch.randn(5, 3, 3), teacher)
    # validation batches carry no layers: the hard loss alone
    torch.testing.assert_close(loss(logits, labels), hard(logits, labels))


def test_the_teachers_layers_are_cached_as_unit_float16_vectors_and_need_one_teacher(make_cfg, monkeypatch, tmp_path):
    import lib.inference

    train = pd.DataFrame({"text": ["one title", "two title", "three title"], "label": [1, 0, 1]})
    splits = Splits(train, pd.DataFrame(), pd.DataFrame())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    asked = []

    class Teacher:  # Predictor.score's answer for pooled_as="layers": [texts, layers, width]
        def score(self, texts, batch_size, progress, embeddings, pooled_as):
            asked.append((embeddings, pooled_as))
            layers = np.arange(len(texts) * 2 * 3, dtype=np.float32).reshape(len(texts), 2, 3) + 1
            return np.full(len(texts), 0.75), layers if embeddings else None

    monkeypatch.setattr(lib.inference, "load_predictor", lambda **kwargs: Teacher())
    cfg = make_cfg("+experiment=distill", f"teacher={A}", "distill.transfer_rows=0", "distill.layer_weight=1")
    with mlflow.start_run():
        transfer = distill.transfer_set(cfg, splits)
    assert asked == [(True, "layers")] and transfer.teacher_embeddings is None
    layers = transfer.teacher_layers
    assert layers.shape == (3, 2, 3) and layers.dtype == torch.float16
    torch.testing.assert_close(layers.float().norm(dim=-1), torch.ones(3, 2), atol=1e-3, rtol=0)
    assert set(transfer.per_row()) == {"teacher_logits", "teacher_layers"}
    torch.testing.assert_close(transfer.teacher_logits, torch.full((3,), float(np.log(3))))
    (cached,) = (tmp_path / "outputs" / "cache" / "distill").glob(f"{A}-*-layer-means.npy")
    with mlflow.start_run():
        again = distill.transfer_set(cfg, splits)
    assert again.cache_hit and len(asked) == 1 and torch.equal(again.teacher_layers, torch.from_numpy(np.load(cached)))

    ensemble = make_cfg(
        "+experiment=distill", f"teacher=[{A},{B}]", "distill.transfer_rows=0", "distill.layer_weight=1"
    )
    with pytest.raises(ConfigError, match=r"^distill.layer_weight compares the student's vectors with one teacher's"):
        with mlflow.start_run():
            distill.transfer_set(ensemble, splits)


class _StopAfter:
    """checkpoint.stop_on_signals' request, turned on after ``polls`` polls (a SIGTERM without a signal)."""

    def __init__(self, polls: int) -> None:
        self.polls, self.signal_name = polls, "SIGTERM"

    def __bool__(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_the_layer_maps_train_with_the_student_and_an_interrupted_run_resumes_them(
    make_cfg, toy_csv, monkeypatch, tmp_path
):
    import contextlib

    import lib.run
    from lib.errors import TrainingInterrupted

    _fake_teachers(monkeypatch, {A: [3.0, -3.0] * 500})  # 3 layers, 3 wide; tiny_bert: 2 layers, 64 wide
    built, started = [], []
    wrap = distill.wrap_loss

    def spied_wrap(*args, **kwargs):
        loss = wrap(*args, **kwargs)
        built.append((loss, {k: v.clone() for k, v in loss.state_dict().items() if "maps" in k}))
        return loss

    train = lib.run.train

    def spied_train(parts, *args, **kwargs):
        started.append({k: v.clone() for k, v in parts.loss_fn.state_dict().items() if "maps" in k})
        assert any(group["name"] == "beside" for group in parts.optimizer.param_groups)
        return train(parts, *args, **kwargs)

    monkeypatch.setattr(distill, "wrap_loss", spied_wrap)
    monkeypatch.setattr(lib.run, "train", spied_train)
    monkeypatch.setattr(lib.run.checkpoint, "stop_on_signals", lambda: contextlib.nullcontext(_StopAfter(6)))
    run = [*toy_learning_run(toy_csv), "+experiment=distill", f"teacher={A}", "distill.transfer_rows=0"]
    cfg = make_cfg(*run, "distill.layer_weight=1.0")
    with pytest.raises(TrainingInterrupted) as stopped:
        run_training(cfg)
    (loss, initial), saved = built[0], torch.load(stopped.value.path, weights_only=True)
    assert loss.layers.pairs == [1, 2] and loss.layers.maps[0].weight.shape == (3, 64)
    # six optimiser steps moved the maps, and the checkpoint holds them as they were at the stop
    assert all(not torch.equal(saved["loss"][k], initial[k]) for k in initial)
    monkeypatch.setattr(lib.run.checkpoint, "stop_on_signals", lambda: contextlib.nullcontext(_StopAfter(10**6)))
    run_training(make_cfg(*run, "distill.layer_weight=1.0", f"trainer.resume={stopped.value.path}"))
    assert set(started[1]) == set(initial) and all(torch.equal(started[1][k], saved["loss"][k]) for k in initial)


def test_the_feature_term_needs_a_student_as_wide_as_one_teacher(make_cfg, monkeypatch, tmp_path):
    train = pd.DataFrame({"text": ["one title", "two title", "three title"], "label": [1, 0, 1]})
    splits = Splits(train, pd.DataFrame(), pd.DataFrame())
    scored = _fake_teachers(monkeypatch, {A: [1.0, -1.0, 2.0], B: [0.5, 0.0, -3.0]})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = make_cfg("+experiment=distill", f"teacher={A}", "distill.transfer_rows=0", "distill.feature_weight=0.5")
    with mlflow.start_run():
        transfer = distill.transfer_set(cfg, splits)
    assert transfer.teacher_embeddings.shape == (3, 3)  # the feature term alone asks for the teacher's vectors
    distill.check_student_width(cfg.distill, transfer, 3)  # as wide: accepted
    with pytest.raises(ConfigError) as err:
        distill.check_student_width(cfg.distill, transfer, 64)
    assert str(err.value) == (
        "distill.feature_weight=0.5 compares the student's vectors with the teacher's, but the student is 64 wide "
        "and the teacher 3: take a student of the teacher's kind (an MPNet teacher: model=mpnet "
        "model.keep_layers=6) or distill.relation_weight, which works across widths"
    )
    # without the feature term the widths may differ (the relation term compares similarities)
    other = make_cfg("+experiment=distill", f"teacher={A}", "distill.transfer_rows=0", "distill.relation_weight=1")
    distill.check_student_width(other.distill, transfer, 64)

    # an ensemble's members point titles in unrelated spaces: refused before any teacher scores
    ensemble = make_cfg(
        "+experiment=distill", f"teacher=[{A},{B}]", "distill.transfer_rows=0", "distill.feature_weight=1"
    )
    with pytest.raises(ConfigError) as err, mlflow.start_run():
        distill.transfer_set(ensemble, splits)
    assert str(err.value) == (
        f"distill.feature_weight compares the student's vectors with one teacher's; teacher=[{A},{B}] is an "
        "ensemble: name one teacher, or use distill.relation_weight (similarities average across teachers)"
    )
    assert scored == [A]


def test_a_student_narrower_than_its_teacher_is_refused_before_training(make_cfg, toy_csv, monkeypatch, tmp_path):
    _fake_teachers(monkeypatch, {A: [0.0] * 1000})  # vectors 3 wide; tiny_bert is 64 wide
    trained = []
    monkeypatch.setattr("lib.run._fit", lambda *args, **kwargs: trained.append(1))
    cfg = make_cfg(
        *toy_learning_run(toy_csv),
        "+experiment=distill",
        f"teacher={A}",
        "distill.transfer_rows=0",
        "distill.feature_weight=1.0",
    )
    with pytest.raises(ConfigError, match=r"^distill.feature_weight=1 compares .* the student is 64 wide"):
        run_training(cfg)
    assert not trained


def test_the_teachers_embeddings_are_cached_beside_its_logits_and_an_ensemble_averages_its_similarities(
    make_cfg, tmp_path, monkeypatch
):
    train = pd.DataFrame({"text": ["one title", "two title", "three title"], "label": [1, 0, 1]})
    splits = Splits(train, pd.DataFrame(), pd.DataFrame())
    scored = _fake_teachers(monkeypatch, {A: [1.0, -1.0, 2.0], B: [0.5, 0.0, -3.0]})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def transfer(teachers, weight):
        cfg = make_cfg(
            "+experiment=distill", f"teacher={teachers}", "distill.transfer_rows=0", f"distill.relation_weight={weight}"
        )
        with mlflow.start_run():
            return distill.transfer_set(cfg, splits)

    assert transfer(A, 0).teacher_embeddings is None and scored == [A]  # logits only: no embeddings asked for
    alone = transfer(A, 1.0)  # the logits are cached, the embeddings not: A scores once more, for both
    assert scored == [A, A] and not alone.cache_hit and alone.teacher_embeddings.shape == (3, 4)
    assert set(alone.per_row()) == {"teacher_logits", "teacher_embeddings"}
    assert transfer(A, 2.0).cache_hit and scored == [A, A]  # now both come from the cache
    pair = transfer(f"[{A},{B}]", 1.0)
    assert scored == [A, A, B] and pair.teacher_embeddings.shape == (3, 4 + 5)
    # a dot product of two rows is the two teachers' mean cosine similarity of the two titles
    cache = tmp_path / "outputs" / "cache" / "distill"
    a, b = (torch.tensor(np.load(next(cache.glob(f"{run}-*-embeddings.npy")))) for run in (A, B))
    cos = lambda x: F.cosine_similarity(x.unsqueeze(1), x.unsqueeze(0), dim=-1)  # noqa: E731
    e = pair.teacher_embeddings
    torch.testing.assert_close(e @ e.T, (cos(a) + cos(b)) / 2)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("kd_weight", 1.5, "distill.kd_weight must be a number in [0, 1], got 1.5"),
        ("temperature", 0, "distill.temperature must be a number > 0, got 0"),
        ("relation_weight", -1, "distill.relation_weight must be a number >= 0, got -1"),
        ("feature_weight", "-0.5", "distill.feature_weight must be a number >= 0, got -0.5"),
        ("layer_weight", -2, "distill.layer_weight must be a number >= 0, got -2"),
    ],
)
def test_bad_settings_are_one_line(make_cfg, key, value, message):
    cfg = make_cfg("+experiment=distill", "teacher=0123456789abcdef0123456789abcdef", f"distill.{key}={value}")
    with pytest.raises(ConfigError) as err:
        distill.wrap_loss(cfg.distill, nn.CrossEntropyLoss())
    assert str(err.value) == message


# The marks at corpus version 4's measured rates, as every documented marked-transfer command spells them
MARKED = {
    "positive_noise.scripts": 0.6, "positive_noise.symbols": 0.6, "positive_noise.glyphs": 0.08,
    "positive_noise.hyphen_break": 0.03, "positive_noise.small_caps": 0.03, "positive_noise.full_stop": 0.08,
    "positive_noise.marker": 0.12, "title_forms": 0.06,
}  # fmt: skip


def test_distill_marked_is_the_documented_marked_transfer_set(make_cfg):
    # distill=marked must build the very transfer corpus the measured students learnt from (so a teacher's
    # scores cached by those commands are found again), and change nothing else
    marked = make_cfg("+experiment=distill", "distill=marked", "teacher=x")
    spelled = make_cfg(
        "+experiment=distill", "teacher=x", "distill.transfer_rows=16000",
        *(f"+distill.transfer_data.{key}={rate}" for key, rate in MARKED.items()),
    )  # fmt: skip
    assert distill.transfer_data_settings(marked) == distill.transfer_data_settings(spelled)
    assert OmegaConf.to_container(marked.distill) == OmegaConf.to_container(spelled.distill)
    assert distill.transfer_data_settings(marked) != distill.transfer_data_settings(
        make_cfg("+experiment=distill", "teacher=x")
    )
    # the student's own corpus is the default one: only the transfer rows carry the marks
    assert OmegaConf.to_container(marked.data) == OmegaConf.to_container(make_cfg().data)


def test_generated_rows_need_the_default_corpus(make_cfg, toy_csv):
    cfg = make_cfg("data=csv", f"data.train={toy_csv}", "+experiment=distill", "teacher=x")
    with pytest.raises(ConfigError, match=r"^distill.transfer_rows=8000 generates rows of the default corpus"):
        distill.transfer_set(cfg, Splits(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()))


@pytest.mark.slow
def test_a_distillation_without_a_teacher_is_refused_before_any_run(tmp_path):
    result = run_entry_point("train.py", f"paths.outputs={tmp_path}", "+experiment=distill")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: distill: name the teacher: python experiments/train.py +experiment=distill "
        "teacher=<run id | models:/name@alias>"
    )
    assert not (tmp_path / "mlflow.db").exists()


def _relabelled_at_random(source, path, seed=0):
    """The toy set with every label drawn at random: on its own it teaches nothing."""
    rows = list(csv.reader(open(source, encoding="utf-8")))[1:]
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([(text, rng.randint(0, 1)) for text, _ in rows])
    return path


@pytest.mark.slow
def test_a_student_learns_from_the_teacher_alone_and_the_teachers_scores_are_computed_once(
    make_cfg, tmp_path, monkeypatch
):
    # The teacher learns the toy set (test accuracy >= 0.9) and is registered as toy-teacher@champion.
    toy = write_toy_csv(tmp_path / "toy.csv")
    teacher_metrics = run_training(make_cfg(*toy_learning_run(toy), "tracking.log_model=true"))
    assert teacher_metrics["test_accuracy"] >= 0.9
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    (teacher,) = client.search_runs(client.get_experiment_by_name("titlesweep").experiment_id)
    version = mlflow.register_model(f"runs:/{teacher.info.run_id}/pyfunc_model", "toy-teacher")
    client.set_registered_model_alias("toy-teacher", "champion", version.version)

    # The student's training labels are noise; validation and test are the teacher's (correct) files.
    # Learning only from the teacher (kd_weight=1), it must still tell the two vocabularies apart.
    student_data = [
        "data=csv",
        f"data.train={_relabelled_at_random(write_toy_csv(tmp_path / 'more.csv', seed=1), tmp_path / 'noise.csv')}",
        f"data.val={write_toy_csv(tmp_path / 'val.csv', n_per_class=60, seed=2)}",
        f"data.test={write_toy_csv(tmp_path / 'test.csv', n_per_class=100, seed=3)}",
    ]
    student = [*toy_learning_run(toy), *student_data, "+experiment=distill", "distill.kd_weight=1.0"]
    # The first student also learns the teacher's similarities, directions and layers: every training batch
    # hands the terms the student's embeddings and layer vectors (the tiny model's width) beside the
    # teacher's cached ones. (The direction term's weight is small: from random weights, a 2-layer student
    # made to point its vectors the tiny teacher's way stopped learning the task at feature_weight 0.1, 0.3
    # and 1.0, val accuracy 0.5.)
    calls = {"similarity_loss": [], "direction_loss": []}
    layer_calls = []
    match = distill.LayerMatch.forward

    def recorded_layers(self, student_layers, teacher_layers):
        layer_calls.append((student_layers.shape, teacher_layers.shape, teacher_layers.dtype))
        return match(self, student_layers, teacher_layers)

    monkeypatch.setattr(distill.LayerMatch, "forward", recorded_layers)

    def recorder(name):
        term = getattr(distill, name)

        def recorded(student_embeddings, teacher_embeddings):
            shapes = (student_embeddings.shape, teacher_embeddings.shape, student_embeddings.requires_grad)
            calls[name].append(shapes)
            return term(student_embeddings, teacher_embeddings)

        return recorded

    for name in calls:
        monkeypatch.setattr(distill, name, recorder(name))
    first = run_training(
        make_cfg(
            *student,
            f"teacher={teacher.info.run_id}",
            "distill.transfer_rows=0",
            "distill.relation_weight=0.3",
            "distill.feature_weight=0.03",
            "distill.layer_weight=0.03",
        )
    )
    assert first["test_accuracy"] >= 0.9, first
    # both tiny models: 2 layers, 64 wide; the teacher's layers cached as unit float16 vectors
    assert layer_calls and {(s[1:], t[1:], dtype) for s, t, dtype in layer_calls} == {((2, 64), (2, 64), torch.float16)}
    for recorded in calls.values():
        assert recorded and all(s[0] == t[0] and grad for s, t, grad in recorded)
        assert {(s[1], t[1]) for s, t, _ in recorded} == {(64, 64)}  # conf/model/tiny_bert.yaml's hidden_size

    # With the teacher's scores cached, the teacher model is not loaded at all.
    import lib.inference

    def no_teacher(**kwargs):
        raise AssertionError("the teacher was loaded although its scores are cached")

    monkeypatch.setattr(lib.inference, "load_predictor", no_teacher)
    second = run_training(
        make_cfg(*student, "teacher=models:/toy-teacher@champion", "distill.transfer_rows=0", "trainer.seed=7")
    )
    assert second["test_accuracy"] >= 0.9, second
    runs = client.search_runs(teacher.info.experiment_id, "params.`distill.teacher_run` != ''", order_by=["start_time"])
    assert [r.data.params["distill.teacher_run"] for r in runs] == [teacher.info.run_id] * 2
    assert [r.data.tags["distill.teacher_cache"] for r in runs] == ["computed", "hit"]
    # the teacher's logits, its embeddings and its layers' vectors, one file each
    assert len(list((tmp_path / "outputs" / "cache" / "distill").glob("*.npy"))) == 3


A, B, C = "a" * 32, "b" * 32, "c" * 32  # teacher run ids (the runs themselves are not needed: scores are stubbed)


def _fake_teachers(monkeypatch, logits_of: dict) -> list:
    """``distill._score`` answering each teacher run's fixed logits, and the list of teachers it scored."""
    scored = []

    def score(cfg, teacher, texts, precision, kinds=()):
        scored.append(teacher)
        logits = np.asarray(logits_of[teacher][: len(texts)], dtype=np.float32)
        # vectors of a width that differs per teacher, as MPNet's 768 and MiniLM's 384 do; 3 layers
        width, rng = 2 + len(scored), np.random.default_rng(len(scored))
        shapes = {"head": (len(texts), width), "layers": (len(texts), 3, width)}
        return logits, {kind: rng.normal(size=shapes[kind]).astype(np.float32) for kind in kinds}

    monkeypatch.setattr(distill, "_score", score)
    return scored


def test_an_ensemble_teaches_its_mean_probability_and_caches_each_teacher_once(make_cfg, tmp_path, monkeypatch):
    train = pd.DataFrame({"text": ["one title", "two title", "three title"], "label": [1, 0, 1]})
    splits = Splits(train, pd.DataFrame(), pd.DataFrame())
    logits_of = {A: [4.0, -2.0, 0.5], B: [0.0, -4.0, -0.5], C: [2.0, 2.0, 2.0]}
    scored = _fake_teachers(monkeypatch, logits_of)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def transfer(*teachers):
        cfg = make_cfg("+experiment=distill", f"teacher=[{','.join(teachers)}]", "distill.transfer_rows=0")
        with mlflow.start_run() as run:
            result = distill.transfer_set(cfg, splits)
        return result, mlflow.get_run(run.info.run_id).data

    pair, logged = transfer(A, B)
    probs = (torch.sigmoid(torch.tensor(logits_of[A])) + torch.sigmoid(torch.tensor(logits_of[B]))) / 2
    torch.testing.assert_close(pair.teacher_logits, torch.logit(probs), atol=1e-4, rtol=0)
    assert (pair.teacher_run_ids, scored) == ([A, B], [A, B])
    assert logged.params["distill.teacher_run"] == f"{A},{B}" and logged.params["distill.teachers"] == "2"
    assert logged.tags["distill.teacher_cache"] == "computed"
    # the middle row: A says 0.12 correct, B 0.02; the mean 0.07, not the logits' mean (-3.0, i.e. 0.05)
    assert torch.sigmoid(pair.teacher_logits[1]).item() == pytest.approx((0.1192 + 0.0180) / 2, abs=1e-3)

    # Each teacher's scores are cached on their own: a new ensemble scores only its new member, and one
    # teacher alone is taught as it is (no averaging), from the cache.
    trio, logged = transfer(C, A, B)
    assert scored == [A, B, C] and logged.tags["distill.teacher_cache"] == "computed"
    assert len(list((tmp_path / "outputs" / "cache" / "distill").glob("*.npy"))) == 3
    alone, logged = transfer(B)
    torch.testing.assert_close(alone.teacher_logits, torch.tensor(logits_of[B]))
    assert scored == [A, B, C] and logged.tags["distill.teacher_cache"] == "hit"
    assert logged.params["distill.teacher_run"] == B and logged.params["distill.teachers"] == "1"


@pytest.mark.parametrize(
    "teachers, message",
    [
        (f"[{A},{B},{A}]", f"teacher=[{A},{B},{A}]: run {A} is named twice; an ensemble needs distinct runs"),
        ("[]", "teacher=[]: name at least one teacher: python experiments/train.py +experiment=distill"),
    ],
)
def test_an_ensemble_naming_a_run_twice_or_none_is_refused_in_one_line(make_cfg, monkeypatch, teachers, message):
    scored = _fake_teachers(monkeypatch, {})
    cfg = make_cfg("+experiment=distill", f"teacher={teachers}", "distill.transfer_rows=0")
    train = pd.DataFrame({"text": ["a title"], "label": [1]})
    with pytest.raises(ConfigError) as err:
        distill.transfer_set(cfg, Splits(train, pd.DataFrame(), pd.DataFrame()))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert scored == []  # refused before any teacher is loaded


@pytest.mark.slow
def test_generated_transfer_rows_keep_every_held_out_record_and_text_out(make_cfg, monkeypatch):
    from lib.data import load_data

    cfg = make_cfg("data.size=300", "data.cross_source.size=100", "+experiment=distill", "teacher=x")
    splits = load_data(cfg)
    cfg.distill.transfer_rows = 400
    extra = distill._extra_rows(cfg, splits)

    assert 300 <= len(extra) <= 400 and set(extra["label"]) == {0, 1}
    main = distill.corpus_dir_of(cfg)
    held_out = pd.concat(pd.read_csv(main / f"{n}.csv", keep_default_na=False) for n in ("val", "test", "cross_source"))
    generated = distill.generated_corpus(cfg, 400)
    rows = generated[generated["text"].isin(extra["text"])]
    assert len(rows) == len(extra)
    assert not set(rows["group"]) & set(held_out["group"])  # no record of a held-out split
    every_other = pd.concat([splits.train, splits.val, splits.test, *splits.extra.values()])
    assert not set(normalised(extra["text"])) & set(normalised(every_other["text"]))

    # Generated rows that are the run's own corpus: every one is a training row or from a held-out record.
    everything = pd.concat(
        pd.read_csv(main / f"{n}.csv", keep_default_na=False) for n in ("train", "val", "test", "cross_source")
    )
    monkeypatch.setattr(distill, "generated_corpus", lambda cfg, rows: everything)
    assert distill._extra_rows(cfg, splits).empty


@pytest.mark.parametrize(
    "override, named",
    [("+distill.transfer_data.nonsense=1", "nonsense"), ("+distill.transfer_data.name=csv", "name")],
)
def test_a_transfer_data_key_that_is_no_data_setting_is_refused_in_one_line(make_cfg, override, named):
    cfg = make_cfg("+experiment=distill", "teacher=x", override)
    with pytest.raises(ConfigError, match=rf"^distill.transfer_data: {named} is no setting of data=titles"):
        distill.transfer_data_settings(cfg)


def test_transfer_data_without_transfer_rows_is_refused_in_one_line(make_cfg):
    # settings for generated rows when none are generated would be silently ignored
    cfg = make_cfg("+experiment=distill", "teacher=x", "distill.transfer_rows=0", "+distill.transfer_data.nonsense=1")
    refusal = r"^distill.transfer_data sets up generated transfer rows, but distill.transfer_rows=0 generates none"
    with pytest.raises(ConfigError, match=refusal):
        distill.transfer_set(cfg, Splits(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()))
    assert distill._extra_rows(make_cfg("+experiment=distill", "teacher=x", "distill.transfer_rows=0"), None).empty


@pytest.mark.slow
def test_transfer_data_changes_the_generated_rows_only(make_cfg):
    # Every generated positive gets a closing full stop (rate 0 by default); the run's own corpus is unchanged.
    small = ("data.size=300", "data.cross_source.size=100", "+experiment=distill", "teacher=x")
    plain = make_cfg(*small)
    changed = make_cfg(*small, "+distill.transfer_data.positive_noise.full_stop=1.0")
    assert distill.corpus_dir_of(changed) == distill.corpus_dir_of(plain)
    settings = distill.transfer_data_settings(changed)
    assert settings["positive_noise"]["full_stop"] == 1.0 and settings["positive_noise"]["marker"] == 0  # merged
    assert distill.transfer_data_settings(plain) == OmegaConf.to_container(plain.data, resolve=True)
    generated = distill.generated_corpus(changed, 400)
    assert generated[generated["label"] == 1]["text"].str.endswith(".").mean() > 0.95
