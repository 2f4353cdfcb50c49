"""model.keep_layers: a shallower encoder made of some of the pretrained layers, whose weights are
the pretrained layers' own, which trains, and which predict.py and the pyfunc model reload as the
smaller model it is."""

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import toy_learning_run
from lib import inference
from lib.errors import ConfigError
from lib.models import build_model, keep_encoder_layers
from lib.paths import CONF_DIR
from lib.run import run_training


def minilm(keep=None):
    cfg = OmegaConf.load(CONF_DIR / "model" / "minilm.yaml")
    cfg.keep_layers = keep
    model, tokenizer = build_model(cfg, [], CONF_DIR)  # a package model: the cache dir is not used
    return model.eval(), tokenizer


def encoder_layer_weights(model) -> list[dict]:
    return [{k: v.clone() for k, v in layer.state_dict().items()} for layer in model.base_model.encoder.layer]


@pytest.mark.parametrize(
    ("keep", "expected"), [(3, [0, 2, 5]), (2, [0, 5]), (1, [5]), ([1, 2], [1, 2]), (6, list(range(6)))]
)
def test_kept_layers_are_the_pretrained_ones(keep, expected):
    full, _ = minilm()
    cut, _ = minilm(keep)
    assert cut.config.num_hidden_layers == len(cut.base_model.encoder.layer) == len(expected)
    full_layers = encoder_layer_weights(full)
    for kept, index in zip(encoder_layer_weights(cut), expected, strict=True):
        for name, weight in kept.items():
            torch.testing.assert_close(weight, full_layers[index][name], rtol=0, atol=0)
    # embeddings untouched: the cut model reads the same tokens the same way
    torch.testing.assert_close(
        cut.base_model.embeddings.word_embeddings.weight, full.base_model.embeddings.word_embeddings.weight
    )


def test_a_cut_model_saves_and_reloads_as_the_smaller_model(tmp_path):
    import transformers

    model, tokenizer = minilm(3)
    batch = tokenizer(
        ["Thermal conductivity of thin films", "Abstract 1 Introduction"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert len(reloaded.base_model.encoder.layer) == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, before)


@pytest.mark.parametrize("keep", [0, 7, -1, True, [2, 1], [0, 0], [3, 6], [], "3"])
def test_an_impossible_choice_is_one_line(keep):
    model, _ = minilm()
    with pytest.raises(ConfigError, match=r"^model\.keep_layers=.*(the encoder has 6 layers|expected a count 1-6)"):
        keep_encoder_layers(model, keep)
    assert len(model.base_model.encoder.layer) == 6  # refused before anything was cut


@pytest.mark.slow
def test_a_cut_tiny_model_learns_and_predicts_as_trained(make_cfg, toy_csv, tmp_path):
    cfg = make_cfg(
        *toy_learning_run(toy_csv, "model.tiny.num_layers=4", "model.keep_layers=2", "tracking.log_model=true")
    )
    metrics = run_training(cfg)
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_f1"] >= 0.9, metrics  # chance is 0.5
    mlflow.set_tracking_uri(f"sqlite:///{cfg.paths.outputs}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    assert run.data.params["model.keep_layers"] == "2"
    scored = pd.read_csv(next(tmp_path.glob("**/reports/test/predictions.csv")), keep_default_na=False)
    predictor = inference.load_predictor(run=run.info.run_id)
    assert len(predictor.model.base_model.encoder.layer) == 2
    np.testing.assert_allclose(predictor.predict_titles(scored["text"].tolist()), scored["probability"], atol=1e-5)
