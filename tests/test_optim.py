"""lib.optim: layer-wise parameter groups and the warm-up + decay schedules."""

import logging
from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf

from lib.errors import ConfigError
from lib.optim import build_optimizer, build_param_groups, build_scheduler

CONF = Path(__file__).resolve().parents[1] / "conf" / "schedule"
TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100, num_labels=2
)
LR, DECAY, HEAD = 1e-3, 0.5, 10.0


def tiny_model(arch: str):
    torch.manual_seed(0)
    if arch == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(**TINY))
    if arch == "roberta":
        return transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**TINY))
    # deberta-v3 style: relative attention adds encoder.rel_embeddings and encoder.LayerNorm,
    # which sit outside the layers and feed all of them.
    config = transformers.DebertaV2Config(
        **TINY,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        position_buckets=16,
        max_relative_positions=-1,
        position_biased_input=False,
    )
    return transformers.DebertaV2ForSequenceClassification(config)


def schedule_cfg(file="linear", **overrides):
    # cosine.yaml and constant.yaml extend linear.yaml through their defaults list, as Hydra composes them
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "linear.yaml"), OmegaConf.load(CONF / f"{file}.yaml"))
    cfg.pop("defaults", None)
    cfg.merge_with(OmegaConf.create({"lr": LR, "layer_decay": DECAY, "head_lr_mult": HEAD, **overrides}))
    return cfg


def expected_lr(prefix: str, name: str) -> float:
    """The intended rate, written out per name pattern for 2 layers and decay 0.5."""
    if name.startswith(f"{prefix}.encoder.layer.1."):
        return LR  # top layer
    if name.startswith(f"{prefix}.encoder.layer.0."):
        return LR * 0.5  # one layer down
    if name.startswith((f"{prefix}.embeddings.", f"{prefix}.encoder.rel_embeddings.", f"{prefix}.encoder.LayerNorm.")):
        return LR * 0.25  # below both layers: decay^2
    return LR * 10  # classifier and pooler


def group_of(groups):
    return {id(p): g for g in groups for p in g["params"]}


@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta"])
def test_layer_wise_rates_and_weight_decay(arch):
    model = tiny_model(arch)
    groups = build_param_groups(schedule_cfg(weight_decay=0.01), model)
    where = group_of(groups)
    prefix = model.base_model_prefix
    for name, param in model.named_parameters():
        group = where[id(param)]
        assert group["lr"] == pytest.approx(expected_lr(prefix, name)), name
        no_decay = "bias" in name or "LayerNorm" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
        assert group["name"].endswith("/no_decay" if no_decay else "/decay"), name


@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta"])
def test_every_parameter_is_in_exactly_one_group(arch):
    model = tiny_model(arch)
    groups = build_param_groups(schedule_cfg(), model)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


def test_group_names_and_specific_parameters():
    model = tiny_model("deberta")
    groups = build_param_groups(schedule_cfg(weight_decay=0.01), model)
    assert [g["name"] for g in groups] == [
        "embeddings/decay",
        "embeddings/no_decay",
        "layer_0/decay",
        "layer_0/no_decay",
        "layer_1/decay",
        "layer_1/no_decay",
        "head/decay",
        "head/no_decay",
    ]
    named = dict(model.named_parameters())
    where = group_of(groups)
    assert where[id(named["deberta.encoder.rel_embeddings.weight"])]["name"] == "embeddings/decay"
    assert where[id(named["deberta.encoder.LayerNorm.weight"])]["name"] == "embeddings/no_decay"
    assert where[id(named["pooler.dense.weight"])]["name"] == "head/decay"
    assert where[id(named["classifier.bias"])]["name"] == "head/no_decay"
    q = "deberta.encoder.layer.0.attention.self.query_proj"
    assert where[id(named[f"{q}.weight"])]["name"] == "layer_0/decay"
    assert where[id(named[f"{q}.bias"])]["name"] == "layer_0/no_decay"


def test_bert_pooler_is_part_of_the_head():
    model = tiny_model("bert")
    where = group_of(build_param_groups(schedule_cfg(), model))
    pooler = model.bert.pooler.dense.weight
    assert where[id(pooler)]["name"] == "head/decay"
    assert where[id(pooler)]["lr"] == pytest.approx(LR * HEAD)


def test_no_layer_decay_gives_one_rate_to_the_body():
    model = tiny_model("roberta")
    groups = build_param_groups(schedule_cfg(layer_decay=1.0, head_lr_mult=1.0), model)
    assert {g["lr"] for g in groups} == {LR}


def test_frozen_parameters_are_left_out():
    model = tiny_model("bert")
    frozen = model.bert.embeddings.word_embeddings.weight
    frozen.requires_grad_(False)
    groups = build_param_groups(schedule_cfg(), model)
    assert id(frozen) not in group_of(groups)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) - 1


def test_unknown_architecture_falls_back_to_embeddings_and_other(caplog):
    # DistilBERT keeps its layers under transformer.layer.<i>, not encoder.layer.<i>.
    model = transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100)
    )
    with caplog.at_level(logging.WARNING, logger="lib.optim"):
        groups = build_param_groups(schedule_cfg(), model)
    assert "encoder.layer" in caplog.text
    where = group_of(groups)
    for name, param in model.named_parameters():
        group = where[id(param)]
        if name.startswith("distilbert.embeddings."):
            assert (group["name"].split("/")[0], group["lr"]) == ("embeddings", LR * 0.25), name
        elif name.startswith("distilbert."):
            assert (group["name"].split("/")[0], group["lr"]) == ("other", LR), name
        else:
            assert (group["name"].split("/")[0], group["lr"]) == ("head", LR * HEAD), name


def test_build_optimizer_returns_adamw_with_the_groups():
    model = tiny_model("bert")
    optimizer = build_optimizer(schedule_cfg(weight_decay=0.01), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["layer_1/decay"] == pytest.approx(LR)
    assert rates["layer_0/decay"] == pytest.approx(LR * 0.5)
    assert rates["embeddings/no_decay"] == pytest.approx(LR * 0.25)
    assert rates["head/decay"] == pytest.approx(LR * HEAD)
    assert all(g["fused"] for g in optimizer.param_groups)  # one CPU device: the fused kernel


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-5}, "lr"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"layer_decay": 1.5}, "layer_decay"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"warmup_ratio": -0.1}, "warmup_ratio"),
        ({"head_lr_mult": 0.0}, "head_lr_mult"),
        ({"warmup_steps": -5}, "warmup_steps"),
        ({"name": "step"}, "name"),
    ],
)
def test_invalid_values_raise_one_line_config_errors(overrides, field):
    model = tiny_model("bert")
    with pytest.raises(ConfigError) as err:
        build_optimizer(schedule_cfg(**overrides), model)
    assert f"schedule.{field}" in str(err.value) and "\n" not in str(err.value)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError):
        build_scheduler(schedule_cfg(**overrides), optimizer, 100)


def test_unknown_schedule_name_lists_valid_names():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="linear, cosine, constant"):
        build_scheduler(schedule_cfg("linear", name="polynomial"), optimizer, 10)


# ---------------------------------------------------------------- schedules


def lr_trace(cfg, total_steps):
    """lr after s scheduler steps, for s = 0 .. total_steps, with base lr 1."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg.lr = 1.0
    scheduler = build_scheduler(cfg, optimizer, total_steps)
    trace = [optimizer.param_groups[0]["lr"]]
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
        trace.append(optimizer.param_groups[0]["lr"])
    return trace


@pytest.mark.parametrize(
    "name, midpoint, end",
    # 100 steps, warm-up 10% = 10 steps; the midpoint of the decay is step 55.
    [("linear", 0.5, 0.0), ("cosine", 0.5, 0.0), ("constant", 1.0, 1.0)],
)
def test_schedule_values(name, midpoint, end):
    trace = lr_trace(schedule_cfg(name, warmup_ratio=0.1, warmup_steps=None), 100)
    assert trace[0] == 0.0
    assert trace[5] == pytest.approx(0.5)  # half-way through warm-up
    assert trace[10] == pytest.approx(1.0)  # warm-up end
    assert trace[55] == pytest.approx(midpoint)
    assert trace[100] == pytest.approx(end, abs=1e-12)


def test_cosine_quarter_point_differs_from_linear():
    # Step 10 + 90/4 = 32.5 is not a step; use 110 steps with 10 warm-up: quarter at step 35.
    cosine = lr_trace(schedule_cfg("cosine", warmup_steps=10), 110)
    linear = lr_trace(schedule_cfg("linear", warmup_steps=10), 110)
    assert cosine[35] == pytest.approx(0.5 * (1 + 0.7071067812))  # 0.8535534
    assert linear[35] == pytest.approx(0.75)


def test_warmup_steps_override_the_ratio():
    trace = lr_trace(schedule_cfg("linear", warmup_ratio=0.1, warmup_steps=20), 100)
    assert trace[10] == pytest.approx(0.5)
    assert trace[20] == pytest.approx(1.0)
    assert trace[60] == pytest.approx(0.5)  # 40 of 80 decay steps done


def test_warmup_ratio_rounds_up():
    # ceil(0.1 * 95) = 10 warm-up steps.
    trace = lr_trace(schedule_cfg("constant", warmup_ratio=0.1, warmup_steps=None), 95)
    assert trace[9] == pytest.approx(0.9)
    assert trace[10] == pytest.approx(1.0)


def test_zero_warmup_starts_at_full_rate():
    trace = lr_trace(schedule_cfg("linear", warmup_ratio=0.0, warmup_steps=None), 10)
    assert trace[0] == pytest.approx(1.0)
    assert trace[5] == pytest.approx(0.5)


def test_warmup_longer_than_training_is_capped(caplog):
    with caplog.at_level(logging.WARNING, logger="lib.optim"):
        trace = lr_trace(schedule_cfg("linear", warmup_steps=500), 20)
    assert "warmup_steps" in caplog.text
    assert trace[10] == pytest.approx(0.5)
    assert trace[20] == pytest.approx(1.0)


def test_schedule_scales_every_layer_wise_group_alike():
    model = tiny_model("bert")
    cfg = schedule_cfg("linear", warmup_steps=2)
    optimizer = build_optimizer(cfg, model)
    base = [g["lr"] for g in optimizer.param_groups]
    scheduler = build_scheduler(cfg, optimizer, 6)
    for _ in range(4):  # warm-up end (2) + half of the 4 decay steps
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([b * 0.5 for b in base])


def test_scheduler_state_dict_round_trips():
    # The resumed scheduler is built with other settings (as a changed config or a bug would give):
    # only a real restore of the saved schedule reproduces the original lr trace.
    cfg = schedule_cfg("cosine", warmup_steps=3)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(cfg, optimizer, 10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    resumed_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = build_scheduler(schedule_cfg("linear", warmup_steps=1), resumed_opt, 40)
    resumed.load_state_dict(scheduler.state_dict())
    traces = []
    for opt, sched in ((optimizer, scheduler), (resumed_opt, resumed)):
        trace = []
        for _ in range(5):
            opt.step()
            sched.step()
            trace.append(sched.get_last_lr()[0])
        traces.append(trace)
    assert traces[1] == pytest.approx(traces[0])
    assert traces[0][-1] == pytest.approx(0.0, abs=1e-12)  # the original 10-step cosine ends at 0
    unrestored = build_scheduler(schedule_cfg("linear", warmup_steps=1), resumed_opt, 40).lr_lambdas[0]
    assert [unrestored(step) for step in range(6, 11)] != pytest.approx(traces[0])  # the test can tell


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_total_steps_must_be_a_positive_integer(steps):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError):
        build_scheduler(schedule_cfg(), optimizer, steps)


def test_one_dimensional_parameters_without_bias_in_the_name_get_no_decay():
    # e.g. a learned temperature or a RMSNorm-style scale: 1-D, named neither bias nor LayerNorm.
    model = tiny_model("bert")
    model.temperature = torch.nn.Parameter(torch.ones(1))
    where = group_of(build_param_groups(schedule_cfg(weight_decay=0.01), model))
    assert where[id(model.temperature)]["name"] == "head/no_decay"
    assert where[id(model.temperature)]["weight_decay"] == 0.0
