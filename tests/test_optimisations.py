"""The loop's speed switches change speed, not results: length buckets still show every example
once per epoch and evaluation returns in input order; dynamic padding vs pad_to_max_length,
eval bucketing, eval_batch_size and SDPA vs eager attention differ only by float rounding;
log_every_steps changes nothing at all. Tiny BERT on a toy set, CPU, seeded."""

import copy
from types import SimpleNamespace

import pytest
import torch
import transformers
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import write_toy_csv
from entry_points import run_entry_point
from lib.batching import LengthBucketSampler, encode, make_loader
from lib.data import load_data
from lib.loop import TrainingParts, predict, train
from lib.losses import build_loss
from lib.models import build_model
from lib.optim import build_optimizer, build_scheduler
from lib.paths import CONF_DIR

CPU = torch.device("cpu")
OVERRIDES = [
    "model=tiny_bert",
    "schedule.lr=1e-3",
    "schedule.warmup_ratio=0.0",
    "trainer.batch_size=16",
    "trainer.epochs=4",
    "trainer.log_every_steps=5",
    "data.val_fraction=0.3",
    "trainer.early_stopping.patience=null",
]


def _compose(tmp, csv, *extra):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.outputs={tmp / 'outputs'}",
                "extra_eval=null",
                "data=csv",
                f"data.train={csv}",
                *OVERRIDES,
                *extra,
            ],
        )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from more threads, and on a busy shared machine two OpenMP threads
    waiting on each other slow these tests down tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Config, tokenized splits and seeded starting weights, shared by every test here."""
    tmp = tmp_path_factory.mktemp("optimisations")
    csv = write_toy_csv(tmp / "toy.csv", n_per_class=150)
    cfg = _compose(tmp, csv)
    splits = load_data(cfg)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model, splits.train["text"].tolist(), cfg.paths.cache)
    tokens = lambda frame: encode(tokenizer, frame["text"].tolist(), cfg.model.max_length)  # noqa: E731
    return SimpleNamespace(
        tmp=tmp,
        csv=csv,
        cfg=cfg,
        splits=splits,
        model=model,
        tokenizer=tokenizer,
        train_ids=tokens(splits.train),
        train_labels=splits.train["label"].tolist(),
        val_ids=tokens(splits.val),
        val_labels=splits.val["label"].tolist(),
    )


def _loader(world, ids, labels, batch_size, *, shuffle, bucketing=True, pad_to=None):
    return make_loader(
        ids,
        labels,
        batch_size,
        shuffle=shuffle,
        pad_id=world.tokenizer.pad_token_id,
        seed=3,
        bucketing=bucketing,
        pad_to=pad_to,
    )


def _no_dropout(model):
    """Dropout masks are drawn per padded position, so a different padding width draws different
    masks: switched off wherever two paddings are compared step by step."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _fit(world, model=None, *, pad_to=None, log_every=5, dropout=False):
    """lib.loop.train for cfg.trainer.epochs on the toy set; returns (LoopResult, trained model)."""
    model = copy.deepcopy(model or world.model)
    if not dropout:
        _no_dropout(model)
    train_loader = _loader(world, world.train_ids, world.train_labels, 16, shuffle=True, pad_to=pad_to)
    val_loader = _loader(world, world.val_ids, world.val_labels, 64, shuffle=False, pad_to=pad_to)
    cfg_trainer = OmegaConf.merge(world.cfg.trainer, {"log_every_steps": log_every})
    total = cfg_trainer.epochs * len(train_loader)
    optimizer = build_optimizer(world.cfg.schedule, model)
    transformers.set_seed(0)
    scheduler = build_scheduler(world.cfg.schedule, optimizer, total)
    parts = TrainingParts(model, train_loader, val_loader, build_loss(world.cfg.loss), optimizer, scheduler)
    result = train(parts, cfg_trainer, total)
    return result, model


def _train_losses(result) -> list[float]:
    return [h["train_loss"] for h in result.history if "train_loss" in h]


@pytest.fixture(scope="module")
def trained(world):
    """A model trained for four epochs, so its logits are spread out rather than all near zero."""
    _, model = _fit(world)
    return model


def _logits(world, model, *, batch_size=64, bucketing=True, pad_to=None):
    return predict(
        model,
        _loader(world, world.val_ids, world.val_labels, batch_size, shuffle=False, bucketing=bucketing, pad_to=pad_to),
        CPU,
        "fp32",
    )


# --------------------------------------------------------------- bucketing


@pytest.mark.parametrize("bucketing", [True, False])
def test_every_example_exactly_once_per_epoch_over_several_epochs(bucketing):
    lengths = torch.randint(2, 60, (1003,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=32, shuffle=True, seed=5, bucketing=bucketing)
    orders = []
    for epoch in range(1, 6):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(1003)), epoch
        assert sorted(len(b) for b in batches) == [1003 % 32] + [32] * (1003 // 32)
        orders.append(flat)
    assert len({tuple(o) for o in orders}) == 5  # a new order every epoch


def test_loader_batches_carry_the_right_example_with_its_index(world):
    loader = _loader(world, world.train_ids, world.train_labels, 16, shuffle=True)
    for epoch in (1, 2, 3):
        loader.batch_sampler.set_epoch(epoch)
        seen = []
        for batch in loader:
            for row, index in enumerate(batch["index"].tolist()):
                ids = world.train_ids[index]
                assert batch["input_ids"][row, : len(ids)].tolist() == ids
                assert int(batch["attention_mask"][row].sum()) == len(ids)
                assert int(batch["labels"][row]) == world.train_labels[index]
            seen += batch["index"].tolist()
        assert sorted(seen) == list(range(len(world.train_ids)))


def test_bucketed_evaluation_returns_logits_in_input_order(world, trained):
    loader = _loader(world, world.val_ids, world.val_labels, 16, shuffle=False)
    visit = [i for batch in loader for i in batch["index"].tolist()]
    assert visit != sorted(visit)  # sorted by length, so really out of input order
    trained.eval()
    with torch.inference_mode():  # one unpadded example at a time, in input order
        expected = torch.cat([trained(input_ids=torch.tensor([ids])).logits for ids in world.val_ids])
    got = predict(trained, loader, CPU, "fp32")
    assert expected.std() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------- evaluation switches


def test_pad_to_max_length_gives_the_same_eval_logits(world, trained):
    dynamic, padded = _logits(world, trained), _logits(world, trained, pad_to=world.cfg.model.max_length)
    torch.testing.assert_close(dynamic, padded, atol=1e-5, rtol=0)
    assert torch.equal(dynamic.argmax(1), padded.argmax(1))


def test_eval_bucketing_on_or_off_gives_the_same_predictions(world, trained):
    bucketed, plain = _logits(world, trained), _logits(world, trained, bucketing=False)
    torch.testing.assert_close(bucketed, plain, atol=1e-5, rtol=0)
    assert torch.equal(bucketed.argmax(1), plain.argmax(1))


def test_eval_batch_size_gives_the_same_predictions(world, trained):
    small, large = _logits(world, trained, batch_size=5), _logits(world, trained, batch_size=128)
    torch.testing.assert_close(small, large, atol=1e-5, rtol=0)
    assert torch.equal(small.argmax(1), large.argmax(1))


def _eager_copy(world, model):
    """The same weights under model.attn_implementation=eager."""
    cfg = _compose(world.tmp, world.csv, "model.attn_implementation=eager")
    eager, _ = build_model(cfg.model, world.splits.train["text"].tolist(), cfg.paths.cache)
    eager.load_state_dict(model.state_dict())
    return eager


def test_sdpa_and_eager_attention_give_the_same_logits(world, trained):
    eager = _eager_copy(world, trained)
    assert (trained.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    sdpa_logits, eager_logits = _logits(world, trained), _logits(world, eager)
    torch.testing.assert_close(sdpa_logits, eager_logits, atol=1e-5, rtol=0)
    assert torch.equal(sdpa_logits.argmax(1), eager_logits.argmax(1))


@pytest.mark.slow
def test_sdpa_and_eager_attention_train_alike(world):
    sdpa, _ = _fit(world)
    eager, _ = _fit(world, _eager_copy(world, world.model))
    assert _train_losses(sdpa) == pytest.approx(_train_losses(eager), abs=1e-5)
    assert sdpa.best_metrics["loss"] == pytest.approx(eager.best_metrics["loss"], abs=1e-5)
    assert sdpa.best_metrics["accuracy"] == eager.best_metrics["accuracy"]


# --------------------------------------------------------------- training switches


@pytest.mark.slow
def test_pad_to_max_length_trains_alike(world):
    dynamic, dynamic_model = _fit(world)
    padded, padded_model = _fit(world, pad_to=world.cfg.model.max_length)
    losses = _train_losses(dynamic)
    assert len(losses) >= 3 and losses[-1] < losses[0]  # it learned something
    assert losses == pytest.approx(_train_losses(padded), abs=1e-5)
    assert dynamic.best_metrics["accuracy"] == padded.best_metrics["accuracy"] > 0.9
    for key in ("loss", "f1", "roc_auc"):
        assert dynamic.best_metrics[key] == pytest.approx(padded.best_metrics[key], abs=1e-5), key
    torch.testing.assert_close(_logits(world, dynamic_model), _logits(world, padded_model), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_log_every_steps_changes_nothing_in_training(world):
    # Dropout on: logging must not touch the random stream or anything else.
    often, often_model = _fit(world, log_every=1, dropout=True)
    rarely, rarely_model = _fit(world, log_every=7, dropout=True)
    assert len(_train_losses(often)) > len(_train_losses(rarely)) >= 2
    assert often.best_metrics == rarely.best_metrics
    for (name, a), (_, b) in zip(often_model.state_dict().items(), rarely_model.state_dict().items()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------- the benchmark compares like with like


def test_benchmark_trainer_gets_the_recipe_of_our_loop(world):
    pytest.importorskip("accelerate")  # the Trainer needs it: pip install -e '.[bench]'
    from benchmarks.variants import Setup, trainer_arguments

    cfg = _compose(world.tmp, world.csv, "schedule.warmup_ratio=0.1")
    setup = Setup(
        cfg,
        CPU,
        "fp32",
        world.model,
        world.tokenizer,
        world.train_ids,
        world.train_labels,
        world.val_ids,
        world.val_labels,
        world.splits.val["text"].tolist(),
        build_loss(cfg.loss),
        48,
    )
    args = trainer_arguments(setup, seed=7, steps=40, output_dir=str(world.tmp / "hf"), precision="fp32")
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (16, cfg.trainer.eval_batch_size)
    assert (args.learning_rate, args.weight_decay, args.max_grad_norm) == (1e-3, 0.01, 1.0)
    assert (args.max_steps, args.warmup_steps, args.lr_scheduler_type.value) == (40, 4, "linear")
    assert (args.seed, args.bf16, args.eval_strategy.value, args.train_sampling_strategy) == (7, False, "no", "random")
    grouped = trainer_arguments(setup, 7, 40, str(world.tmp / "hf"), "fp32", sampling="group_by_length")
    assert grouped.train_sampling_strategy == "group_by_length"  # hf_trainer_grouped: the Trainer at its best


def test_our_loop_is_judged_against_the_fastest_trainer_row():
    from benchmarks.report import check_targets

    def row(train, infer=100.0):
        return {"train_samples_per_s": {"median": train}, "infer_titles_per_s": {"median": infer},
                "accuracy": {"median": 0.75}}  # fmt: skip

    summary = {"ours": row(30.0, 300.0), "hf_trainer": row(20.0), "hf_trainer_grouped": row(27.0),
               "ours_bf16": row(45.0), "hf_trainer_bf16": row(40.0)}  # fmt: skip
    labels = {k: k for k in summary} | {"ours_alt": "ours_bf16"}
    checks = {c["target"]: c for c in check_targets(summary, labels, titles=800)}
    fp32 = checks["training vs the best fp32 Trainer row (hf_trainer_grouped) >= 1.2x"]
    assert fp32["measured"] == round(30 / 27, 2) and not fp32["met"]  # 1.5x the plain Trainer does not count
    bf16 = checks["training vs the best bf16 Trainer row (hf_trainer_bf16) >= 1.2x"]
    assert bf16["measured"] == round(45 / 40, 2) and not bf16["met"]
    assert checks["inference vs Trainer.predict >= 1.5x"]["met"]  # 300 / 100


def test_trainer_sample_count_skips_the_partial_batch_only_at_epoch_ends():
    from benchmarks.variants import _samples_in

    assert [_samples_in(b, rows=100, batch_size=32) for b in (1, 3, 4, 5, 8, 9)] == [32, 96, 100, 132, 200, 232]


def test_benchmark_variants_do_the_same_work(world):
    pytest.importorskip("accelerate")
    from benchmarks.variants import Setup, run_hf_trainer, run_ours

    rows = len(world.train_ids) // 16 * 16  # full batches only, so every variant sees 3 * 16 examples
    setup = Setup(
        world.cfg,
        CPU,
        "fp32",
        world.model,
        world.tokenizer,
        world.train_ids[:rows],
        world.train_labels[:rows],
        world.val_ids,
        world.val_labels,
        world.splits.val["text"].tolist(),
        build_loss(world.cfg.loss),
        48,
    )
    ours, padded = run_ours(setup, 0, 3, pyfunc=True), run_ours(setup, 0, 3, bucketing=False, pad_to=48)
    trainer, grouped = run_hf_trainer(setup, 0, 3), run_hf_trainer(setup, 0, 3, sampling="group_by_length")
    for outcome in (ours, padded, trainer, grouped):
        assert outcome.train_samples == 3 * 16 and outcome.infer_titles == len(world.val_ids)
        assert outcome.train_seconds > 0 and outcome.infer_seconds > 0 and 0 <= outcome.accuracy <= 1
    assert padded.padded_tokens == 48 > trainer.padded_tokens >= ours.padded_tokens >= ours.real_tokens
    assert grouped.padded_tokens < trainer.padded_tokens  # the Trainer's length grouping pads less
    assert torch.get_num_threads() == 1  # the Trainer left the thread count alone
    # the pyfunc row: the same titles through mlflow.pyfunc.load_model(...).predict, the same answers
    assert ours.pyfunc_seconds > 0 and ours.pyfunc_accuracy == pytest.approx(ours.accuracy, abs=1 / len(world.val_ids))
    assert "pyfunc_titles_per_s" in ours.as_dict() and padded.pyfunc_seconds is None


def test_the_cpu_projection_is_refused_on_a_gpu_in_one_line():
    from benchmarks.projection import refuse_off_cpu
    from lib.errors import ConfigError

    refuse_off_cpu(torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^bench.projection.enabled=true: .* refused on cuda; .*bench.reps > 0"):
        refuse_off_cpu(torch.device("cuda"))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a CUDA GPU")
def test_the_benchmark_refuses_a_bad_setting_in_one_line():
    done = run_entry_point("benchmarks/throughput.py", "trainer.device=cuda", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: trainer.device=cuda: no CUDA GPU is visible; use trainer.device=cpu or auto"
    ]
