"""model.pooling: the head reads the first token (cls) or the mean over the real tokens (mean), in
every tiny architecture; the choice travels with the saved model to predict.py and the pyfunc model."""

import threading
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from conftest import TINY, toy_learning_run
from lib import inference
from lib.errors import ConfigError
from lib.models import build_model
from lib.pyfunc import HF_ARTIFACT, POOLING_KEY, TextVectors, TitleClassifier, attach_pooling, save_model_folder
from lib.run import run_training

CONFIGS = {
    "bert": transformers.BertConfig,
    "roberta": transformers.RobertaConfig,
    "deberta-v2": transformers.DebertaV2Config,
}


def tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[arch](**TINY, max_position_embeddings=40, pad_token_id=0)
    return transformers.AutoModelForSequenceClassification.from_config(config).eval()


def first_position_seen_by_the_head(model, input_ids, attention_mask):
    """The encoder output's first vector, as the head receives it (after any pooling hook)."""
    seen = {}
    handle = model.base_model.encoder.register_forward_hook(
        lambda module, args, output: seen.update(first=output.last_hidden_state[:, 0].clone())
    )
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    handle.remove()
    return seen["first"], logits


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_mean_pooling_feeds_the_head_the_mean_over_real_tokens(arch):
    ids = torch.tensor([[5, 17, 23, 42, 8, 9], [5, 31, 7, 0, 0, 0]])
    mask = (ids != 0).long()
    plain = tiny(arch)
    with torch.no_grad():
        hidden = plain.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)

    pooled = attach_pooling(tiny(arch), "mean")
    first, logits = first_position_seen_by_the_head(pooled, ids, mask)
    torch.testing.assert_close(first, expected)
    assert pooled.config.to_dict()[POOLING_KEY] == "mean"
    assert not torch.allclose(first, hidden[:, 0], atol=1e-3)  # not what the cls head reads
    cls_first, _ = first_position_seen_by_the_head(attach_pooling(tiny(arch), "cls"), ids, mask)
    torch.testing.assert_close(cls_first, hidden[:, 0])
    # padding does not move the short title's score
    with torch.no_grad():
        alone = pooled(input_ids=ids[1:, :3], attention_mask=mask[1:, :3]).logits
    torch.testing.assert_close(alone, logits[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_head_input_is_the_vector_the_head_reads(pooling):
    # what distillation's relation term compares (lib/distill.py): the student's in its training forward
    # call, the teacher's through Predictor.score(pooled_as="head")
    ids = torch.tensor([[5, 17, 23, 42, 8, 9], [5, 31, 7, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = tiny("bert").base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # no pooling hook
        model = attach_pooling(tiny("bert"), pooling)
        with TextVectors(model, "head") as text:
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=text.hidden_states)
    expected = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True) if pooling == "mean" else hidden[:, 0]
    torch.testing.assert_close(text.of(out, mask), expected)
    assert len(model.base_model.encoder._forward_hooks) == (pooling == "mean")  # ours went with the block


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_layer_vectors_are_every_layers_mean_over_real_tokens(pooling):
    # what distillation's layer term compares (lib/distill.py): under mean pooling the last layer's mean is
    # taken before the pooling hook writes it into the first position, not averaged again with it
    ids = torch.tensor([[5, 17, 23, 42, 8, 9], [5, 31, 7, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        plain = tiny("bert").base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        model = attach_pooling(tiny("bert"), pooling)
        with TextVectors(model, "layers") as text:
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=text.hidden_states)
    means = [(hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True) for hidden in plain[1:]]
    assert text.hidden_states and len(means) == model.config.num_hidden_layers >= 2
    torch.testing.assert_close(text.of(out, mask), torch.stack(means, dim=1))


def test_a_predictor_gives_each_texts_layer_vectors_in_input_order():
    model = attach_pooling(tiny("bert"), "mean")

    def tokenizer(texts, **kwargs):
        return {"input_ids": [[1 + len(word) for word in text.split()] for text in texts]}

    tokenizer.pad_token_id = 0
    predictor = inference.Predictor(model, tokenizer, 0.5, 16, "tiny bert", None, torch.device("cpu"))
    texts = ["a title of many words here", "", "short one"]
    probs, layers = predictor.score(texts, batch_size=2, embeddings=True, pooled_as="layers")
    _, alone = predictor.score(texts[2:], embeddings=True, pooled_as="layers")
    assert layers.shape == (3, model.config.num_hidden_layers, model.config.hidden_size)
    assert np.isnan(layers[1]).all() and np.isnan(probs[1])  # the empty text is not scored
    np.testing.assert_allclose(layers[2], alone[0], atol=1e-5)  # sorted by length and put back in order
    _, last = predictor.score(texts, embeddings=True, pooled_as="mean")
    np.testing.assert_allclose(layers[[0, 2], -1], last[[0, 2]], atol=1e-5)


def tiny_distilbert():
    # DistilBERT keeps its layers in `transformer`, not `encoder`: only mean pooling's hooks need one
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(
        vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=40, pad_token_id=0
    )
    return attach_pooling(transformers.DistilBertForSequenceClassification(config).eval())


def test_a_model_without_an_encoder_module_gives_the_vector_its_head_reads():
    # distill.relation_weight > 0 with a DistilBERT-like student: was an AttributeError (no `encoder`)
    model = tiny_distilbert()
    ids = torch.tensor([[5, 17, 23, 42, 8, 9], [5, 31, 7, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = model.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        with TextVectors(model, "head") as text:
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=text.hidden_states)
    torch.testing.assert_close(text.of(out, mask), hidden[:, 0])


def test_a_model_without_an_encoder_module_still_scores_and_gives_its_mean_embeddings():
    model = tiny_distilbert()

    def tokenizer(texts, **kwargs):
        return {"input_ids": [[1 + len(word) for word in text.split()] for text in texts]}

    tokenizer.pad_token_id = 0
    predictor = inference.Predictor(model, tokenizer, 0.5, 16, "tiny distilbert", None, torch.device("cpu"))
    probs, vectors = predictor.score(["a title of words", "another"], embeddings=True)
    assert probs.shape == (2,) and np.isfinite(probs).all() and vectors.shape == (2, 16)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_embeddings_predict_and_the_onnx_graph_give_are_the_mean_over_real_tokens(pooling):
    # evaluate.py's embedding map and the ONNX graph's second output. Under mean pooling the hook has put
    # the mean in the first position, which hidden_states[-1] may show (transformers 5): averaging it
    # again gave the mean of (mean, other tokens).
    from lib.onnx_export import _Scored

    def tokenizer(texts, **kwargs):
        return {"input_ids": [[2 + (len(word) * 7) % 45 for word in text.split()] for text in texts]}

    tokenizer.pad_token_id = 0
    titles = ["a title of several words here", "short one"]
    ids = [torch.tensor([row]) for row in tokenizer(titles)["input_ids"]]
    with torch.no_grad():
        plain = tiny("bert")  # the same weights, no pooling hook: each title alone, no padding
        expected = torch.cat([plain.base_model(input_ids=row).last_hidden_state.mean(1) for row in ids])
        model = attach_pooling(tiny("bert"), pooling)
        predictor = inference.Predictor(model, tokenizer, 0.5, 16, "tiny", None, torch.device("cpu"))
        _, vectors = predictor.score(titles, embeddings=True)
        np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-5)
        padded = torch.tensor([ids[0][0].tolist(), ids[1][0].tolist() + [0] * (ids[0].shape[1] - ids[1].shape[1])])
        _, graph_vectors = _Scored(model)(padded, (padded != 0).long())
        torch.testing.assert_close(graph_vectors, expected, atol=1e-5, rtol=0)


def test_the_pooling_is_saved_with_the_model_and_restored_on_load(tmp_path):
    ids = torch.tensor([[5, 17, 23, 42], [5, 31, 0, 0]])
    mask = (ids != 0).long()
    model = attach_pooling(tiny("bert"), "mean")
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        unhooked = loaded(input_ids=ids, attention_mask=mask).logits
        restored = attach_pooling(loaded)(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(restored, want)
    assert not torch.allclose(unhooked, want, atol=1e-4)  # the stored setting is what makes them agree


def test_an_unknown_pooling_is_one_line(tmp_path):
    cfg = {"name": "tiny_bert", "pooling": "max", "tiny": {"vocab_size": 100}}
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=r"^model.pooling=max: choose one of cls, mean$"):
        build_model(OmegaConf.create(cfg), ["a title"], tmp_path)
    with pytest.raises(ValueError, match="already pools by 'mean'"):
        attach_pooling(attach_pooling(tiny("bert"), "mean"), "cls")


def test_two_threads_scoring_through_one_served_model_each_pool_their_own_titles(make_cfg, tmp_path):
    # One loaded pyfunc model serving two requests at once, of different lengths and sizes.
    short = ["Sparse graphs", "Abstract", "Yeast genome", "Page 3", "Optimal control"]
    long = [
        "Bayesian inference of sparse protein interaction networks in yeast",
        "Contents introduction references page vol pp proceedings university department",
        "Optimal control of market theory kernels for genome analysis and retrieval",
    ]
    cfg = make_cfg("model=tiny_bert", "model.pooling=mean")
    model, tokenizer = build_model(cfg.model, short + long, tmp_path / "cache")
    served = TitleClassifier()
    served.load_context(
        SimpleNamespace(artifacts={HF_ARTIFACT: str(save_model_folder(tmp_path / "m", model, tokenizer, 0.5, 64))})
    )
    requests = {"short": pd.DataFrame({"title": short}), "long": pd.DataFrame({"title": long})}
    alone = {name: served.predict(None, frame)["probability"].to_numpy() for name, frame in requests.items()}
    assert not np.isnan(alone["short"]).any() and not np.isnan(alone["long"]).any()

    # Both requests enter the model before either reaches its encoder: the interleaving a busy server
    # meets by chance, here on every call.
    both_in = threading.Barrier(2, timeout=20)

    def wait_for_the_other(*_):
        both_in.wait()  # returns None: the embeddings' output is kept

    served.model.base_model.embeddings.register_forward_hook(wait_for_the_other)
    results = {name: [] for name in requests}
    errors = []

    def serve(name):
        try:
            for _ in range(20):
                results[name].append(served.predict(None, requests[name])["probability"].to_numpy())
        except Exception as err:  # noqa: BLE001 - reported below, with the other thread's
            errors.append(f"{name}: {type(err).__name__}: {err}")
            both_in.abort()

    threads = [threading.Thread(target=serve, args=(name,)) for name in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for name in requests:
        assert len(results[name]) == 20
        for probs in results[name]:
            np.testing.assert_allclose(probs, alone[name], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_mean_pooled_tiny_model_learns_and_serves_the_same_scores(make_cfg, toy_csv, tmp_path):
    cfg = make_cfg(*toy_learning_run(toy_csv, "model.pooling=mean", "tracking.log_model=true"))
    metrics = run_training(cfg)
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_f1"] >= 0.9, metrics  # chance is 0.5
    mlflow.set_tracking_uri(f"sqlite:///{cfg.paths.outputs}/mlflow.db")
    (run,) = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    scored = pd.read_csv(next(tmp_path.glob("**/reports/test/predictions.csv")), keep_default_na=False)
    titles = scored["text"].tolist()
    # predict.py / evaluate.py and the pyfunc model load the folder and must pool as training did
    served = inference.load_predictor(run=run.info.run_id).predict_titles(titles)
    np.testing.assert_allclose(served, scored["probability"], atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/pyfunc_model")
    np.testing.assert_allclose(pyfunc.predict(pd.DataFrame({"title": titles}))["probability"], served, atol=1e-5)
