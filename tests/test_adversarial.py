"""lib.adversarial: FGM and PGD on the word embeddings of tiny randomly initialised encoders."""

import copy
from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf

from conftest import TINY
from lib.adversarial import FGM, PGD, build_adversary
from lib.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "adversarial"

ARCHS = {
    "bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
    "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
    "deberta": (transformers.DebertaV2Config, transformers.DebertaV2ForSequenceClassification),
}


def tiny_model(arch: str = "bert"):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    # eval(): no dropout, so two forward passes at the same point give the same gradient.
    return model_cls(config_cls(**TINY)).eval()


def batch():
    generator = torch.Generator().manual_seed(1)
    # ids from 3 up: below the vocabulary size, past RoBERTa's padding id 1.
    return torch.randint(3, 100, (4, 8), generator=generator), torch.tensor([0, 1, 1, 0])


class Closure:
    """The training loop's forward_backward: records the embedding perturbation at each call."""

    def __init__(self, model, scale: float = 1.0, autocast: bool = False):
        self.model, self.scale, self.autocast = model, scale, autocast
        self.ids, self.labels = batch()
        self.weight = model.get_input_embeddings().weight
        self.clean_weight = self.weight.detach().clone()
        self.perturbations = []

    def __call__(self, weight=None):
        self.perturbations.append((self.weight.detach() - self.clean_weight).clone())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.model(input_ids=self.ids, labels=self.labels).loss
        loss = loss if weight is None else loss * weight
        # `scale` plays the GradScaler: it multiplies every gradient by a constant.
        (loss * self.scale).backward()
        return loss.detach()


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def grad_at(model, weight_value):
    """Gradient of the batch loss alone, with the embeddings set to `weight_value`."""
    other = copy.deepcopy(model)
    other.zero_grad(set_to_none=True)
    with torch.no_grad():
        other.get_input_embeddings().weight.copy_(weight_value)
    ids, labels = batch()
    other(input_ids=ids, labels=labels).loss.backward()
    return grads(other)


def clean_backward(model, closure):
    model.zero_grad(set_to_none=True)
    closure()
    closure.perturbations.clear()
    return grads(model)


def cfg(**values):
    return OmegaConf.create(values)


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_perturbs_the_word_embedding_matrix_of_each_architecture(arch):
    model = tiny_model(arch)
    adversary = build_adversary(cfg(name="fgm", epsilon=1.0), model)
    base = getattr(model, model.base_model_prefix)
    assert adversary.weight is base.embeddings.word_embeddings.weight


def test_none_builds_nothing_and_unknown_names_are_rejected():
    model = tiny_model()
    assert build_adversary(OmegaConf.load(CONF / "none.yaml"), model) is None
    assert isinstance(build_adversary(OmegaConf.load(CONF / "fgm.yaml"), model), FGM)
    assert isinstance(build_adversary(OmegaConf.load(CONF / "pgd.yaml"), model), PGD)
    with pytest.raises(ConfigError, match="none, fgm, pgd"):
        build_adversary(cfg(name="freelb"), model)


@pytest.mark.parametrize(
    "values",
    [
        dict(name="fgm", epsilon=0.0),
        dict(name="pgd", epsilon=1.0, step_size=-0.1, steps=3),
        dict(name="pgd", epsilon=1.0, step_size=0.3, steps=0),
        dict(name="pgd", epsilon=1.0, step_size=0.3, steps=1.5),
    ],
)
def test_invalid_values_raise_config_error(values):
    with pytest.raises(ConfigError):
        build_adversary(cfg(**values), tiny_model())


# ---------------------------------------------------------------- FGM


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fgm_adds_the_adversarial_gradient_and_restores_embeddings(arch):
    model = tiny_model(arch)
    closure = Closure(model)
    clean = clean_backward(model, closure)
    clean_weight = closure.clean_weight

    adv_loss = build_adversary(cfg(name="fgm", epsilon=1.0), model).attack(closure)

    # Exactly one extra forward/backward, at r = epsilon * g / ||g||.
    assert len(closure.perturbations) == 1
    g = clean[f"{model.base_model_prefix}.embeddings.word_embeddings.weight"]
    assert g.norm() > 0
    r = closure.perturbations[0]
    assert torch.allclose(r, g / g.norm(), atol=1e-6)
    assert r.norm().item() == pytest.approx(1.0, abs=1e-5)
    # Embeddings back to the bit.
    assert torch.equal(model.get_input_embeddings().weight, clean_weight)
    # Gradients = clean + gradient at the perturbed point, and differ from the clean ones.
    adversarial = grad_at(model, clean_weight + r)
    after = grads(model)
    for name, clean_grad in clean.items():
        assert torch.allclose(after[name], clean_grad + adversarial[name], atol=1e-6), name
    emb = f"{model.base_model_prefix}.embeddings.word_embeddings.weight"
    assert not torch.allclose(after[emb], clean[emb])
    assert adv_loss.requires_grad is False and adv_loss.item() > 0


def test_fgm_is_invariant_to_the_grad_scaler_scale():
    runs = []
    for scale in (1.0, 1024.0):
        model = tiny_model()
        closure = Closure(model, scale=scale)
        clean_backward(model, closure)
        FGM(model, epsilon=0.5).attack(closure)
        runs.append(closure.perturbations[0])
    assert runs[0].norm().item() == pytest.approx(0.5, abs=1e-5)
    assert torch.allclose(runs[0], runs[1], atol=1e-6)


def test_fgm_skips_a_zero_or_non_finite_gradient():
    model = tiny_model()
    closure = Closure(model)
    clean_backward(model, closure)
    weight = model.get_input_embeddings().weight
    adversary = FGM(model, epsilon=1.0)
    for bad in (0.0, float("inf"), float("nan")):
        weight.grad.fill_(bad)
        assert adversary.attack(closure) is None
    assert closure.perturbations == []
    assert torch.equal(weight, closure.clean_weight)


def test_fgm_under_autocast_restores_embeddings():
    model = tiny_model()
    closure = Closure(model, autocast=True)
    clean_backward(model, closure)
    loss = FGM(model, epsilon=1.0).attack(closure)
    assert torch.isfinite(loss)
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(model.get_input_embeddings().weight, closure.clean_weight)


def test_fgm_restores_embeddings_when_the_closure_fails():
    model = tiny_model()
    closure = Closure(model)
    clean_backward(model, closure)

    def failing(weight=None):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        FGM(model, epsilon=1.0).attack(failing)
    assert torch.equal(model.get_input_embeddings().weight, closure.clean_weight)


# ---------------------------------------------------------------- PGD


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_pgd_accumulates_only_the_last_step_and_restores_embeddings(arch):
    model = tiny_model(arch)
    closure = Closure(model)
    clean = clean_backward(model, closure)

    adv_loss = PGD(model, epsilon=1.0, step_size=0.3, steps=3).attack(closure)

    assert len(closure.perturbations) == 3
    assert torch.equal(model.get_input_embeddings().weight, closure.clean_weight)
    # Intermediate gradients are discarded: final = clean + gradient at the last point only.
    adversarial = grad_at(model, closure.clean_weight + closure.perturbations[-1])
    after = grads(model)
    for name, clean_grad in clean.items():
        assert torch.allclose(after[name], clean_grad + adversarial[name], atol=1e-6), name
    emb = f"{model.base_model_prefix}.embeddings.word_embeddings.weight"
    assert not torch.allclose(after[emb], clean[emb])
    assert torch.isfinite(adv_loss)


def test_pgd_steps_follow_the_gradient_at_the_perturbed_point():
    model = tiny_model()
    closure = Closure(model)
    clean = clean_backward(model, closure)
    step = 0.2  # 3 steps of 0.2 stay inside epsilon = 1, so no projection is involved
    PGD(model, epsilon=1.0, step_size=step, steps=3).attack(closure)

    first, second, third = closure.perturbations
    g0 = clean["bert.embeddings.word_embeddings.weight"]
    assert torch.allclose(first, step * g0 / g0.norm(), atol=1e-6)
    # Step 2 uses the gradient of the loss at point 1 alone (clean gradient zeroed first).
    g1 = grad_at(model, closure.clean_weight + first)["bert.embeddings.word_embeddings.weight"]
    assert torch.allclose(second - first, step * g1 / g1.norm(), atol=1e-6)
    g2 = grad_at(model, closure.clean_weight + second)["bert.embeddings.word_embeddings.weight"]
    assert torch.allclose(third - second, step * g2 / g2.norm(), atol=1e-6)


def test_pgd_perturbation_stays_in_the_epsilon_ball():
    model = tiny_model()
    closure = Closure(model)
    clean_backward(model, closure)
    # Steps of 0.8 would reach 1.6 and 2.4 unprojected; epsilon 1 caps them.
    PGD(model, epsilon=1.0, step_size=0.8, steps=3).attack(closure)
    norms = [p.norm().item() for p in closure.perturbations]
    assert norms[0] == pytest.approx(0.8, abs=1e-5)
    assert all(n <= 1.0 + 1e-5 for n in norms)
    # The projection was active: the later points lie on the sphere.
    assert norms[1] == pytest.approx(1.0, abs=1e-5) and norms[2] == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(model.get_input_embeddings().weight, closure.clean_weight)


@pytest.mark.slow
def test_pgd_is_invariant_to_the_grad_scaler_scale():
    runs = []
    for scale in (1.0, 1024.0):
        model = tiny_model()
        closure = Closure(model, scale=scale)
        clean_backward(model, closure)
        PGD(model, epsilon=1.0, step_size=0.3, steps=3).attack(closure)
        runs.append((closure.perturbations, grads(model)))
    for unscaled, scaled in zip(runs[0][0], runs[1][0]):
        assert torch.allclose(unscaled, scaled, atol=1e-5)
    for name, grad in runs[0][1].items():
        assert torch.allclose(runs[1][1][name] / 1024.0, grad, atol=1e-6, rtol=1e-4), name


def test_pgd_under_autocast_restores_embeddings():
    model = tiny_model()
    closure = Closure(model, autocast=True)
    clean_backward(model, closure)
    loss = PGD(model, epsilon=1.0, step_size=0.3, steps=2).attack(closure)
    assert torch.isfinite(loss) and len(closure.perturbations) == 2
    assert torch.equal(model.get_input_embeddings().weight, closure.clean_weight)


def test_pgd_restores_clean_gradients_when_the_closure_fails():
    model = tiny_model()
    closure = Closure(model)
    clean = clean_backward(model, closure)
    calls = []

    def fails_on_second_call(weight=None):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return closure(weight)

    with pytest.raises(RuntimeError):
        PGD(model, epsilon=1.0, step_size=0.3, steps=3).attack(fails_on_second_call)
    assert torch.equal(model.get_input_embeddings().weight, closure.clean_weight)
    after = grads(model)
    assert all(torch.equal(after[n], g) for n, g in clean.items())


@pytest.mark.slow
def test_pgd_in_the_training_loop_changes_the_gradients_with_one_plus_steps_passes_per_batch():
    # tiny DeBERTa-v2 through lib.loop.train: every step's gradient recorded, weights left unchanged.
    from omegaconf import OmegaConf

    from lib.batching import make_loader
    from lib.loop import TrainingParts, train

    ids = [
        torch.randint(3, 100, (int(n),), generator=torch.Generator().manual_seed(i)).tolist()
        for i, n in enumerate(torch.randint(4, 12, (32,), generator=torch.Generator().manual_seed(9)))
    ]
    labels = [i % 2 for i in range(32)]
    trainer = OmegaConf.create(
        {
            "epochs": 1,
            "grad_accum_steps": 1,
            "max_grad_norm": None,
            "log_every_steps": 1,
            "eval_every_steps": None,
            "max_nonfinite_steps": 5,
            "early_stopping": {"metric": "f1", "mode": "max", "patience": None},
        }
    )

    def run(adversary_cfg):
        model = tiny_model("deberta").train()
        passes = []
        model.register_forward_hook(lambda module, args, out: passes.append(1) if module.training else None)
        recorded = []

        class Recorder(torch.optim.SGD):
            def step(self, closure=None):
                recorded.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

        optimizer = Recorder(model.parameters(), lr=1.0)
        train_loader = make_loader(ids, labels, 8, shuffle=False, pad_id=0, bucketing=False)
        val_loader = make_loader(ids[:8], labels[:8], 8, shuffle=False, pad_id=0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        adversary = build_adversary(adversary_cfg, model)
        loss_fn = torch.nn.CrossEntropyLoss()
        train(TrainingParts(model, train_loader, val_loader, loss_fn, optimizer, scheduler, adversary), trainer, 4)
        return len(passes), recorded

    clean_passes, clean = run(cfg(name="none"))
    pgd_passes, attacked = run(cfg(name="pgd", epsilon=1.0, step_size=0.3, steps=3))
    assert clean_passes == 4 and pgd_passes == 4 * (1 + 3)  # 4 batches; one clean pass + 3 attack passes each
    for step_clean, step_attacked in zip(clean, attacked):
        word = "deberta.embeddings.word_embeddings.weight"
        assert not torch.allclose(step_clean[word], step_attacked[word])
        assert not torch.allclose(step_clean["classifier.weight"], step_attacked["classifier.weight"])
