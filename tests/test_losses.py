"""lib.losses against values computed by hand.

The batch used throughout (class 0 = wrong title, class 1 = correct title):

    row  logits       label  p_t = softmax(logits)[label]        CE = -ln p_t
    A    [2.0, 0.0]   0      1 / (1 + e^-2)   = 0.8807970780     0.1269280110
    B    [0.0, 1.0]   1      1 / (1 + e^-1)   = 0.7310585786     0.3132616875
    C    [1.0, 0.5]   1      1 / (1 + e^0.5)  = 0.3775406688     0.9740769842
"""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lib.errors import ConfigError
from lib.losses import FocalLoss, build_loss

CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
LABELS = torch.tensor([0, 1, 1])
CE = [0.1269280110, 0.3132616875, 0.9740769842]
P_T = [0.8807970780, 0.7310585786, 0.3775406688]


def loss_cfg(values: dict):
    """The option's YAML (where every default lives) with ``values`` over it."""
    path = CONF / f"{values['name']}.yaml"
    return OmegaConf.merge(OmegaConf.load(path), values) if path.is_file() else OmegaConf.create(values)


def loss_of(cfg: dict, logits=LOGITS, labels=LABELS) -> float:
    return build_loss(loss_cfg(cfg))(logits, labels).item()


def test_ce_is_mean_negative_log_likelihood():
    # (0.1269280110 + 0.3132616875 + 0.9740769842) / 3
    assert loss_of({"name": "ce", "label_smoothing": 0.0}) == pytest.approx(0.4714222276, abs=1e-6)


def test_ce_label_smoothing():
    # eps = 0.1, 2 classes: loss = 0.9 * CE + 0.05 * (-ln p_0 - ln p_1) per row.
    # A: 0.9 * 0.1269280 + 0.05 * (0.1269280 + 2.1269280) = 0.2269280
    # B: 0.9 * 0.3132617 + 0.05 * (1.3132617 + 0.3132617) = 0.3632617
    # C: 0.9 * 0.9740770 + 0.05 * (0.4740770 + 0.9740770) = 0.9490770  -> mean 0.5130889
    assert loss_of({"name": "ce", "label_smoothing": 0.1}) == pytest.approx(0.5130889, abs=1e-6)


def test_weighted_ce_is_weighted_mean():
    # weights [1.0, 1.3]: (1.0 * 0.1269280 + 1.3 * 0.3132617 + 1.3 * 0.9740770) / (1 + 1.3 + 1.3)
    cfg = OmegaConf.load(CONF / "weighted_ce.yaml")
    loss = build_loss(cfg)(LOGITS, LABELS).item()
    assert loss == pytest.approx(0.5001300790, abs=1e-6)
    # Sanity: differs from the unweighted mean, so the weights were applied.
    assert abs(loss - 0.4714222276) > 0.01


def test_focal_default_config_matches_hand_computation():
    # alpha 0.25, gamma 2: 0.25 * (1 - p_t)^2 * CE per row
    # A: 0.25 * 0.1192029^2 * 0.1269280 = 0.000450891
    # B: 0.25 * 0.2689414^2 * 0.3132617 = 0.005664514
    # C: 0.25 * 0.6224593^2 * 0.9740770 = 0.094352900   -> mean 0.033489435
    cfg = OmegaConf.load(CONF / "focal.yaml")
    assert (cfg.alpha, cfg.gamma) == (0.25, 2.0)
    assert build_loss(cfg)(LOGITS, LABELS).item() == pytest.approx(0.033489435, abs=1e-7)


def test_focal_non_integer_gamma():
    # gamma 0.5: 0.25 * sqrt(1 - p_t) * CE, mean = 0.081232308
    loss = loss_of({"name": "focal", "alpha": 0.25, "gamma": 0.5})
    assert loss == pytest.approx(0.081232308, abs=1e-7)


def _reference_focal(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """The textbook formula in float64, where 1 - p_t of these logits does not round to 0."""
    p_t = torch.softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (alpha * (1 - p_t) ** gamma * -torch.log(p_t)).mean()


SATURATED = [([[30.0, 0.0]], 0), ([[30.0, 0.0]], 1), ([[0.0, 30.0]], 0), ([[0.0, 30.0]], 1)]


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("logits, label", SATURATED)
def test_focal_gradient_is_finite_and_right_for_saturated_logits(gamma, logits, label):
    # A confidently right example ([[30, 0]] with label 0) made p_t round to 1.0 in float32, and
    # (1 - p_t)^gamma with 0 < gamma < 1 has an infinite derivative there: the gradient was NaN.
    labels = torch.tensor([label])
    reference = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    _reference_focal(reference, labels, 0.25, gamma).backward()
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        x = torch.tensor(logits, dtype=dtype, requires_grad=True)
        loss = FocalLoss(alpha=0.25, gamma=gamma)(x, labels)
        loss.backward()
        assert torch.isfinite(x.grad).all(), (dtype, x.grad)
        assert loss.item() == pytest.approx(
            _reference_focal(reference.detach(), labels, 0.25, gamma).item(), abs=tolerance
        )
        torch.testing.assert_close(x.grad.double(), reference.grad, atol=tolerance, rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 0.7])
def test_focal_gradient_stays_finite_when_p_t_underflows_to_exactly_one(gamma):
    # Beyond float precision (margin 200) 1 - p_t is 0 even in float64: the gradient is 0, not NaN.
    x = torch.tensor([[200.0, 0.0], [0.0, 1.0]], requires_grad=True)
    FocalLoss(alpha=0.25, gamma=gamma)(x, torch.tensor([0, 1])).backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].abs().max() < 1e-30 and x.grad[1].abs().max() > 1e-3


def test_focal_balanced_alpha_weights_class_1_by_alpha_and_class_0_by_one_minus_alpha():
    # balanced_alpha, alpha 0.25: row A (label 0) weighs 0.75, rows B and C (label 1) 0.25.
    # (0.75 * 0.0142093 * 0.1269280 + 0.25 * 0.0723295 * 0.3132617 + 0.25 * 0.3874556 * 0.9740770) / 3
    loss_fn = build_loss(loss_cfg({"name": "focal", "alpha": 0.25, "gamma": 2.0, "balanced_alpha": True}))
    assert loss_fn.alpha.tolist() == [0.75, 0.25]
    assert loss_fn(LOGITS, LABELS).item() == pytest.approx(0.0337900, abs=1e-6)
    # The default (scalar alpha for both classes) only rescales the loss: the same for every row.
    assert build_loss(OmegaConf.load(CONF / "focal.yaml")).alpha.tolist() == [0.25, 0.25]


@pytest.mark.parametrize("alpha", [[0.4, 0.6], 1.0, 0.0])
def test_focal_balanced_alpha_needs_a_scalar_between_0_and_1(alpha):
    with pytest.raises(ConfigError, match="balanced_alpha"):
        FocalLoss(alpha=alpha, gamma=2.0, balanced=True)


def test_focal_per_class_alpha():
    # alpha [0.4, 0.6]: row A (label 0) uses 0.4, rows B and C (label 1) use 0.6.
    # (0.4 * 0.0142093 * 0.1269280 + 0.6 * 0.0723295 * 0.3132617 + 0.6 * 0.3874556 * 0.9740770) / 3
    loss = loss_of({"name": "focal", "alpha": [0.4, 0.6], "gamma": 2.0})
    assert loss == pytest.approx(0.080254407, abs=1e-7)


def test_focal_with_gamma_0_and_alpha_1_equals_ce():
    focal = loss_of({"name": "focal", "alpha": 1.0, "gamma": 0.0})
    ce = loss_of({"name": "ce", "label_smoothing": 0.0})
    assert focal == pytest.approx(ce, abs=1e-7)
    assert focal == pytest.approx(sum(CE) / 3, abs=1e-6)


def test_focal_down_weights_easy_examples():
    # Row A is easy (p_t 0.88), row C hard (p_t 0.38): focal/CE ratio = 0.25 * (1 - p_t)^2.
    loss_fn = FocalLoss(alpha=0.25, gamma=2.0)
    per_row = [loss_fn(LOGITS[i : i + 1], LABELS[i : i + 1]).item() for i in range(3)]
    for row, ce, p_t in zip(per_row, CE, P_T):
        assert row / ce == pytest.approx(0.25 * (1 - p_t) ** 2, rel=1e-5)


def test_focal_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0], [100.0, -100.0]])
    labels = torch.tensor([1, 0])
    # Row 1: CE = 200, p_t = e^-200 -> 0.25 * 1 * 200 = 50; row 2: p_t = 1 -> 0. Mean 25.
    # Computing softmax first and then log would give log(0) = -inf for row 1.
    loss = build_loss(loss_cfg({"name": "focal", "alpha": 0.25, "gamma": 2.0}))
    assert loss(logits, labels).item() == pytest.approx(25.0, rel=1e-6)


def test_focal_under_bf16_autocast_returns_float32():
    loss_fn = FocalLoss(alpha=0.25, gamma=2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(LOGITS.to(torch.bfloat16), LABELS)
    assert loss.dtype == torch.float32
    # bf16 logits of these values are exact, so the result is the float32 one.
    assert loss.item() == pytest.approx(0.033489435, abs=1e-6)


def test_focal_gradient_flows_to_logits():
    logits = LOGITS.clone().requires_grad_(True)
    FocalLoss(alpha=0.25, gamma=2.0)(logits, LABELS).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "cfg, buffer",
    [
        ({"name": "weighted_ce", "class_weights": [1.0, 1.3], "label_smoothing": 0.0}, "weight"),
        ({"name": "focal", "alpha": [0.4, 0.6], "gamma": 2.0}, "alpha"),
        ({"name": "focal", "alpha": 0.25, "gamma": 2.0}, "alpha"),
    ],
)
def test_per_class_tensors_are_buffers_that_move_with_the_module(cfg, buffer):
    loss_fn = build_loss(loss_cfg(cfg))
    assert buffer in dict(loss_fn.named_buffers())
    # "meta" stands in for a GPU: .to() must carry the buffer along.
    loss_fn.to("meta")
    assert dict(loss_fn.named_buffers())[buffer].device.type == "meta"


def test_loss_yaml_files_all_build():
    for path in sorted(CONF.glob("*.yaml")):
        assert isinstance(build_loss(OmegaConf.load(path)), torch.nn.Module), path


def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        build_loss(loss_cfg({"name": "dice"}))
    message = str(err.value)
    assert "'dice'" in message and "ce, weighted_ce, focal" in message and "\n" not in message


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "weighted_ce", "class_weights": [1.0, 1.3, 2.0]},
        {"name": "weighted_ce", "class_weights": [1.0, -1.0]},
        {"name": "weighted_ce", "class_weights": 1.3},
        {"name": "focal", "alpha": 0.25, "gamma": -1.0},
        {"name": "focal", "alpha": 0.0, "gamma": 2.0},
        {"name": "focal", "alpha": "high", "gamma": 2.0},
        {"name": "ce", "label_smoothing": 1.0},
    ],
)
def test_invalid_values_raise_config_error(cfg):
    with pytest.raises(ConfigError):
        build_loss(loss_cfg(cfg))


@pytest.mark.parametrize("group", ["loss", "adversarial", "schedule"])
def test_a_key_missing_from_a_group_is_an_error_not_a_second_default(group):
    # Defaults live in conf/<group>/*.yaml only; a hand-written config lacking one is told so.
    from lib.adversarial import build_adversary
    from lib.optim import build_optimizer

    path = {"loss": CONF / "focal.yaml", "adversarial": CONF.parent / "adversarial" / "pgd.yaml",
            "schedule": CONF.parent / "schedule" / "linear.yaml"}[group]  # fmt: skip
    cfg = OmegaConf.load(path)
    dropped = {"loss": "gamma", "adversarial": "step_size", "schedule": "weight_decay"}[group]
    del cfg[dropped]
    model = torch.nn.Module()
    build = {"loss": lambda: build_loss(cfg), "adversarial": lambda: build_adversary(cfg, model),
             "schedule": lambda: build_optimizer(cfg, model)}[group]  # fmt: skip
    with pytest.raises(ConfigError, match=f"^{group}: {dropped} missing \\(conf/{group}/{cfg.name}.yaml"):
        build()
