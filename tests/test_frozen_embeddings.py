"""model.freeze_word_embeddings: the word-embedding matrix keeps its starting values through
training while everything else learns; an adversary (which perturbs that matrix) is refused."""

import pytest
import torch

from conftest import toy_learning_run
from lib import run as run_module
from lib.errors import ConfigError
from lib.run import run_training


@pytest.fixture
def built_models(monkeypatch):
    """Every model run_training builds, with a copy of its weights as built (before training)."""
    built = []
    build = run_module.build_model

    def recording_build(*args, **kwargs):
        model, tokenizer = build(*args, **kwargs)
        built.append((model, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return model, tokenizer

    monkeypatch.setattr(run_module, "build_model", recording_build)
    return built


@pytest.mark.slow
def test_frozen_word_embeddings_stay_put_while_the_model_learns(make_cfg, toy_csv, built_models):
    metrics = run_training(make_cfg(*toy_learning_run(toy_csv, "model.freeze_word_embeddings=true")))
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_f1"] >= 0.9, metrics  # chance is 0.5

    (model, before) = built_models[0]
    after = model.state_dict()
    word = "bert.embeddings.word_embeddings.weight"
    torch.testing.assert_close(after[word], before[word], rtol=0, atol=0)
    moved = [k for k in after if k != word and not torch.equal(after[k], before[k])]
    # position embeddings, every encoder layer and the head trained
    assert "bert.embeddings.position_embeddings.weight" in moved and "classifier.weight" in moved
    assert {k.split(".")[3] for k in moved if k.startswith("bert.encoder.layer.")} == {"0", "1"}


@pytest.mark.slow
def test_by_default_the_word_embeddings_train(make_cfg, toy_csv, built_models):
    run_training(make_cfg(*toy_learning_run(toy_csv, "trainer.epochs=1")))
    (model, before) = built_models[0]
    word = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(model.state_dict()[word], before[word])


def test_an_adversary_on_frozen_embeddings_is_one_line(make_cfg, toy_csv, built_models):
    cfg = make_cfg(*toy_learning_run(toy_csv, "model.freeze_word_embeddings=true", "adversarial=fgm"))
    with pytest.raises(ConfigError, match=r"^adversarial training perturbs the word embeddings, which are frozen"):
        run_training(cfg)
